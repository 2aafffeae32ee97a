"""Readout-only training: the memoryless baseline.

Returns [0, ∂ℓ_t/∂θ_out] (by its factors, :class:`gradflow.FactoredDirection`, with no rows): the
recurrent weights stay at their initial values and only the readout learns (an echo-state network
trained online). It is also the forward-cost baseline of the
benchmarks (``forward_only``): a step costs one forward, one readout and one readout VJP.
"""

from __future__ import annotations

from typing import Any, ClassVar

from gradflow import Estimator, FactoredDirection, StepRecord

Array = Any


class ReadoutOnly(Estimator):
    name = "readout-only"
    description = "trains the readout θ_out alone (memoryless baseline, forward-cost reference)"
    kind = "biased"
    forward_only = True
    returns_factors = True
    replicas = True
    #: a linear readout on fixed features is a convex problem: no decay of the learning rate
    optimizer_defaults: ClassVar[dict[str, Any]] = {
        "name": "adam", "lr": 0.01, "schedule": "constant",
    }

    def setup_workspace(self) -> None:
        xp, dtype = self.xp, self.dtype
        lead = self.lead
        self._no_rows = (xp.zeros((*lead, 0), dtype=dtype),
                         xp.zeros((*lead, 0, self.layout.n_rec), dtype=dtype),
                         xp.zeros(lead, dtype=dtype))

    def step(self, record: StepRecord) -> Array | FactoredDirection:
        """[0, ∂ℓ_t/∂θ_out]; by its factors when the caller takes them: no rows, so nothing of
        size P_rec is formed (and plain SGD leaves θ_rec alone instead of subtracting zeros)."""
        if self.factors:
            coef, rows, zero = self._no_rows
            return FactoredDirection(coef, rows, record.grad_out, zero)
        # the buffer's recurrent part is zeroed every step: the caller may have scaled it
        return self.fill_direction(0.0, record.grad_out)
