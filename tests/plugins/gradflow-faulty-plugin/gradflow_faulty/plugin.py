"""Estimators and a model that register correctly but misbehave during training:

* ``long-direction``: returns a direction of P + 1 numbers;
* ``single-direction``: returns a float32 direction (whatever the run's dtype);
* ``nan-direction``: returns NaN from step 5 on;
* ``raising-step``: raises ZeroDivisionError at step 3;
* ``exiting-step``: calls sys.exit at step 2;
* model ``wide-state``: an rnn whose forward returns one state coordinate too many;
* model ``vjp-only``: an rnn that declares only forward, readout and vjp (a model that is fine,
  but cannot serve RTRL or the rank-one estimators).
"""

from __future__ import annotations

import sys
from typing import Any

from gradflow_plugins.models.rnn import RNN

import gradflow


class _Readout(gradflow.Estimator):
    """The exact readout gradient (recurrent part zero), counting its steps."""

    def _allocate(self, batch: int) -> None:
        self.zeros = self.xp.zeros((self.layout.n_rec,), dtype=self.dtype)
        self.count = 0

    def step(self, record: gradflow.StepRecord) -> Any:
        self.count += 1
        return self.full_direction(self.zeros, record.grad_out)


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
        return direction * float("nan") if self.count >= 5 else direction


class RaisingStep(_Readout):
    name = "raising-step"
    description = "raises at step 3"

    def step(self, record: gradflow.StepRecord) -> Any:
        direction = super().step(record)
        self.left = 3 - self.count
        return direction * (1 / self.left)  # ZeroDivisionError at step 3


class ExitingStep(_Readout):
    name = "exiting-step"
    description = "calls sys.exit at step 2"

    def step(self, record: gradflow.StepRecord) -> Any:
        direction = super().step(record)
        if self.count == 2:
            sys.exit(0)
        return direction


class WideState(RNN):
    name = "wide-state"
    description = "an rnn whose forward returns n + 1 state coordinates"

    def forward(self, theta: Any, h: Any, x: Any) -> Any:
        h_next, cache = super().forward(theta, h, x)
        return self.xp.concat([h_next, h_next[:, :1]], axis=1), cache


class VjpOnly(RNN):
    name = "vjp-only"
    description = "an rnn that declares only forward, readout and vjp"
    capabilities = frozenset({gradflow.FORWARD, gradflow.READOUT, gradflow.VJP})


@gradflow.hookimpl
def gradflow_register_estimators(register: Any) -> None:
    for cls in (LongDirection, SingleDirection, NanDirection, RaisingStep, ExitingStep):
        register(cls)


@gradflow.hookimpl
def gradflow_register_models(register: Any) -> None:
    register(WideState)
    register(VjpOnly)
