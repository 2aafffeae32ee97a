"""Holding plugins to their contracts while a run uses them.

A model, estimator or task plugin is code from elsewhere: when it raises, or hands back arrays of
the wrong shape, the message must name it — its registered name, the plugin (entry point) that
registered it and that plugin's distribution — not end in a traceback through gradflow's loop.

* :func:`blame` wraps a call into one plugin (creating it, for example): an exception that is not
  a :class:`~gradflow.GradflowError` becomes a :class:`PluginFailed` naming the plugin.
* :func:`culprit` finds, in the traceback of an exception raised somewhere in a training step,
  the innermost frame that runs a method of one of the run's plugins.
* :class:`StepChecks` verifies the shapes and dtypes of what the plugins return on the first step
  of a process (fresh or resumed) — the arrays' shapes are fixed by the configuration, so one
  step shows a plugin that gets them wrong, and later steps pay nothing.
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


def _shape(x: Any) -> tuple[int, ...] | None:
    shape = getattr(x, "shape", None)
    try:
        return tuple(int(d) for d in shape) if shape is not None else None
    except (TypeError, ValueError):
        return None


class StepChecks:
    """Shape and dtype checks of one training step's plugin outputs (see the module)."""

    def __init__(self, infos: dict[str, PluginInfo], batch: int, n_in: int, n_out: int,
                 n_state: int, size: int, n_rec: int, dtype: Any, dtype_name: str) -> None:
        self.infos = infos
        self.batch, self.n_in, self.n_out = batch, n_in, n_out
        self.n_state, self.size, self.n_rec = n_state, size, n_rec
        self.dtype, self.dtype_name = dtype, dtype_name

    def _expect(self, kind: str, what: str, value: Any, shape: tuple[int, ...],
                why: str, dtype: bool = True) -> None:
        got = _shape(value)
        if got != shape:
            shown = "not an array" if got is None else f"shape {got}"
            raise PluginFailed(f"{self.infos[kind].origin} returned {what} of {shown}; "
                               f"{why}, so it must be {shape}")
        if dtype and getattr(value, "dtype", None) != self.dtype:
            raise PluginFailed(f"{self.infos[kind].origin} returned {what} of dtype "
                               f"{getattr(value, 'dtype', None)}; the run computes in "
                               f"{self.dtype_name}")

    def initial(self, theta: Array, h0: Array) -> None:
        """θ from ``init_params`` and h_0 from ``initial_state``."""
        self._expect("model", "initial parameters θ", theta, (self.size,),
                     f"its layout has P = {self.size} parameters")
        self._expect("model", "an initial state", h0, (self.batch, self.n_state),
                     f"the run has B = {self.batch} streams and the model n_state = "
                     f"{self.n_state}")

    def batch_of_task(self, batch: Any) -> None:
        """The task's inputs, targets and reset mask."""
        b = self.batch
        for field in ("inputs", "targets"):
            if not hasattr(batch, field):
                raise PluginFailed(f"{self.infos['task'].origin} returned {type(batch).__name__}"
                                   f" from next(), not a gradflow Batch with {field}")
        self._expect("task", "inputs", batch.inputs, (b, self.n_in),
                     f"the run has B = {b} streams and the task n_in = {self.n_in}", dtype=False)
        lead = _shape(batch.targets)
        if not lead or lead[0] != b:
            raise PluginFailed(f"{self.infos['task'].origin} returned targets of "
                               f"{'shape ' + str(lead) if lead is not None else 'no shape'}; "
                               f"the first axis must be the B = {b} streams")
        if batch.reset is not None:
            self._expect("task", "a reset mask", batch.reset, (b,),
                         f"the run has B = {b} streams", dtype=False)

    def forward(self, h: Array) -> None:
        """h_t from ``forward``."""
        self._expect("model", "a state h from forward", h, (self.batch, self.n_state),
                     f"the run has B = {self.batch} streams and the model n_state = "
                     f"{self.n_state}")

    def readout(self, y: Array) -> None:
        """ŷ_t from ``readout``."""
        self._expect("model", "outputs from readout", y, (self.batch, self.n_out),
                     f"the run has B = {self.batch} streams and the task n_out = {self.n_out}")

    def readout_vjp(self, delta: Array, g_out: Array) -> None:
        """δ_t and ∂ℓ/∂θ_out from ``readout_vjp``."""
        self._expect("model", "δ from readout_vjp", delta, (self.batch, self.n_state),
                     f"the run has B = {self.batch} streams and the model n_state = "
                     f"{self.n_state}")
        self._expect("model", "∂ℓ/∂θ_out from readout_vjp", g_out, (self.size - self.n_rec,),
                     f"the model has {self.size - self.n_rec} readout parameters")

    def direction(self, direction: Array) -> None:
        """The estimator's direction for θ."""
        self._expect("estimator", "a direction", direction, (self.size,),
                     f"the model has P = {self.size} parameters")


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
    got = _shape(direction)
    if got != (size,):
        shown = "not an array" if got is None else f"shape {got}"
        raise PluginFailed(f"{origin_of(estimator, 'estimator')} returned a direction of "
                           f"{shown}; the model has P = {size} parameters, so it must be "
                           f"({size},)")

