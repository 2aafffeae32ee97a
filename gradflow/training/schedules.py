"""Learning-rate schedules η_t of the data step t = 1, 2, ...

* ``constant``:        η_t = γ
* ``inv-sqrt``:        η_t = γ / √t
* ``smooth-inv-sqrt``: η_t = γ / (1 + α √t)   (the schedule of the UORO experiments, Tallec &
  Ollivier 2017: constant at first, then decaying like 1/√t once α√t ≫ 1)

γ is the optimizer's ``lr``, α its ``decay``. The step t counts data steps, not parameter updates,
so estimators that update every k steps (TBPTT) follow the same schedule in time as those that
update every step.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from gradflow.runfiles.config import SCHEDULES


def learning_rate(schedule: str, lr: float, step: int, decay: float = 0.0) -> float:
    """η_t for ``schedule`` at data step ``step`` ≥ 1 (γ = ``lr``, α = ``decay``)."""
    if step < 1:
        raise ValueError(f"the step of a schedule starts at 1, got {step}")
    if schedule == "constant":
        return lr
    if schedule == "inv-sqrt":
        return lr / math.sqrt(step)
    if schedule == "smooth-inv-sqrt":
        return lr / (1.0 + decay * math.sqrt(step))
    raise ValueError(f"unknown schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}")


def schedule_function(schedule: str, lr: float, decay: float = 0.0) -> Callable[[int], float]:
    """η as a function of the data step, for a trainer's hot loop: the schedule is looked up
    once, and each call costs the arithmetic of :func:`learning_rate` only."""
    learning_rate(schedule, lr, 1, decay)  # an unknown schedule is refused here
    if schedule == "constant":
        return lambda step: lr
    if schedule == "inv-sqrt":
        return lambda step: lr / math.sqrt(step)
    return lambda step: lr / (1.0 + decay * math.sqrt(step))
