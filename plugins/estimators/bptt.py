"""Backpropagation through time over whole sequences: the offline oracle, run in a stream.

The estimator stores every step since its last update. When every stream starts a new sequence
(a reset whose mask is all true) it backpropagates all the stored losses through all the stored
transitions, returning Σ_t ∂ℓ_t/∂θ of the finished sequences, and starts over; :meth:`flush`
does the same at the end of the data. Streams that reset on their own are cut at their boundary
but keep accumulating until all streams reset together. Memory grows with the sequence length:
use it on tasks with sequences, not on endless streams.
"""

from __future__ import annotations

from typing import Any

from gradflow_plugins.estimators.tbptt import WindowBackprop

from gradflow import StepRecord

Array = Any


class BPTT(WindowBackprop):
    name = "bptt"
    description = "full BPTT over each sequence, updated when all streams reset (offline oracle)"

    def _allocate(self, batch: int) -> None:
        super()._allocate(batch)
        self._update_due = False

    def reset(self, mask: Array) -> None:
        super().reset(mask)
        if self.pending_losses and bool(self.xp.all(mask)):
            self._update_due = True

    def step(self, record: StepRecord) -> Array | None:
        direction = None
        if self._update_due:
            self._update_due = False
            cut = self.pending_cut
            direction = self._backprop(record.theta)
            self.history.clear()
            self.pending_cut = cut
        self._record(record)
        return direction

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["update_due"] = int(self._update_due)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self._update_due = bool(state["update_due"])
