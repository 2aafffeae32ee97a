"""Estimators and a model that register correctly but misbehave during training:

* ``long-direction``: returns a direction of P + 1 numbers;
* ``single-direction``: returns a float32 direction (whatever the run's dtype);
* ``nan-direction``: returns NaN from step 5 on;
* ``raising-step``: raises ZeroDivisionError at step 3;
* ``exiting-step``: calls sys.exit at step 2;
* model ``wide-state``: an rnn whose forward returns one state coordinate too many;
* model ``vjp-only``: an rnn that implements only forward, readout and vjp (a model that is
  fine, but cannot serve RTRL or the rank-one estimators).
"""

from __future__ import annotations

import sys
from typing import Any

from gradflow_plugins.models.rnn import RNN

import gradflow


class _Readout(gradflow.Estimator):
    """The exact readout gradient (recurrent part zero), counting its steps."""

    def state_fields(self) -> list[Any]:
        return [gradflow.Scalar("count", 0)]

    def step(self, record: gradflow.StepRecord) -> Any:
        self.state.count += 1
        return self.fill_direction(0.0, record.grad_out)


class LongDirection(_Readout):
    name = "long-direction"
    description = "returns P + 1 numbers"

    def step(self, record: gradflow.StepRecord) -> Any:
        return self.xp.zeros((self.layout.size + 1,), dtype=self.dtype)


class SingleDirection(_Readout):
    name = "single-direction"
    description = "returns float32"

    def step(self, record: gradflow.StepRecord) -> Any:
        return self.xp.astype(super().step(record), self.xp.float32)


class NanDirection(_Readout):
    name = "nan-direction"
    description = "NaN from step 5 on"

    def step(self, record: gradflow.StepRecord) -> Any:
        direction = super().step(record)
        return direction * float("nan") if self.state.count >= 5 else direction


class RaisingStep(_Readout):
    name = "raising-step"
    description = "raises at step 3"

    def step(self, record: gradflow.StepRecord) -> Any:
        direction = super().step(record)
        self.left = 3 - self.state.count
        return direction * (1 / self.left)  # ZeroDivisionError at step 3


class ExitingStep(_Readout):
    name = "exiting-step"
    description = "calls sys.exit at step 2"

    def step(self, record: gradflow.StepRecord) -> Any:
        direction = super().step(record)
        if self.state.count == 2:
            sys.exit(0)
        return direction


class WideState(RNN):
    name = "wide-state"
    description = "an rnn whose forward returns n + 1 state coordinates"

    def forward(self, theta: Any, h: Any, x: Any) -> Any:
        h_next, cache = super().forward(theta, h, x)
        return self.xp.concat([h_next, h_next[:, :1]], axis=1), cache


class VjpOnly(gradflow.AffineReadoutModel):
    name = "vjp-only"
    description = "an rnn that implements only forward, readout and vjp"
    Options = RNN.Options

    def __init__(self, options: Any, backend: Any) -> None:
        super().__init__(options, backend)
        self.rnn = RNN(options, backend)
        self.layout, self.n_state = self.rnn.layout, self.rnn.n_state
        self.affine_readout = self.rnn.affine_readout

    def init_params(self, seed: int = 0) -> Any:
        return self.rnn.init_params(seed)

    def forward(self, theta: Any, h: Any, x: Any) -> Any:
        return self.rnn.forward(theta, h, x)

    def vjp(self, theta: Any, cache: Any, u: Any) -> Any:
        return self.rnn.vjp(theta, cache, u)


@gradflow.hookimpl
def gradflow_register_estimators(register: Any) -> None:
    for cls in (LongDirection, SingleDirection, NanDirection, RaisingStep, ExitingStep):
        register(cls)


@gradflow.hookimpl
def gradflow_register_models(register: Any) -> None:
    register(WideState)
    register(VjpOnly)
