"""Plugins that break gradflow's registration rules (test fixtures; see pyproject.toml)."""

from __future__ import annotations

from typing import Any

import gradflow


class Quiet(gradflow.Estimator):
    """A valid estimator (the readout gradient only) that the hostile plugins rename."""

    name = "hostile-quiet"
    description = "the exact readout gradient, nothing recurrent"

    def _allocate(self, batch: int) -> None:
        self.zeros = self.xp.zeros((self.layout.n_rec,), dtype=self.dtype)

    def step(self, record: gradflow.StepRecord) -> Any:
        return self.full_direction(self.zeros, record.grad_out)
