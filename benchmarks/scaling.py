"""Tracked numbers (CPU, float64, B = 1, BLAS on one thread), the targets of the performance issue:

* ``Scaling.track_exponent``: the exponent k of t = t₀ + c·P^k fitted to the median step times
  (n = 64…1024; RTRL n = 16…128), and ``Scaling.track_loglog_slope``: the plain log–log slope
  of the same points (flattened by the per-step overhead t₀; see gradflow/tools/scaling.py);
* ``Marginal.track_marginal_slope`` and ``Marginal.track_marginal_exponent``: the same two fits of
  the marginal cost t − t_fwd, the step time minus the forward-only (readout-only) step time at
  the same n, over n = 128…2048 (:func:`gradflow.tools.bench.marginal_fit`; the forward step,
  loss and readout that every step makes cancel, and what is fitted is the estimator's own work);
* ``Ratio.track_ratio_to_forward``: the step time over the forward-only (readout-only) step time at
  n = 64 and n = 1024;
* ``StateMemory.track_floats_per_param``: the bytes of the estimator's state dict per parameter,
  in floats (8 bytes), at n = 128.

They use :mod:`gradflow.tools.bench` and :mod:`gradflow.tools.scaling`; on commits that predate
them (or, for ``Marginal``, :func:`~gradflow.tools.bench.marginal_fit`) the benchmarks are skipped.
``Scaling`` and ``Marginal`` share one measurement (:class:`_Measured`: asv runs a
``setup_cache`` once per function).
"""

from __future__ import annotations

import inspect
from typing import Any, ClassVar

from .common import bench_module, make_trainer

LINEAR = ["readout-only", "tbptt", "uoro", "nobacktrack", "kalman-nobacktrack", "snap", "rflo",
          "e-prop"]
FIT_SIZES = {"rtrl": [16, 32, 64, 128]}
LINEAR_SIZES = [64, 128, 256, 512, 1024]
#: the sizes of the marginal fits, and of the shared measurement of the O(P) estimators
MARGINAL_SIZES = [128, 256, 512, 1024, 2048]
MEASURED_SIZES = sorted({*LINEAR_SIZES, *MARGINAL_SIZES})
REPEAT, MIN_TIME, ROUNDS = 5, 0.05, 3


def _measure(estimators: list[str], sizes: list[int]) -> dict[str, Any]:
    """{"estimator/n": median µs per step} of ``gradflow.tools.bench.run_bench`` (three interleaved
    rounds, BLAS on one thread), or {} on commits that predate it."""
    bench = bench_module()
    if bench is None:
        return {}
    # every size measured: no step-time limit (its name has changed over the commits); no count
    # of the calls (its own benchmark: benchmarks/calls.py)
    parameters = inspect.signature(bench.run_bench).parameters
    options = {"max_step_ms": None} if "max_step_ms" in parameters else {"rtrl_max_n": None}
    if "count_budget" in parameters:
        options["count_budget"] = 0
    result = bench.run_bench(estimators, sizes, repeat=REPEAT, min_time=MIN_TIME, rounds=ROUNDS,
                             threads=1, **options)
    return {f"{r.estimator}/{r.n}": r.us_per_step for r in result.rows}


def _need(cache: dict[str, Any]) -> None:
    if not cache:
        raise NotImplementedError("this commit has no gradflow bench")


class _Measured:
    """The measurement ``Scaling`` and ``Marginal`` share: the O(P) estimators at
    :data:`MEASURED_SIZES`, RTRL at its own sizes."""

    timeout = 1500

    def setup_cache(self) -> dict[str, Any]:
        cache = _measure(LINEAR, MEASURED_SIZES)
        return {**cache, **_measure(["rtrl"], FIT_SIZES["rtrl"])} if cache else cache


class Scaling(_Measured):
    params: ClassVar[list] = [[*LINEAR, "rtrl"]]
    param_names: ClassVar[list[str]] = ["estimator"]

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


class Marginal(_Measured):
    params: ClassVar[list] = [[name for name in LINEAR if name != "readout-only"]]
    param_names: ClassVar[list[str]] = ["estimator"]

    def setup(self, cache: dict[str, Any], estimator: str) -> None:
        _need(cache)
        marginal_fit = getattr(bench_module(), "marginal_fit", None)
        if marginal_fit is None:
            raise NotImplementedError("this commit's gradflow bench has no marginal fit")
        self.fit = marginal_fit([(n, _params(n), cache[f"{estimator}/{n}"],
                                  cache[f"readout-only/{n}"]) for n in MARGINAL_SIZES]).fit

    def track_marginal_slope(self, cache: dict[str, Any], estimator: str) -> float | None:
        return None if self.fit is None else self.fit.slope

    track_marginal_slope.unit = "exponent"  # type: ignore[attr-defined]

    def track_marginal_exponent(self, cache: dict[str, Any], estimator: str) -> float | None:
        return None if self.fit is None else self.fit.exponent

    track_marginal_exponent.unit = "exponent"  # type: ignore[attr-defined]


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
