"""gradflow: online training of recurrent models with pluggable gradient estimators.

The package is layered (docs/architecture.md); each layer imports only the layers above it in
this list:

* :mod:`gradflow.contracts` — the contracts a plugin implements and the pieces they are built
  from: backends, the counter-based generator, the parameter layout, the model, estimator and
  task bases, losses, cache blocking, every exception;
* :mod:`gradflow.registry` — the hook specifications, plugin discovery and construction by name;
* :mod:`gradflow.runfiles` — run files: the configuration, the run directory, checkpoints, resuming;
* :mod:`gradflow.training` — the one online step, the trainer, optimizers, schedules, clipping;
* :mod:`gradflow.verification` — frozen trajectories, exact references, the conformance suite
  (public as :mod:`gradflow.testing`) and the statistics of ``gradflow check``;
* :mod:`gradflow.tools` — ``gradflow bench``, sweeps, plots and the scaling fits.

What plugins and users import is re-exported here: ``import gradflow`` is the public API.
"""

from __future__ import annotations

from gradflow.contracts.backend import BACKEND_NAMES, DTYPE_NAMES, Backend, get_backend
from gradflow.contracts.blocking import TEMPORARY_BLOCK, block_size, blocks
from gradflow.contracts.direction import FactoredDirection
from gradflow.contracts.errors import (
    BackendUnavailableError,
    BenchError,
    CapabilityError,
    CheckpointError,
    ConfigError,
    GradflowError,
    GradflowWarning,
    NumericalError,
    PlotError,
    PluginError,
    PluginFailed,
    RunDirError,
    ScalingError,
    ShapeError,
    SweepError,
    SweepSetupError,
    TrainingDiverged,
    TrainingError,
    TrainingInterrupted,
)
from gradflow.contracts.estimator import KINDS, Estimator, EstimatorOptions, StepRecord
from gradflow.contracts.inplace import (
    add_block_diagonal,
    add_outer,
    add_row_outer,
    add_scaled,
    matmul_into,
)
from gradflow.contracts.layout import ParamLayout, ParamSpec
from gradflow.contracts.logger import Logger, LoggerOptions, RunRecord
from gradflow.contracts.losses import LN2, get_loss
from gradflow.contracts.model import (
    ALL_CAPABILITIES,
    FORWARD,
    INTERNAL_JACOBIAN_BLOCKS,
    JVP_STATE,
    LEAK,
    OPTIONAL_PRIMITIVES,
    PARAM_JACOBIAN,
    PARAM_JACOBIAN_ACCUMULATE,
    PARAM_JACOBIAN_UNITS_ACCUMULATE,
    PARAM_KRON_FACTORS,
    PARAM_ROW_SQNORMS,
    READOUT,
    STATE_JACOBIAN,
    STATE_JACOBIAN_BLOCKS,
    VJP,
    VJP_PARAM_SQNORMS,
    Model,
    ModelOptions,
)
from gradflow.contracts.random import CounterRNG
from gradflow.contracts.readout import AffineReadout, AffineReadoutModel, sigmoid
from gradflow.contracts.state import PerStream, Scalar, Shared, State, Window
from gradflow.contracts.task import Batch, Chunk, ChunkedStream, Task, TaskOptions
from gradflow.contracts.units import UnitBlock, Units
from gradflow.registry.discovery import (
    get_registry,
    register_plugin,
    reload_registry,
    unregister_plugin,
)
from gradflow.registry.factory import (
    check_capabilities,
    create_estimator,
    create_model,
    create_task,
)
from gradflow.registry.hookspecs import hookimpl
from gradflow.runfiles.config import TrainConfig, build_config
from gradflow.runfiles.run import Run, load_run
from gradflow.training.api import resume, resume_replicas, train, train_replicas
from gradflow.training.step import StepOutcome, online_step
from gradflow.training.trainer import Trainer
from gradflow.verification.reference import bptt_gradients
from gradflow.verification.statistics import CheckResult, CheckRow, estimator_statistics
from gradflow.verification.trajectory import frozen_gradients
from gradflow.version import __version__

__all__ = [
    "ALL_CAPABILITIES",
    "BACKEND_NAMES",
    "DTYPE_NAMES",
    "FORWARD",
    "INTERNAL_JACOBIAN_BLOCKS",
    "JVP_STATE",
    "KINDS",
    "LEAK",
    "LN2",
    "OPTIONAL_PRIMITIVES",
    "PARAM_JACOBIAN",
    "PARAM_JACOBIAN_ACCUMULATE",
    "PARAM_JACOBIAN_UNITS_ACCUMULATE",
    "PARAM_KRON_FACTORS",
    "PARAM_ROW_SQNORMS",
    "READOUT",
    "STATE_JACOBIAN",
    "STATE_JACOBIAN_BLOCKS",
    "TEMPORARY_BLOCK",
    "VJP",
    "VJP_PARAM_SQNORMS",
    "AffineReadout",
    "AffineReadoutModel",
    "Backend",
    "BackendUnavailableError",
    "Batch",
    "BenchError",
    "CapabilityError",
    "CheckResult",
    "CheckRow",
    "CheckpointError",
    "Chunk",
    "ChunkedStream",
    "ConfigError",
    "CounterRNG",
    "Estimator",
    "EstimatorOptions",
    "FactoredDirection",
    "GradflowError",
    "GradflowWarning",
    "Logger",
    "LoggerOptions",
    "Model",
    "ModelOptions",
    "NumericalError",
    "ParamLayout",
    "ParamSpec",
    "PerStream",
    "PlotError",
    "PluginError",
    "PluginFailed",
    "Run",
    "RunDirError",
    "RunRecord",
    "Scalar",
    "ScalingError",
    "ShapeError",
    "Shared",
    "State",
    "StepOutcome",
    "StepRecord",
    "SweepError",
    "SweepSetupError",
    "Task",
    "TaskOptions",
    "TrainConfig",
    "Trainer",
    "TrainingDiverged",
    "TrainingError",
    "TrainingInterrupted",
    "UnitBlock",
    "Units",
    "Window",
    "__version__",
    "add_block_diagonal",
    "add_outer",
    "add_row_outer",
    "add_scaled",
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
    "matmul_into",
    "online_step",
    "register_plugin",
    "reload_registry",
    "resume",
    "resume_replicas",
    "sigmoid",
    "train",
    "train_replicas",
    "unregister_plugin",
]
