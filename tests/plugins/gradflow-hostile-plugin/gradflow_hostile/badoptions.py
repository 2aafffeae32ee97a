"""An estimator whose Options is not a pydantic model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradflow
from gradflow_hostile import Quiet


@dataclass
class NotPydantic:
    scale: float = 1.0


class BadOptions(Quiet):
    name = "bad-options"
    Options = NotPydantic  # type: ignore[assignment]


@gradflow.hookimpl
def gradflow_register_estimators(register: Any) -> None:
    register(BadOptions)
