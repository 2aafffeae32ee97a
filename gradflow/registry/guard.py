"""Holding plugins to their contracts while a run uses them.

A model, estimator or task plugin is code from elsewhere: when it raises, or hands back arrays of
the wrong shape, the message must name it — its registered name, the plugin (entry point) that
registered it and that plugin's distribution — not end in a traceback through gradflow's loop.

* :func:`blame` wraps a call into one plugin (creating it, for example): an exception that is not
  a :class:`~gradflow.GradflowError` becomes a :class:`PluginFailed` naming the plugin.
* :func:`culprit` finds, in the traceback of an exception raised somewhere in a training step,
  the innermost frame that runs a method of one of the run's plugins.
* :func:`check_direction` verifies the shape of an estimator's direction for callers outside
  the trainer (whose first steps are checked whole: :mod:`gradflow.training.validation`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from gradflow.contracts.errors import GradflowError, PluginFailed
from gradflow.registry.discovery import PluginInfo, exception_line

Array = Any


@contextmanager
def blame(info: PluginInfo, what: str) -> Iterator[None]:
    """Turn an unexpected exception inside the block into a :class:`PluginFailed` naming
    ``info`` (``what``: e.g. "while being created")."""
    try:
        yield
    except (GradflowError, MemoryError):  # too big a configuration is not the plugin's fault
        raise
    except Exception as exc:
        raise PluginFailed(f"{info.origin} failed {what}: {exception_line(exc)}") from exc


def culprit(exc: BaseException, plugins: Iterable[tuple[PluginInfo, type]]) -> PluginInfo | None:
    """The plugin whose method is the innermost frame of ``exc``'s traceback that runs plugin
    code (``plugins``: (info, class) pairs; a frame runs a plugin's method when its ``self`` is
    an instance of that class), or ``None`` when no plugin code is on the traceback."""
    pairs = list(plugins)
    found = None
    tb = exc.__traceback__
    while tb is not None:
        owner = tb.tb_frame.f_locals.get("self")
        if owner is not None:
            for info, cls in pairs:
                if isinstance(owner, cls):
                    found = info
                    break
        tb = tb.tb_next
    return found


def origin_of(obj: Any, kind: str) -> str:
    """How to name a plugin instance in a message: its registry entry's origin when it is the
    registered class, else ``kind 'name'``."""
    from gradflow.registry.discovery import get_registry

    name = getattr(obj, "name", type(obj).__name__)
    info = get_registry().entries.get(kind, {}).get(name)
    return info.origin if info is not None and isinstance(obj, info.cls) else f"{kind} {name!r}"


def check_direction(estimator: Any, direction: Array, size: int) -> None:
    """Raise :class:`PluginFailed` naming ``estimator`` unless ``direction`` has shape
    (``size``,) (for callers outside the trainer: ``frozen_gradients``, ``gradflow check``)."""
    got = shape_of(direction)
    if got != (size,):
        shown = "not an array" if got is None else f"shape {got}"
        raise PluginFailed(f"{origin_of(estimator, 'estimator')} returned a direction of "
                           f"{shown}; the model has P = {size} parameters, so it must be "
                           f"({size},)")


def shape_of(x: Any) -> tuple[int, ...] | None:
    """The shape of ``x`` as a tuple of ints, or ``None`` when it has none (not an array)."""
    shape = getattr(x, "shape", None)
    try:
        return tuple(int(d) for d in shape) if shape is not None else None
    except (TypeError, ValueError):
        return None
