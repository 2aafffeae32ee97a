"""Entry point ``snap`` of group ``gradflow``: registers the ``snap1`` estimator."""

from __future__ import annotations

from typing import Any

import gradflow
from gradflow_snap.snap1 import SnAp1


@gradflow.hookimpl
def gradflow_register_estimators(register: Any) -> None:
    register(SnAp1)
