"""Registers `sign-sgd`: the sign of the exact readout gradient, recurrent part zero.

Uses only the public gradflow API, like any third-party plugin.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

import gradflow


class SignOptions(gradflow.EstimatorOptions):
    scale: float = Field(1.0, gt=0, description="magnitude of each coordinate")


class SignReadout(gradflow.Estimator):
    name = "sign-readout"
    description = "scale · sign(∂ℓ/∂θ_out); recurrent weights untouched"
    Options = SignOptions

    def step(self, record: gradflow.StepRecord) -> Any:
        return self.fill_direction(0.0, self.options.scale * self.xp.sign(record.grad_out))


@gradflow.hookimpl
def gradflow_register_estimators(register: Any) -> None:
    register(SignReadout)
