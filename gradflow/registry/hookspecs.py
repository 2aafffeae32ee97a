"""pluggy hook specifications of gradflow (project name and entry-point group ``gradflow``).

A plugin is a module (or object) with functions marked ``@gradflow.hookimpl``. Each hook receives a
``register`` callback and calls it once per class it contributes::

    import gradflow

    @gradflow.hookimpl
    def gradflow_register_estimators(register):
        register(MyEstimator)

and is exposed in the plugin's ``pyproject.toml``::

    [project.entry-points.gradflow]
    my_plugin = "my_package.plugin"
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy

PROJECT = "gradflow"
ENTRY_POINT_GROUP = "gradflow"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

Register = Callable[[Any], None]


@hookspec
def gradflow_register_estimators(register: Register) -> None:
    """Register estimator classes (subclasses of :class:`gradflow.Estimator`)."""


@hookspec
def gradflow_register_models(register: Register) -> None:
    """Register model classes (subclasses of :class:`gradflow.Model`)."""


@hookspec
def gradflow_register_tasks(register: Register) -> None:
    """Register task classes (subclasses of :class:`gradflow.Task`)."""


@hookspec
def gradflow_register_loggers(register: Register) -> None:
    """Register metrics logger classes (subclasses of :class:`gradflow.Logger`)."""
