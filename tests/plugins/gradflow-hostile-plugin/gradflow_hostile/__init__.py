"""Plugins that break gradflow's registration rules (test fixtures; see pyproject.toml)."""

from __future__ import annotations

from typing import Any

import gradflow


class Quiet(gradflow.Estimator):
    """A valid estimator (the readout gradient only) that the hostile plugins rename."""

    name = "hostile-quiet"
    description = "the exact readout gradient, nothing recurrent"

    def step(self, record: gradflow.StepRecord) -> Any:
        return self.fill_direction(0.0, record.grad_out)
