"""The one online step: task batch → forward → loss → readout VJP → estimator → direction.

Everything that runs a model along a stream calls :func:`online_step`: the trainer (which then
clips the direction and lets the optimizer update θ), its held-out evaluation, the frozen
trajectories of :func:`gradflow.frozen_gradients` and ``gradflow check``, the exact references,
the conformance suite, ``gradflow bench`` and the asv suite (through ``Trainer.advance``). So the
timing convention (docs/architecture.md §6) is written once:

1. streams whose batch says ``reset`` go back to h_0 and the estimator is told
   (:meth:`gradflow.Estimator.reset`) before the step;
2. h_t, cache = f(h_{t−1}, x_t; θ_rec); ŷ_t = g(h_t; θ_out);
3. ℓ_t and ∂ℓ_t/∂ŷ_t from the task's loss (the mean over the B streams);
4. δ_t, ∂ℓ_t/∂θ_out = the readout VJP of ∂ℓ_t/∂ŷ_t;
5. the estimator's direction for θ (or ``None``) from the :class:`~gradflow.StepRecord`.

Without an estimator the step stops after 4 (the record is returned: the exact references build
their backward passes from it); with ``gradient=False`` after 3, with the loss as the mean of the
per-stream losses (evaluation). θ is never modified here.

An estimator may return its direction by its factors (:class:`gradflow.FactoredDirection`);
the step hands out the array it stands for unless the caller asks for the factors
(``materialize=False``: the trainer, whose clipping and optimizer use them without forming P
numbers).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gradflow.contracts.direction import FactoredDirection
from gradflow.contracts.estimator import Estimator, StepRecord
from gradflow.contracts.losses import Loss
from gradflow.contracts.model import Model
from gradflow.contracts.task import Batch

Array = Any


@dataclass(slots=True)
class StepOutcome:
    """What one online step produced.

    h: the state h_t (B, n_state). loss: ℓ_t, the mean over the streams (a 0-d array of the
    backend, left on the device). record: what the estimator saw (``None`` with
    ``gradient=False``). direction: the estimator's direction for θ (``None`` without an
    estimator, or on steps where it has nothing to say).
    """

    h: Array
    loss: Array
    record: StepRecord | None = None
    direction: Array | None = None


def online_step(model: Model, loss: Loss, theta: Array, h: Array, batch: Batch, h0: Array,
                estimator: Estimator | None = None, gradient: bool = True,
                materialize: bool = True) -> StepOutcome:
    """One online step of ``model`` on ``batch`` from state ``h`` (see the module docstring).

    ``h0`` is the initial state a stream goes back to when ``batch.reset`` selects it. The
    direction is an array of P numbers, or, with ``materialize=False``, what the estimator
    returned (an array or a :class:`~gradflow.FactoredDirection`, valid until its next step).
    """
    reset = batch.reset
    if reset is not None:
        h = model.xp.where(reset[..., None], h0, h)
        if estimator is not None:
            estimator.reset(reset)
    h, cache = model.forward(theta, h, batch.inputs)
    y = model.readout(theta, h)
    if not gradient:
        return StepOutcome(h, model.xp.mean(loss.per_stream(y, batch.targets)))
    value, dy = loss(y, batch.targets)
    delta, g_out = model.readout_vjp(theta, h, dy)
    record = StepRecord(theta, cache, delta, g_out, dy)
    if estimator is None:
        return StepOutcome(h, value, record)
    direction = estimator.step(record)
    if materialize and isinstance(direction, FactoredDirection):
        direction = direction.materialize(model.xp)
    return StepOutcome(h, value, record, direction)
