"""gradflow: online training of recurrent models with pluggable gradient estimators.

The public API (what built-in and third-party plugins use):

* backends: :func:`get_backend`, :class:`Backend`, :class:`CounterRNG`;
* parameters: :class:`ParamLayout`;
* contracts: :class:`Model`, :class:`Estimator`, :class:`Task` with their ``Options`` bases and
  :class:`StepRecord`, :class:`Batch`; capability names (``JVP_STATE``, ...);
* building blocks: :class:`AffineReadout`, losses (:func:`get_loss`), cache-blocked passes over
  P numbers (:func:`block_size`, :func:`blocks`);
* plugins: :data:`hookimpl`, :func:`get_registry`, :func:`register_plugin`;
* factories: :func:`create_model`, :func:`create_estimator`, :func:`create_task`;
* exact references: :func:`frozen_gradients`, :func:`bptt_gradients`;
* training: :class:`TrainConfig`, :func:`build_config`, :class:`Trainer`, :func:`train` and
  :func:`resume` (returning a :class:`Run`), :func:`load_run`;
* estimator checks: :func:`estimator_statistics` (bias, variance, cosine against a reference;
  ``gradflow check``);
* the conformance suite for plugin authors: :mod:`gradflow.testing` (``check_model``,
  ``check_estimator``: pass or fail, imported on its own).
"""

from __future__ import annotations

from gradflow.backend import BACKEND_NAMES, DTYPE_NAMES, Backend, get_backend
from gradflow.blocking import block_size, blocks
from gradflow.check import CheckResult, CheckRow, estimator_statistics
from gradflow.config import TrainConfig, build_config
from gradflow.errors import (
    BackendUnavailableError,
    CapabilityError,
    GradflowError,
    PluginError,
    ShapeError,
)
from gradflow.estimator import Estimator, EstimatorOptions, StepRecord
from gradflow.factory import check_capabilities, create_estimator, create_model, create_task
from gradflow.frozen import frozen_gradients
from gradflow.hookspecs import hookimpl
from gradflow.layout import ParamLayout, ParamSpec
from gradflow.losses import LN2, get_loss
from gradflow.model import (
    ALL_CAPABILITIES,
    FORWARD,
    JVP_STATE,
    PARAM_JACOBIAN,
    PARAM_ROW_SQNORMS,
    READOUT,
    VJP,
    Model,
    ModelOptions,
)
from gradflow.random import CounterRNG
from gradflow.readout import AffineReadout, AffineReadoutModel, sigmoid
from gradflow.reference import bptt_gradients
from gradflow.registry import get_registry, register_plugin, reload_registry, unregister_plugin
from gradflow.run import Run, load_run, resume, train
from gradflow.task import Batch, Task, TaskOptions
from gradflow.trainer import Trainer

__version__ = "0.1.0"

__all__ = [
    "ALL_CAPABILITIES",
    "BACKEND_NAMES",
    "DTYPE_NAMES",
    "FORWARD",
    "JVP_STATE",
    "LN2",
    "PARAM_JACOBIAN",
    "PARAM_ROW_SQNORMS",
    "READOUT",
    "VJP",
    "AffineReadout",
    "AffineReadoutModel",
    "Backend",
    "BackendUnavailableError",
    "Batch",
    "CapabilityError",
    "CheckResult",
    "CheckRow",
    "CounterRNG",
    "Estimator",
    "EstimatorOptions",
    "GradflowError",
    "Model",
    "ModelOptions",
    "ParamLayout",
    "ParamSpec",
    "PluginError",
    "Run",
    "ShapeError",
    "StepRecord",
    "Task",
    "TaskOptions",
    "TrainConfig",
    "Trainer",
    "__version__",
    "block_size",
    "blocks",
    "bptt_gradients",
    "build_config",
    "check_capabilities",
    "create_estimator",
    "create_model",
    "create_task",
    "estimator_statistics",
    "frozen_gradients",
    "get_backend",
    "get_loss",
    "get_registry",
    "hookimpl",
    "load_run",
    "register_plugin",
    "reload_registry",
    "resume",
    "sigmoid",
    "train",
    "unregister_plugin",
]
