"""An estimator whose Options accept any key (no extra="forbid"): typos would pass silently."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

import gradflow
from gradflow_hostile import Quiet


class LaxOptionsModel(BaseModel):
    scale: float = 1.0


class LaxOptions(Quiet):
    name = "lax-options"
    Options = LaxOptionsModel


@gradflow.hookimpl
def gradflow_register_estimators(register: Any) -> None:
    register(LaxOptions)
