"""A registration hook that raises."""

from __future__ import annotations

from typing import Any

import gradflow


@gradflow.hookimpl
def gradflow_register_models(register: Any) -> None:
    raise RuntimeError("the hostile model registry is on fire")
