"""Entry point ``builtin`` of group ``gradflow``: registers the built-in plugins.

It goes through the same hooks as any third-party plugin (see docs/plugins.md).
"""

from __future__ import annotations

from typing import Any

from gradflow_plugins.estimators.bptt import BPTT
from gradflow_plugins.estimators.eprop import EProp
from gradflow_plugins.estimators.kalman_nobacktrack import KalmanNoBackTrack
from gradflow_plugins.estimators.kf_rtrl import KFRTRL
from gradflow_plugins.estimators.nobacktrack import NoBackTrack
from gradflow_plugins.estimators.ok import OK
from gradflow_plugins.estimators.r_kf_rtrl import ReverseKFRTRL
from gradflow_plugins.estimators.readout_only import ReadoutOnly
from gradflow_plugins.estimators.rflo import RFLO
from gradflow_plugins.estimators.rtrl import RTRL
from gradflow_plugins.estimators.snap import SnAp
from gradflow_plugins.estimators.tbptt import TBPTT
from gradflow_plugins.estimators.uoro import UORO
from gradflow_plugins.loggers.mlflow import MLflowLogger
from gradflow_plugins.loggers.tensorboard import TensorBoardLogger
from gradflow_plugins.models.gru import GRU
from gradflow_plugins.models.influence import Influence
from gradflow_plugins.models.lstm import LSTM
from gradflow_plugins.models.rnn import RNN
from gradflow_plugins.tasks.add import AddTask
from gradflow_plugins.tasks.anbn import AnbnTask
from gradflow_plugins.tasks.copy import CopyTask
from gradflow_plugins.tasks.distant_brackets import DistantBracketsTask
from gradflow_plugins.tasks.influence import InfluenceTask
from gradflow_plugins.tasks.text import TextTask

import gradflow

ESTIMATORS: tuple[type[gradflow.Estimator], ...] = (
    RTRL, TBPTT, BPTT, ReadoutOnly, UORO, NoBackTrack, KalmanNoBackTrack, KFRTRL, ReverseKFRTRL,
    RFLO, EProp, OK, SnAp,
)
MODELS: tuple[type[gradflow.Model], ...] = (RNN, GRU, LSTM, Influence)
LOGGERS: tuple[type[gradflow.Logger], ...] = (TensorBoardLogger, MLflowLogger)
TASKS: tuple[type[gradflow.Task], ...] = (
    AddTask, TextTask, CopyTask, AnbnTask, DistantBracketsTask, InfluenceTask,
)


@gradflow.hookimpl
def gradflow_register_estimators(register: Any) -> None:
    for cls in ESTIMATORS:
        register(cls)


@gradflow.hookimpl
def gradflow_register_models(register: Any) -> None:
    for cls in MODELS:
        register(cls)


@gradflow.hookimpl
def gradflow_register_tasks(register: Any) -> None:
    for cls in TASKS:
        register(cls)


@gradflow.hookimpl
def gradflow_register_loggers(register: Any) -> None:
    for cls in LOGGERS:
        register(cls)
