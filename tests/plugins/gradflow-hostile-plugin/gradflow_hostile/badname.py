"""An estimator whose name would climb out of the runs/ directory (runs/<time>-<task>-<name>)."""

from __future__ import annotations

from typing import Any

import gradflow
from gradflow_hostile import Quiet


class Escaping(Quiet):
    name = "x/../../escape"


@gradflow.hookimpl
def gradflow_register_estimators(register: Any) -> None:
    register(Escaping)
