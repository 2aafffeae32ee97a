"""Tracked numbers (CPU, float64, B = 1, BLAS on one thread), the targets of the performance issue:

* ``Scaling.track_exponent``: the exponent k of t = t₀ + c·P^k fitted to the median step times
  (n = 64…1024; RTRL n = 16…128), and ``Scaling.track_loglog_slope``: the plain log–log slope
  of the same points (flattened by the per-step overhead t₀; see gradflow/tools/scaling.py);
* ``Ratio.track_ratio_to_forward``: the step time over the forward-only (readout-only) step time at
  n = 64 and n = 1024;
* ``StateMemory.track_floats_per_param``: the bytes of the estimator's state dict per parameter,
  in floats (8 bytes), at n = 128.

They use :mod:`gradflow.tools.bench` and :mod:`gradflow.tools.scaling`; on commits that predate
them the benchmarks are skipped.
"""

from __future__ import annotations

import inspect
from typing import Any, ClassVar

from .common import bench_module, make_trainer

LINEAR = ["readout-only", "tbptt", "uoro", "nobacktrack", "kalman-nobacktrack"]
FIT_SIZES = {"rtrl": [16, 32, 64, 128]}
LINEAR_SIZES = [64, 128, 256, 512, 1024]
REPEAT, MIN_TIME, ROUNDS = 5, 0.05, 3


def _measure(estimators: list[str], sizes: list[int]) -> dict[str, Any]:
    """{"estimator/n": median µs per step} of ``gradflow.tools.bench.run_bench`` (three interleaved
    rounds, BLAS on one thread), or {} on commits that predate it."""
    bench = bench_module()
    if bench is None:
        return {}
    # every size measured: no step-time limit (its name has changed over the commits)
    unlimited = {"max_step_ms": None} if "max_step_ms" in inspect.signature(
        bench.run_bench).parameters else {"rtrl_max_n": None}
    result = bench.run_bench(estimators, sizes, repeat=REPEAT, min_time=MIN_TIME, rounds=ROUNDS,
                             threads=1, **unlimited)
    return {f"{r.estimator}/{r.n}": r.us_per_step for r in result.rows}


def _need(cache: dict[str, Any]) -> None:
    if not cache:
        raise NotImplementedError("this commit has no gradflow bench")


class Scaling:
    params: ClassVar[list] = [[*LINEAR, "rtrl"]]
    param_names: ClassVar[list[str]] = ["estimator"]
    timeout = 1200

    def setup_cache(self) -> dict[str, Any]:
        cache = _measure(LINEAR, LINEAR_SIZES)
        return {**cache, **_measure(["rtrl"], FIT_SIZES["rtrl"])} if cache else cache

    def setup(self, cache: dict[str, Any], estimator: str) -> None:
        _need(cache)
        from gradflow.tools.scaling import fit_scaling

        sizes = FIT_SIZES.get(estimator, LINEAR_SIZES)
        self.fit = fit_scaling([_params(n) for n in sizes],
                               [cache[f"{estimator}/{n}"] for n in sizes])

    def track_exponent(self, cache: dict[str, Any], estimator: str) -> float:
        return self.fit.exponent

    track_exponent.unit = "exponent"  # type: ignore[attr-defined]

    def track_loglog_slope(self, cache: dict[str, Any], estimator: str) -> float:
        return self.fit.slope

    track_loglog_slope.unit = "exponent"  # type: ignore[attr-defined]


def _params(n: int) -> int:
    """P of the benchmarked rnn (two inputs, two outputs): n² + 5n + 2."""
    return n * n + 5 * n + 2


class Ratio:
    params: ClassVar[list] = [["tbptt", "uoro", "nobacktrack", "kalman-nobacktrack"], [64, 1024]]
    param_names: ClassVar[list[str]] = ["estimator", "n"]
    timeout = 900

    def setup_cache(self) -> dict[str, Any]:
        return _measure(["readout-only", *self.params[0]], self.params[1])

    def setup(self, cache: dict[str, Any], estimator: str, n: int) -> None:
        _need(cache)

    def track_ratio_to_forward(self, cache: dict[str, Any], estimator: str, n: int) -> float:
        return cache[f"{estimator}/{n}"] / cache[f"readout-only/{n}"]

    track_ratio_to_forward.unit = "× forward-only step"  # type: ignore[attr-defined]


class StateMemory:
    params: ClassVar[list] = [[*LINEAR, "rtrl"]]
    param_names: ClassVar[list[str]] = ["estimator"]
    N = 128

    def setup(self, estimator: str) -> None:
        bench = bench_module()
        if bench is None:
            raise NotImplementedError("this commit has no gradflow bench")
        trainer = make_trainer(estimator, self.N)
        self.floats = bench.state_bytes(trainer) / trainer.parts.model.layout.size / 8

    def track_floats_per_param(self, estimator: str) -> float:
        return self.floats

    track_floats_per_param.unit = "floats / parameter"  # type: ignore[attr-defined]
