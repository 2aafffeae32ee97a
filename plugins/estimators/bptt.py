"""Backpropagation through time over whole sequences: the offline oracle, run in a stream.

The estimator stores every step since its last update. When every stream starts a new sequence
(a reset whose mask is all true) it backpropagates all the stored losses through all the stored
transitions, returning Σ_t ∂ℓ_t/∂θ of the finished sequences, and starts over; :meth:`flush`
does the same at the end of the data. Streams that reset on their own are cut at their boundary
but keep accumulating until all streams reset together. Memory grows with the sequence length:
use it on tasks with sequences, not on endless streams (``online = False``).
"""

from __future__ import annotations

from typing import Any

from gradflow_plugins.estimators.tbptt import WindowBackprop

from gradflow import Scalar, StepRecord

Array = Any


class BPTT(WindowBackprop):
    name = "bptt"
    description = "full BPTT over each sequence, updated when all streams reset (offline oracle)"
    kind = "exact"
    online = False

    def state_fields(self) -> list[Any]:
        return [*super().state_fields(), Scalar("update_due", False)]

    def on_reset(self, mask: Array) -> None:
        super().on_reset(mask)
        if self.state.pending and bool(self.xp.all(mask)):
            self.state.update_due = True

    def step(self, record: StepRecord) -> Array | None:
        state = self.state
        direction = None
        if state.update_due:  # every stream ended its sequence at the previous step
            state.update_due = False
            direction = self.backprop(record.theta)
            state.hist.clear()
        self.record(record)
        return direction
