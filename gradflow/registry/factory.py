"""Creating models, estimators and tasks by registered name."""

from __future__ import annotations

from typing import Any

from gradflow.contracts.backend import Backend, resolve_backend
from gradflow.contracts.errors import CapabilityError, PluginError
from gradflow.contracts.estimator import Estimator
from gradflow.contracts.model import Model
from gradflow.contracts.task import Task
from gradflow.registry.discovery import get_registry, validate_options
from gradflow.registry.guard import blame


def create_model(name: str, backend: Backend | str | None = None, dtype: str | None = None,
                 **options: Any) -> Model:
    """A model plugin by name, e.g. ``create_model("rnn", n_in=3, n_hidden=16, n_out=2)``.

    ``backend`` is a :class:`~gradflow.Backend` or a backend name (default NumPy, float64).
    Unknown names and invalid options raise :class:`~gradflow.PluginError`, and so does
    a plugin that raises while being created (the message names it and its distribution).
    """
    info = get_registry().get("model", name)
    opts = validate_options(info, options)
    be = resolve_backend(backend, dtype)
    with blame(info, "while being created"):
        return info.cls(opts, be)


def check_capabilities(estimator_cls: type[Estimator], model: Model) -> None:
    """Raise :class:`CapabilityError` if ``model`` lacks a primitive the estimator needs."""
    missing = sorted(set(estimator_cls.requires) - set(model.capabilities))
    if missing:
        raise CapabilityError(
            f"estimator {estimator_cls.name!r} needs {', '.join(missing)}, which model "
            f"{model.name!r} does not provide (it provides {', '.join(sorted(model.capabilities))})"
        )


def create_estimator(name: str, model: Model, **options: Any) -> Estimator:
    """An estimator plugin by name for ``model``, e.g. ``create_estimator("tbptt", model,
    truncation=10)``. Checks that the model has every primitive the estimator needs."""
    if not isinstance(model, Model):
        raise PluginError(f"create_estimator needs a gradflow Model, got {type(model).__name__}")
    info = get_registry().get("estimator", name)
    opts = validate_options(info, options)
    check_capabilities(info.cls, model)
    with blame(info, "while being created"):
        return info.cls(model, opts)


def create_task(name: str, backend: Backend | str | None = None, batch: int = 1, seed: int = 0,
                dtype: str | None = None, **options: Any) -> Task:
    """A task plugin by name, producing ``batch`` streams from generator seed ``seed``."""
    info = get_registry().get("task", name)
    opts = validate_options(info, options)
    if batch < 1:
        raise PluginError(f"batch must be at least 1, got {batch}")
    be = resolve_backend(backend, dtype)
    with blame(info, "while being created"):
        return info.cls(opts, be, batch=batch, seed=seed)
