"""Readout-only training: the memoryless baseline.

Returns [0, ∂ℓ_t/∂θ_out]: the recurrent weights stay at their initial values and only the readout
learns (an echo-state network trained online). It is also the forward-cost baseline of the
benchmarks (``forward_only``): a step costs one forward, one readout and one readout VJP.
"""

from __future__ import annotations

from typing import Any, ClassVar

from gradflow import Estimator, StepRecord

Array = Any


class ReadoutOnly(Estimator):
    name = "readout-only"
    description = "trains the readout θ_out alone (memoryless baseline, forward-cost reference)"
    kind = "biased"
    forward_only = True
    #: a linear readout on fixed features is a convex problem: no decay of the learning rate
    optimizer_defaults: ClassVar[dict[str, Any]] = {
        "name": "adam", "lr": 0.01, "schedule": "constant",
    }

    def step(self, record: StepRecord) -> Array:
        # the buffer's recurrent part is zeroed every step: the caller may have scaled it
        return self.fill_direction(0.0, record.grad_out)
