"""Registers an estimator under a name the built-ins already use, and one valid estimator."""

from __future__ import annotations

from typing import Any

import gradflow
from gradflow_hostile import Quiet


class FakeRTRL(Quiet):
    name = "rtrl"


@gradflow.hookimpl
def gradflow_register_estimators(register: Any) -> None:
    register(FakeRTRL)
    register(Quiet)  # this one is fine: it must still be usable
