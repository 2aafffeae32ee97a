"""Exceptions raised by gradflow.

Every error a user can cause derives from :class:`GradflowError`; the CLI prints its message as
one line and exits with the error's ``exit_code``: 2 for bad usage or input (the default), 3 for a
:class:`NumericalError` (a run that diverged). Anything else that escapes is a bug in gradflow or
a plugin (the CLI says so in one line and exits with 1; ``--debug`` shows the traceback).
"""

from __future__ import annotations

from typing import Any


class GradflowError(Exception):
    """Base class of the errors a user can cause (bad name, option, file, backend...)."""


class BackendUnavailableError(GradflowError):
    """The requested array backend cannot run here (missing package or no usable device)."""


class PluginError(GradflowError):
    """An unknown plugin name, bad plugin options, or a plugin that failed to load."""


class CapabilityError(GradflowError):
    """An estimator needs a model primitive that the model does not provide."""


class ShapeError(GradflowError):
    """Arrays handed to a gradflow function have the wrong shape."""


class NumericalError(GradflowError):
    """A non-finite number (NaN or ±inf) in the loss, a gradient or the parameters: the
    computation cannot go on. The CLI exits with code 3 (not 2: the input was valid, the
    numbers were not)."""

    exit_code = 3


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
