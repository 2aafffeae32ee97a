"""Every exception and warning gradflow raises, in one place.

Every error a user can cause derives from :class:`GradflowError`; the CLI prints its message as
one line and exits with the error's ``exit_code``: 2 for bad usage or input (the default), 3 for a
:class:`NumericalError` (a run that diverged), 1 for a :class:`SweepError` (some runs of a sweep
failed), 128 + N for a run stopped by signal N (:class:`TrainingInterrupted`). Anything else that
escapes is a bug in gradflow or a plugin (the CLI says so in one line and exits with 1;
``--debug`` shows the traceback).

The hierarchy, by the layer that raises them::

    GradflowError
    ├── BackendUnavailableError     contracts: the array backend cannot run here
    ├── ShapeError                  contracts: arrays of the wrong shape
    ├── NumericalError (exit 3)     a non-finite number
    ├── PluginError                 registry: unknown name, bad options, failed import
    │   └── PluginFailed            a plugin raised, or broke its contract
    ├── CapabilityError             an estimator needs a primitive the model lacks
    ├── ConfigError                 run files: a config file, override or value
    ├── RunDirError                 run files: a run directory that cannot be written or read
    ├── CheckpointError             run files: a missing, foreign or damaged checkpoint
    ├── TrainingError               training: the run cannot go on
    │   ├── TrainingDiverged        (also a NumericalError: exit 3)
    │   └── TrainingInterrupted     SIGINT/SIGTERM, after a checkpoint (exit 128 + N)
    ├── BenchError, ScalingError    tools: gradflow bench and its fits
    ├── SweepSetupError             tools: a sweep that cannot start
    ├── SweepError (exit 1)         tools: some runs of a sweep failed
    └── PlotError                   tools: runs or a metric that cannot be plotted
    GradflowWarning (a UserWarning) something to know that does not stop the work
"""

from __future__ import annotations

from typing import Any


class GradflowError(Exception):
    """Base class of the errors a user can cause (bad name, option, file, backend...)."""


# -- contracts -----------------------------------------------------------------------------------
class BackendUnavailableError(GradflowError):
    """The requested array backend cannot run here (missing package or no usable device)."""


class ShapeError(GradflowError):
    """Arrays handed to a gradflow function have the wrong shape."""


class NumericalError(GradflowError):
    """A non-finite number (NaN or ±inf) in the loss, a gradient or the parameters: the
    computation cannot go on. The CLI exits with code 3 (not 2: the input was valid, the
    numbers were not)."""

    exit_code = 3


# -- plugins -------------------------------------------------------------------------------------
class PluginError(GradflowError):
    """An unknown plugin name, bad plugin options, or a plugin that failed to load."""


class CapabilityError(GradflowError):
    """An estimator needs a model primitive that the model does not provide."""


class PluginFailed(PluginError):
    """A plugin raised, or broke its contract (wrong shapes or dtypes); the message names it."""


# -- run files -----------------------------------------------------------------------------------
class ConfigError(GradflowError):
    """A configuration file, override or value that cannot be used."""


class RunDirError(GradflowError):
    """The run directory cannot be created, would overwrite an existing run, or is not one."""


class CheckpointError(GradflowError):
    """A checkpoint that is missing, of another format or version, or damaged."""


# -- training ------------------------------------------------------------------------------------
class TrainingError(GradflowError):
    """The run cannot go on (see the subclasses)."""


class TrainingDiverged(TrainingError, NumericalError):
    """A non-finite loss, gradient, parameter or state: the run stops (the CLI exits with 3),
    the last good checkpoint stays. The message names the step and the estimator."""


class TrainingInterrupted(TrainingError):
    """SIGINT or SIGTERM stopped the run after a step; a checkpoint was written (see the
    message). ``exit_code`` is 128 + the signal number, as a shell reports it."""

    def __init__(self, message: str, signum: int | None = None) -> None:
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + signum if signum else 1


# -- tools ---------------------------------------------------------------------------------------
class BenchError(GradflowError):
    """A benchmark that cannot be run as asked (sizes, repeat, estimator...)."""


class ScalingError(GradflowError):
    """The points cannot be fitted (too few sizes, non-positive values)."""


class SweepSetupError(GradflowError):
    """The sweep cannot start (no Dask, an unreachable scheduler, an unusable directory)."""


class SweepError(GradflowError):
    """Some runs of a sweep failed (the others completed); ``exit_code`` 1."""

    exit_code = 1


class PlotError(GradflowError):
    """Runs or a metric that cannot be plotted, an unknown output format, or no matplotlib."""


# -- warnings ------------------------------------------------------------------------------------
class GradflowWarning(UserWarning):
    """Something the user should know that does not stop the work (a damaged checkpoint that
    was skipped, a stale lock that was taken over); the CLI prints it as one ``warning:`` line."""


def validation_problems(exc: Any, root: str, unknown: str) -> str:
    """A pydantic ``ValidationError`` as one line: ``loc: message; loc: message``.

    ``root`` names the location of an error on the whole object, ``unknown`` replaces pydantic's
    message for a key that ``extra="forbid"`` rejects; the "Value error, " prefix of a
    validator's message is dropped.
    """
    problems = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or root
        msg = unknown if err["type"] == "extra_forbidden" else err["msg"]
        problems.append(f"{loc}: {msg.removeprefix('Value error, ')}")
    return "; ".join(problems)
