"""Holding the plugins of a run to their contracts on its first steps.

A run's array shapes are fixed by its configuration, so one step shows a plugin that gets them
wrong, and later steps need not pay for the checks. :class:`ValidatedSteps` is the one online step
(:func:`~gradflow.training.step.online_step`) with the plugins' outputs checked by
:class:`StepChecks` — the task's batch, the model's state, outputs and readout VJP, the loss of
the task's targets, and the estimator's first direction (TBPTT returns its first one k1 steps
in) — until each has been seen once; then the trainer calls the plain step. A plugin that breaks
its contract is named in a :class:`~gradflow.PluginFailed` (its registered name, plugin and
distribution), instead of failing later inside another plugin. Every process checks its own
first steps, a resumed run's included.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gradflow.contracts.direction import FactoredDirection
from gradflow.contracts.errors import GradflowError, PluginFailed
from gradflow.contracts.estimator import Estimator
from gradflow.contracts.losses import Loss
from gradflow.contracts.model import Model
from gradflow.contracts.task import Batch
from gradflow.registry.discovery import PluginInfo
from gradflow.registry.guard import shape_of
from gradflow.training.step import StepOutcome, online_step

Array = Any


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
        got = shape_of(value)
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
        lead = shape_of(batch.targets)
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

    def direction(self, direction: Array | FactoredDirection) -> None:
        """The estimator's direction for θ: an array, or its factors."""
        if not isinstance(direction, FactoredDirection):
            self._expect("estimator", "a direction", direction, (self.size,),
                         f"the model has P = {self.size} parameters")
            return
        coef = shape_of(direction.coef)
        if coef is None or len(coef) != 1:
            shown = "no shape" if coef is None else f"shape {coef}"
            raise PluginFailed(f"{self.infos['estimator'].origin} returned a factored direction "
                               f"whose coefficients have {shown}; they must be a vector (r,)")
        r = coef[0]
        self._expect("estimator", "the coefficients of a factored direction", direction.coef,
                     (r,), "they are a vector")
        self._expect("estimator", "the rows of a factored direction", direction.rows,
                     (r, self.n_rec), f"there are r = {r} coefficients and P_rec = {self.n_rec} "
                     "recurrent parameters")
        self._expect("estimator", "the readout part of a factored direction", direction.out,
                     (self.size - self.n_rec,),
                     f"the model has {self.size - self.n_rec} readout parameters")


class _CheckedModel:
    """The model as the online step calls it, with the outputs of the step's primitives checked."""

    def __init__(self, model: Model, checks: StepChecks) -> None:
        self.model, self.checks, self.xp = model, checks, model.xp

    def forward(self, theta: Array, h: Array, x: Array) -> tuple[Array, Any]:
        h, cache = self.model.forward(theta, h, x)
        self.checks.forward(h)
        return h, cache

    def readout(self, theta: Array, h: Array) -> Array:
        y = self.model.readout(theta, h)
        self.checks.readout(y)
        return y

    def readout_vjp(self, theta: Array, h: Array, u: Array) -> tuple[Array, Array]:
        delta, g_out = self.model.readout_vjp(theta, h, u)
        self.checks.readout_vjp(delta, g_out)
        return delta, g_out


class _CheckedLoss:
    """The task's loss: targets that do not fit the outputs are the task's fault."""

    def __init__(self, loss: Loss, task: PluginInfo) -> None:
        self.loss, self.task, self.name = loss, task, loss.name

    def _blame(self, exc: GradflowError) -> PluginFailed:
        return PluginFailed(f"{self.task.origin} gave targets that do not fit its "
                            f"{self.loss.name!r} loss: {exc}")

    def __call__(self, yhat: Array, target: Array) -> tuple[Array, Array]:
        try:
            return self.loss(yhat, target)
        except GradflowError as exc:
            raise self._blame(exc) from None

    def per_stream(self, yhat: Array, target: Array) -> Array:
        try:
            return self.loss.per_stream(yhat, target)
        except GradflowError as exc:
            raise self._blame(exc) from None


class ValidatedSteps:
    """:func:`~gradflow.training.step.online_step` with the plugins' outputs checked until each
    has been seen once; then ``when_done()`` is called (the trainer switches to the plain step).
    """

    def __init__(self, checks: StepChecks, when_done: Callable[[], None]) -> None:
        self.checks = checks
        self.when_done = when_done
        self.model_seen = False
        self.direction_seen = False

    def __call__(self, model: Model, loss: Loss, theta: Array, h: Array, batch: Batch, h0: Array,
                 estimator: Estimator | None = None, gradient: bool = True,
                 materialize: bool = True) -> StepOutcome:
        checks = self.checks
        if self.model_seen or not gradient:
            out = online_step(model, loss, theta, h, batch, h0, estimator, gradient, materialize)
        else:
            checks.batch_of_task(batch)
            out = online_step(_CheckedModel(model, checks),  # type: ignore[arg-type]
                              _CheckedLoss(loss, checks.infos["task"]), theta, h, batch, h0,
                              estimator, materialize=materialize)
            self.model_seen = True
        if out.direction is not None and not self.direction_seen:
            checks.direction(out.direction)
            self.direction_seen = True
        if self.model_seen and self.direction_seen:
            self.when_done()
        return out
