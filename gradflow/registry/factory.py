"""Creating models, estimators and tasks by registered name.

One construction path serves the Python API (:func:`create_model`, :func:`create_estimator`,
:func:`create_task`) and the trainer (:func:`build_model`, :func:`build_estimator`,
:func:`build_task`, :func:`build_logger`, which also return the registry entry and the validated
options): the name is looked up, the options are validated by the plugin's own model (one-line
:class:`~gradflow.PluginError`), an estimator's required primitives are checked against the model
(:class:`~gradflow.CapabilityError`), and an exception raised inside the plugin while it is being
created becomes a :class:`~gradflow.PluginFailed` naming it and its distribution.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from gradflow.contracts.backend import Backend, resolve_backend
from gradflow.contracts.errors import CapabilityError, PluginError, PluginFailed
from gradflow.contracts.estimator import Estimator
from gradflow.contracts.logger import Logger
from gradflow.contracts.model import Model
from gradflow.contracts.task import Task
from gradflow.registry.discovery import PluginInfo, get_registry, validate_options
from gradflow.registry.guard import blame

T = TypeVar("T")


@dataclass(frozen=True)
class Built(Generic[T]):
    """A plugin instance with its registry entry and its validated options."""

    instance: T
    info: PluginInfo
    options: BaseModel


def _entry(kind: str, name: str, options: Mapping[str, Any]) -> tuple[PluginInfo, BaseModel]:
    info = get_registry().get(kind, name)
    return info, validate_options(info, dict(options))


def check_layout(model: Model, info: PluginInfo) -> None:
    """Raise :class:`~gradflow.PluginFailed` unless ``model`` has a usable layout and n_state."""
    layout, n_state = getattr(model, "layout", None), getattr(model, "n_state", None)
    size, n_rec = getattr(layout, "size", None), getattr(layout, "n_rec", None)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (size, n_rec, n_state)) \
            or not 0 <= n_rec <= size or size < 1 or n_state < 1:
        raise PluginFailed(f"{info.origin} has no usable layout and n_state (P = {size!r}, "
                           f"P_rec = {n_rec!r}, n_state = {n_state!r})")


def check_capabilities(estimator_cls: type[Estimator], model: Model) -> None:
    """Raise :class:`CapabilityError` if ``model`` lacks a primitive the estimator needs."""
    missing = sorted(set(estimator_cls.requires) - set(model.capabilities))
    if missing:
        raise CapabilityError(
            f"estimator {estimator_cls.name!r} needs {', '.join(missing)}, which model "
            f"{model.name!r} does not provide (it provides {', '.join(sorted(model.capabilities))})"
        )


def build_model(name: str, options: Mapping[str, Any], backend: Backend) -> Built[Model]:
    """The model plugin ``name`` with ``options`` on ``backend``, checked (see the module)."""
    info, opts = _entry("model", name, options)
    with blame(info, "while being created"):
        model = info.cls(opts, backend)
        check_layout(model, info)
    return Built(model, info, opts)


def build_estimator(name: str, options: Mapping[str, Any], model: Model) -> Built[Estimator]:
    """The estimator plugin ``name`` with ``options`` for ``model`` (see the module)."""
    if not isinstance(model, Model):
        raise PluginError(f"an estimator needs a gradflow Model, got {type(model).__name__}")
    info, opts = _entry("estimator", name, options)
    check_capabilities(info.cls, model)
    with blame(info, "while being created"):
        return Built(info.cls(model, opts), info, opts)


def build_task(name: str, options: Mapping[str, Any], backend: Backend, batch: int,
               seed: int) -> Built[Task]:
    """The task plugin ``name`` with ``options``: ``batch`` streams from seed ``seed``."""
    info, opts = _entry("task", name, options)
    if batch < 1:
        raise PluginError(f"batch must be at least 1, got {batch}")
    with blame(info, "while being created"):
        return Built(info.cls(opts, backend, batch=batch, seed=seed), info, opts)


def build_logger(name: str, options: Mapping[str, Any]) -> Built[Logger]:
    """The logger plugin ``name`` with ``options`` (a missing dependency is said when it is
    created, before any step)."""
    info, opts = _entry("logger", name, options)
    with blame(info, "while being created"):
        return Built(info.cls(opts), info, opts)


def create_model(name: str, backend: Backend | str | None = None, dtype: str | None = None,
                 **options: Any) -> Model:
    """A model plugin by name, e.g. ``create_model("rnn", n_in=3, n_hidden=16, n_out=2)``.

    ``backend`` is a :class:`~gradflow.Backend` or a backend name (default NumPy, float64).
    Unknown names and invalid options raise :class:`~gradflow.PluginError`, and so does a plugin
    that raises while being created (the message names it and its distribution).
    """
    return build_model(name, options, resolve_backend(backend, dtype)).instance


def create_estimator(name: str, model: Model, **options: Any) -> Estimator:
    """An estimator plugin by name for ``model``, e.g. ``create_estimator("tbptt", model,
    truncation=10)``. Checks that the model has every primitive the estimator needs."""
    return build_estimator(name, options, model).instance


def create_task(name: str, backend: Backend | str | None = None, batch: int = 1, seed: int = 0,
                dtype: str | None = None, **options: Any) -> Task:
    """A task plugin by name, producing ``batch`` streams from generator seed ``seed``."""
    return build_task(name, options, resolve_backend(backend, dtype), batch, seed).instance
