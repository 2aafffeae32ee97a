"""Tracked numbers: the calls one online step makes (CPU, NumPy, float64, B = 1, n = 32), counted.

At n = 32 a step's time is mostly the fixed cost of its calls (a NumPy operation on a few numbers
costs 0.3–2 µs whatever it computes), so their number is tracked per commit beside the time:

* ``Calls.track_numpy_calls_per_step``: NumPy operations on arrays per step;
* ``Calls.track_python_calls_per_step``: Python function calls per step.

Both come from :func:`gradflow.tools.bench.count_step_calls` (the method is in
gradflow/tools/call_count.py: a counting array namespace, and ``sys.setprofile``), averaged over
whole update intervals. The numbers do not depend on the machine's speed. On commits that
predate the count the benchmarks are skipped.
"""

from __future__ import annotations

from typing import ClassVar

from .common import bench_module

ESTIMATORS = ["readout-only", "tbptt", "uoro", "kalman-nobacktrack", "rtrl"]
N = 32


class Calls:
    params: ClassVar[list] = [ESTIMATORS]
    param_names: ClassVar[list[str]] = ["estimator"]
    timeout = 300

    def setup(self, estimator: str) -> None:
        count = getattr(bench_module(), "count_step_calls", None)
        if count is None:
            raise NotImplementedError("this commit's gradflow bench does not count calls")
        self.calls = count(estimator, N)

    def track_numpy_calls_per_step(self, estimator: str) -> float:
        return self.calls.numpy_calls

    track_numpy_calls_per_step.unit = "NumPy calls / step"  # type: ignore[attr-defined]

    def track_python_calls_per_step(self, estimator: str) -> float:
        return self.calls.python_calls

    track_python_calls_per_step.unit = "Python calls / step"  # type: ignore[attr-defined]
