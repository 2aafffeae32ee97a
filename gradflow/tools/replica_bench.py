"""What replicated runs buy: the step of R runs advanced together against one run's step.

``gradflow bench --replicas R`` builds, for each estimator and size, the benchmark's run
(:func:`gradflow.tools.bench.bench_config`: ``add``, ``rnn``, plain SGD) once alone and once as R
replicas (``run.replicas = R``, seeds 0 … R − 1), and times :meth:`Trainer.advance` and
:meth:`ReplicatedTrainer.advance` in interleaved blocks (each about ``min_time`` seconds; the
median of ``repeat`` blocks each). It reports µs per step of each, µs per replica (the group's
step ÷ R) and the throughput ratio R · t_one / t_group — how many times more steps per second
the R replicas make together than one run alone — and whether the replicas advanced as one
computation (the model and the estimator declare ``replicas``) or one after the other.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from gradflow.tools.bench import DEFAULT_TRUNCATION, bench_config, time_calls
from gradflow.training.replicas import ReplicatedTrainer
from gradflow.training.trainer import Trainer


@dataclass
class ReplicaRow:
    """One (estimator, n, R) measurement."""

    estimator: str
    n: int
    replicas: int
    batched: bool
    us_one: float
    us_group: float
    us_per_replica: float
    throughput: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _steps(advance: Callable[[], Any], sync: Callable[[], None], min_time: float) -> int:
    steps = 1
    while time_calls(advance, sync, steps) * steps < min_time / 4:
        steps *= 2
    return max(1, int(steps * min_time / max(time_calls(advance, sync, steps) * steps, 1e-9)))


def measure_replicas(estimator: str, n: int, replicas: int, batch: int = 1,
                     backend: str = "numpy", dtype: str = "float64", repeat: int = 7,
                     min_time: float = 0.05,
                     truncation: int = DEFAULT_TRUNCATION) -> ReplicaRow:
    """Time one run and R replicas of it, interleaved (see the module docstring)."""
    config = bench_config(estimator, n, batch, backend, dtype, truncation, 0)
    one = Trainer(config)
    group_config = config.model_copy(deep=True)
    group_config.run.replicas = replicas
    group = ReplicatedTrainer(group_config, "unused")  # nothing is written: advance only
    sync = one.parts.backend.synchronize
    plans = [(one.advance, _steps(one.advance, sync, min_time)),
             (group.advance, _steps(group.advance, sync, min_time))]
    times: list[list[float]] = [[], []]
    for _ in range(repeat):
        for k, (advance, steps) in enumerate(plans):
            times[k].append(time_calls(advance, sync, steps))
    t_one, t_group = (statistics.median(t) for t in times)
    return ReplicaRow(estimator, int(n), int(replicas), group.batched, t_one * 1e6,
                      t_group * 1e6, t_group / replicas * 1e6, replicas * t_one / t_group)
