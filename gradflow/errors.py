"""Exceptions raised by gradflow.

Every error a user can cause derives from :class:`GradflowError`; the CLI prints its message as
one line and exits with code 2. Anything else that escapes is a bug in gradflow or a plugin.
"""

from __future__ import annotations


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
