"""Gradient alignment along training: a run's directions against the exact online gradient.

With ``run.align_every = k`` a run carries an exact online estimator alongside its own — the
registry's :func:`~gradflow.registry.discovery.exact_reference` (RTRL), chosen by what estimators
declare — fed the same steps: the same records, so the run's own trajectory and θ. The
reference's per-step gradients are summed between two directions of the run's estimator, so that
each direction is compared with the exact gradient of the losses it accounts for (one step for
RTRL and the rank-one estimators, the window for TBPTT). At the first direction at or after every
k steps,

    cos = ⟨g, r⟩ / (‖g‖ ‖r‖),    relerr = ‖g − r‖ / ‖r‖,

g being the direction before clipping and r the reference's sum (in online training θ moves
between steps, and RTRL's sensitivities mix the θ of the steps they span: r is the exact *online*
gradient, the quantity every online estimator approximates). Where g or r is zero (readout-only
on a model without readout parameters) the measure is NaN, which a metrics line reports as
``None``. A metrics line reports the means of
its window's measurements (``align_cos``, ``align_relerr``; ``None`` when it had none). The sums
stay on the device until the line; the whole state — the reference's, the pending sum, the
window's sums and the next measurement's step — is checkpointed, so that a resumed run writes the
same lines. The reference costs what RTRL costs, O(n²P) a step: measure at sizes where that is
affordable.
"""

from __future__ import annotations

from typing import Any

from gradflow.contracts.direction import FactoredDirection
from gradflow.contracts.estimator import StepRecord
from gradflow.contracts.model import Model
from gradflow.registry.discovery import exact_reference
from gradflow.registry.factory import create_estimator

Array = Any

#: the keys of the metrics lines
COS, RELERR = "align_cos", "align_relerr"


class Alignment:
    """The exact reference carried alongside a run, and the sums of its window (module
    docstring)."""

    def __init__(self, model: Model, every: int, batch: int, seed: int) -> None:
        self.every = int(every)
        self.reference = create_estimator(exact_reference(), model)
        self.reference.start(batch, seed=seed)
        xp, dtype = model.xp, model.backend.dtype
        self.xp = xp
        self._zero = xp.zeros((), dtype=dtype)
        #: Σ of the reference's gradients since the run's estimator last returned a direction
        self.pending = xp.zeros((model.layout.size,), dtype=dtype)
        self.cos_sum = self.err_sum = self._zero
        self.count = 0
        #: the step at or after which the next direction is measured
        self.next_at = self.every

    def observe(self, record: StepRecord, reset: Array | None) -> None:
        """Every step: the reference's step on the run's record (after the sequence boundaries
        of ``reset``), added to the pending sum."""
        if reset is not None:
            self.reference.reset(reset)
        self.pending += self.reference.step(record)

    def measure(self, step: int, direction: Array | FactoredDirection) -> None:
        """The run's estimator returned ``direction`` (before clipping) at ``step``: measure it
        against the pending sum when due, and start the next sum."""
        if step >= self.next_at:
            xp = self.xp
            g = (direction.materialize(xp) if isinstance(direction, FactoredDirection)
                 else direction)
            r = self.pending
            diff = g - r
            rr = xp.vecdot(r, r)
            norms = xp.sqrt(xp.vecdot(g, g) * rr)
            # undefined (NaN, and no warning) where a direction or the reference is zero
            self.cos_sum = self.cos_sum + _ratio(xp, xp.vecdot(g, r), norms)
            self.err_sum = self.err_sum + xp.sqrt(_ratio(xp, xp.vecdot(diff, diff), rr))
            self.count += 1
            self.next_at = (step // self.every + 1) * self.every
        self.pending[...] = 0.0

    def window(self, to_float: Any) -> dict[str, float | None]:
        """The means of the window's measurements for a metrics line; a new window."""
        count = self.count
        line = {COS: to_float(self.cos_sum) / count if count else None,
                RELERR: to_float(self.err_sum) / count if count else None}
        self.cos_sum = self.err_sum = self._zero
        self.count = 0
        return line

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs to write the same lines (arrays are copies)."""
        copy = self.reference.copy_array
        return {**{f"reference.{k}": v for k, v in self.reference.state_dict().items()},
                "pending": copy(self.pending), "cos_sum": copy(self.cos_sum),
                "err_sum": copy(self.err_sum), "count": self.count, "next_at": self.next_at}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        prefix = "reference."
        self.reference.load_state_dict({k[len(prefix):]: v for k, v in state.items()
                                        if k.startswith(prefix)})
        load = self.reference.load_array
        self.pending = load(state["pending"])
        self.cos_sum, self.err_sum = load(state["cos_sum"]), load(state["err_sum"])
        self.count, self.next_at = int(state["count"]), int(state["next_at"])


def _ratio(xp: Any, num: Array, den: Array) -> Array:
    """num / den, NaN where den is 0 (computed without dividing by 0)."""
    positive = den > 0
    return xp.where(positive, num / xp.where(positive, den, xp.ones_like(den)),
                    xp.full_like(den, float("nan")))
