"""The cost of one online step, by estimator and model size: what ``gradflow bench`` measures.

**What a step is.** :meth:`gradflow.Trainer.advance`, unchanged: the task's next inputs and
targets, the forward step h_t = f(h_{t−1}, x_t), the readout and the loss, the readout VJP, the
estimator's step, the clipping of its direction and the optimizer's update of θ. The run is the
``add`` task (two inputs, two classes, cross-entropy) on the ``rnn`` model with n hidden units,
P = n² + 5n + 2 parameters (P_rec = n² + 3n of them recurrent); B independent streams; plain SGD
with a constant learning rate of 10⁻⁵ for every estimator (the same optimizer everywhere, so that a
ratio between two estimators isolates the estimators; small, so that no run diverges while it is
timed), plus each estimator's own default clipping (the rank-one estimators clip their recurrent
part: that variance control is part of their step). A row records whether θ was still finite
after its timing (``finite``).
The forward-only baseline is the ``readout-only`` estimator, whose step is all of the above with a
zero recurrent gradient. ``tbptt`` runs with truncation 16 unless told otherwise: it updates every
16 steps, so its blocks are multiples of 16 steps and its time per step is amortised.

**How it is timed.** BLAS threads are limited (one by default, as the trainer does: an online step
multiplies small matrices). For each (estimator, n): a trainer is built, run for a warm-up
(≥ 2 update intervals and ≥ 20 ms), then ``repeat`` blocks of s steps are timed with
``time.perf_counter`` (the backend is synchronised before each clock reading, for CuPy), s chosen
so that a block lasts about ``min_time`` seconds and rounded up to a multiple of the update
interval. With ``rounds`` > 1 the whole plan (every estimator at every size) is measured that
many times in turn, each time with a fresh trainer, so that a slow spell of a shared machine does
not fall on one estimator only. The time per step is the **median** over all the blocks (of all
rounds) of block time / s.

**Memory.** ``state_bytes``: the bytes of the arrays of the estimator's :meth:`state_dict` (what a
checkpoint stores: for RTRL G, for the rank-one family ṽ, w̃ and the filter's diagonals, for TBPTT
its window of caches), after the warm-up; per parameter: divided by P; in floats: further divided
by the dtype's size. ``peak_step_bytes`` (NumPy and array-api-strict only): the largest amount of
memory allocated during one step above what was allocated before it (``tracemalloc``, which sees
NumPy's buffers), i.e. the temporaries of a step.

**Scaling.** :func:`gradflow.tools.scaling.fit_scaling` of the median times against P, per
estimator: the plain log–log slope and the exponent k of t = t₀ + c·P^k.

**The memory control.** At every size the same timing is applied to one pass that is O(P) by
construction and does nothing else: the optimizer's update θ ← θ − η g of P numbers (SGD, the
update every step above ends with; :data:`CONTROL`). Its fitted exponent is the machine's, not an
algorithm's: where the arrays of the larger sizes no longer fit in the caches, every pass over
them costs more per number, and an exponent fitted across that boundary exceeds 1 for any O(P)
step. An estimator whose exponent is close to the control's scales like a fixed number of passes
over θ.
"""

from __future__ import annotations

import math
import platform
import statistics
import time
import tracemalloc
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

from gradflow.contracts.backend import get_backend
from gradflow.contracts.errors import BenchError
from gradflow.registry.discovery import get_registry
from gradflow.runfiles.config import TrainConfig, build_config
from gradflow.tools.scaling import ScalingFit, fit_scaling
from gradflow.training.trainer import Trainer
from gradflow.version import __version__

#: the forward-only baseline every ratio is taken against
FORWARD_ONLY = "readout-only"
#: built-in estimators that make sense on an endless stream, in table order
DEFAULT_ESTIMATORS = ("readout-only", "tbptt", "uoro", "nobacktrack", "kalman-nobacktrack",
                      "rtrl")
DEFAULT_SIZES = (32, 64, 128, 256, 512, 1024)
#: RTRL costs O(n² P) time and O(n P) memory per stream: larger sizes are skipped by default
RTRL_MAX_N = 128
DEFAULT_TRUNCATION = 16
#: small enough that no benchmarked run diverges over its few thousand steps (a diverged θ would
#: time arithmetic on inf and NaN); the cost of a step does not depend on it
LEARNING_RATE = 1e-5
#: the name of the memory-bound control in rows and fits (see the module docstring)
CONTROL = "control: θ -= ηg"
#: estimators that cannot run on an endless stream, with the reason
NOT_ONLINE = {
    "bptt": "bptt backpropagates whole sequences and updates only when every stream ends one; "
            "the add task is one endless stream, so it would never return a direction and its "
            "memory would grow without bound (benchmark tbptt instead)",
}

Progress = Callable[[int, int, str], None]


@dataclass
class BenchRow:
    """One (estimator, n) measurement. Times in microseconds per online step."""

    estimator: str
    n: int
    P: int
    P_rec: int
    us_per_step: float
    us_min: float
    us_max: float
    steps_per_block: int
    blocks: int
    block_us: list[float]
    state_bytes: int
    state_bytes_per_param: float
    state_floats_per_param: float
    peak_step_bytes: int | None
    finite: bool = True
    ratio_to_forward: float | None = None


@dataclass
class BenchResult:
    """Everything ``gradflow bench`` reports (``to_dict`` is its ``--json``)."""

    backend: str
    dtype: str
    batch: int
    threads: int | None
    repeat: int
    rounds: int
    min_time: float
    truncation: int
    estimators: list[str]
    sizes: list[int]
    rows: list[BenchRow] = field(default_factory=list)
    fits: dict[str, ScalingFit] = field(default_factory=dict)
    fit_min_n: int | None = None
    skipped: list[dict[str, Any]] = field(default_factory=list)
    control: list[dict[str, Any]] = field(default_factory=list)
    machine: dict[str, Any] = field(default_factory=dict)
    method: str = ""

    def row(self, estimator: str, n: int) -> BenchRow | None:
        for r in self.rows:
            if r.estimator == estimator and r.n == n:
                return r
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "gradflow_version": __version__,
            "backend": self.backend, "dtype": self.dtype, "batch": self.batch,
            "threads": self.threads, "repeat": self.repeat, "rounds": self.rounds,
            "min_time": self.min_time,
            "truncation": self.truncation, "task": "add", "model": "rnn",
            "optimizer": f"sgd, constant learning rate {LEARNING_RATE:g}, estimator's clipping",
            "forward_only": FORWARD_ONLY, "estimators": self.estimators, "sizes": self.sizes,
            "fit_min_n": self.fit_min_n,
            "rows": [asdict(r) for r in self.rows],
            "fits": {k: v.to_dict() for k, v in self.fits.items()},
            "skipped": self.skipped, "control": self.control,
            "machine": self.machine, "method": self.method,
        }


# -- building a benchmarked run --------------------------------------------------------------
def bench_config(estimator: str, n: int, batch: int = 1, backend: str = "numpy",
                 dtype: str = "float64", truncation: int = DEFAULT_TRUNCATION,
                 seed: int = 0) -> TrainConfig:
    """The configuration a benchmarked step runs (see the module docstring)."""
    sets = [
        f'run.backend="{backend}"', f'run.dtype="{dtype}"', f"run.batch={int(batch)}",
        f"run.seed={int(seed)}", 'model.name="rnn"', f"model.n_hidden={int(n)}",
        'task.name="add"', f'estimator.name="{estimator}"', 'optimizer.name="sgd"',
        f"optimizer.lr={LEARNING_RATE}", 'optimizer.schedule="constant"',
    ]
    if _takes_truncation(estimator):
        sets.append(f"estimator.truncation={int(truncation)}")
    return build_config(sets=sets)


def _takes_truncation(estimator: str) -> bool:
    info = get_registry().get("estimator", estimator)
    return "truncation" in info.cls.Options.model_fields


def make_trainer(estimator: str, n: int, batch: int = 1, backend: str = "numpy",
                 dtype: str = "float64", truncation: int = DEFAULT_TRUNCATION,
                 seed: int = 0) -> Trainer:
    """A :class:`~gradflow.Trainer` of :func:`bench_config`, not yet stepped."""
    if estimator in NOT_ONLINE:
        raise BenchError(f"estimator {estimator!r} cannot be benchmarked online: "
                         f"{NOT_ONLINE[estimator]}")
    return Trainer(bench_config(estimator, n, batch, backend, dtype, truncation, seed))


def update_interval(trainer: Trainer) -> int:
    """Steps between two updates of the trainer's estimator (TBPTT's k1; 1 otherwise)."""
    return int(getattr(trainer.parts.estimator, "interval", 1) or 1)


@contextmanager
def blas_threads(threads: int | None) -> Any:
    """Limit the BLAS thread pools to ``threads`` (``None``: leave them as they are)."""
    if threads is None:
        yield
        return
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=threads, user_api="blas"):
        yield


# -- measuring -----------------------------------------------------------------------------------
def run_steps(trainer: Trainer, steps: int) -> float:
    """Seconds per step over ``steps`` consecutive steps (device synchronised at both ends)."""
    sync, advance = trainer.parts.backend.synchronize, trainer.advance
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        advance()
    sync()
    return (time.perf_counter() - start) / steps


def calibrate(trainer: Trainer, min_time: float, warmup: float = 0.02) -> int:
    """Warm the trainer up and return a block length: about ``min_time`` seconds of steps, a
    multiple of the estimator's update interval (at least one interval)."""
    unit = update_interval(trainer)
    run_steps(trainer, 2 * unit)
    steps, spent = unit, 0.0
    while True:
        per_step = run_steps(trainer, steps)
        spent += per_step * steps
        if per_step * steps >= min(min_time, warmup) and spent >= warmup:
            break
        steps *= 2
    block = max(unit, math.ceil(min_time / max(per_step, 1e-9)))
    return unit * math.ceil(block / unit)


def time_per_step(trainer: Trainer, steps: int, repeat: int) -> list[float]:
    """``repeat`` block times, in seconds per step."""
    return [run_steps(trainer, steps) for _ in range(repeat)]


def array_bytes(xp: Any, x: Any) -> int:
    """Bytes of an array of any array-API namespace (size × item size)."""
    count = math.prod(int(s) for s in x.shape)
    if xp.isdtype(x.dtype, "bool"):
        item = 1
    elif xp.isdtype(x.dtype, "integral"):
        item = xp.iinfo(x.dtype).bits // 8
    else:
        item = xp.finfo(x.dtype).bits // 8
    return count * item


def state_bytes(trainer: Trainer) -> int:
    """Bytes of the arrays in the estimator's state dict (what a checkpoint holds)."""
    xp = trainer.parts.backend.xp
    return sum(array_bytes(xp, v) for v in trainer.parts.estimator.state_dict().values()
               if hasattr(v, "shape") and hasattr(v, "dtype"))


def peak_step_bytes(trainer: Trainer) -> int | None:
    """Peak memory allocated by one step above what was allocated before it (NumPy buffers,
    through ``tracemalloc``); ``None`` on CuPy, whose device memory it cannot see."""
    if trainer.parts.backend.name == "cupy":
        return None
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    try:
        worst = 0
        for _ in range(update_interval(trainer)):  # a whole TBPTT window: its update step too
            tracemalloc.reset_peak()
            before, _ = tracemalloc.get_traced_memory()
            trainer.advance()
            _, peak = tracemalloc.get_traced_memory()
            worst = max(worst, peak - before)
        return worst
    finally:
        if not was_tracing:
            tracemalloc.stop()


def measure(estimator: str, n: int, batch: int = 1, backend: str = "numpy",
            dtype: str = "float64", repeat: int = 7, min_time: float = 0.05,
            truncation: int = DEFAULT_TRUNCATION, seed: int = 0) -> BenchRow:
    """Time and memory of one (estimator, n) (BLAS threads as the caller set them)."""
    trainer = make_trainer(estimator, n, batch, backend, dtype, truncation, seed)
    steps = calibrate(trainer, min_time)
    times = time_per_step(trainer, steps, repeat)
    xp = trainer.parts.backend.xp
    finite = bool(xp.all(xp.isfinite(trainer.theta)))  # after the timing: one read-back
    layout = trainer.parts.model.layout
    nbytes = state_bytes(trainer)
    itemsize = 4 if dtype == "float32" else 8
    return BenchRow(
        estimator=estimator, n=int(n), P=layout.size, P_rec=layout.n_rec,
        us_per_step=statistics.median(times) * 1e6, us_min=min(times) * 1e6,
        us_max=max(times) * 1e6, steps_per_block=steps, blocks=repeat,
        block_us=[t * 1e6 for t in times],
        state_bytes=nbytes, state_bytes_per_param=nbytes / layout.size,
        state_floats_per_param=nbytes / layout.size / itemsize,
        peak_step_bytes=peak_step_bytes(trainer), finite=finite)


def measure_control(size: int, backend: str = "numpy", dtype: str = "float64", repeat: int = 7,
                    min_time: float = 0.05) -> list[float]:
    """Block times (µs per pass) of the memory control for ``size`` = P numbers: the SGD update
    θ ← θ − η g, alone (see the module docstring)."""
    from gradflow.training.optimizers import create_optimizer

    be = get_backend(backend, dtype)
    theta = be.xp.zeros((size,), dtype=be.dtype)
    g = be.xp.ones((size,), dtype=be.dtype)
    opt = create_optimizer("sgd", be.xp, size, be.dtype)

    def passes(count: int) -> float:
        be.synchronize()
        start = time.perf_counter()
        for _ in range(count):
            opt.update(theta, g, LEARNING_RATE)
        be.synchronize()
        return (time.perf_counter() - start) / count

    count = 1
    while passes(count) * count < min(min_time, 0.02):
        count *= 2
    count = max(1, math.ceil(min_time / max(passes(count), 1e-9)))
    return [passes(count) * 1e6 for _ in range(repeat)]


# -- the whole benchmark -----------------------------------------------------------------------
def validate_request(estimators: Sequence[str], sizes: Sequence[int], batch: int = 1,
                     repeat: int = 7, min_time: float = 0.05,
                     truncation: int = DEFAULT_TRUNCATION, backend: str = "numpy",
                     dtype: str = "float64", rounds: int = 1) -> None:
    """Raise a one-line :class:`BenchError` (or the registry's / backend's error) for a request
    that cannot run, before any measurement."""
    if not estimators:
        raise BenchError("no estimator to benchmark")
    if not sizes:
        raise BenchError("no size to benchmark")
    bad = [s for s in sizes if int(s) < 1]
    if bad:
        raise BenchError(f"sizes must be positive numbers of hidden units, got {bad}")
    if batch < 1:
        raise BenchError(f"batch must be at least 1, got {batch}")
    if repeat < 1:
        raise BenchError(f"repeat must be at least 1, got {repeat}")
    if rounds < 1:
        raise BenchError(f"rounds must be at least 1, got {rounds}")
    if not min_time > 0:
        raise BenchError(f"min-time must be positive, got {min_time}")
    if truncation < 1:
        raise BenchError(f"truncation must be at least 1, got {truncation}")
    registry = get_registry()
    for name in estimators:
        if name in NOT_ONLINE:
            raise BenchError(f"estimator {name!r} cannot be benchmarked online: "
                             f"{NOT_ONLINE[name]}")
        registry.get("estimator", name)  # unknown names: a PluginError listing the known ones
    get_backend(backend, dtype)  # an unusable backend: one clear line before any work


def machine_info(backend: str = "numpy") -> dict[str, Any]:
    """Where the numbers come from: CPU, Python, NumPy, BLAS (and the GPU on CuPy)."""
    import os

    import numpy as np

    info: dict[str, Any] = {
        "platform": platform.platform(), "machine": platform.machine(),
        "cpu": _cpu_name(), "cpu_count": os.cpu_count(),
        "python": platform.python_version(), "numpy": np.__version__,
    }
    try:
        from threadpoolctl import threadpool_info

        info["blas"] = [{k: lib.get(k) for k in ("internal_api", "version", "num_threads",
                                                  "architecture")}
                        for lib in threadpool_info() if lib.get("user_api") == "blas"]
    except Exception:  # pragma: no cover - threadpoolctl is a dependency
        info["blas"] = []
    if backend == "cupy":
        try:
            import cupy

            props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
            name = props["name"]
            info["gpu"] = name.decode() if isinstance(name, bytes) else str(name)
            info["cupy"] = cupy.__version__
        except Exception as exc:  # pragma: no cover - needs a GPU
            info["gpu"] = f"unknown ({type(exc).__name__})"
    return info


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def run_bench(estimators: Sequence[str] = DEFAULT_ESTIMATORS,
              sizes: Sequence[int] = DEFAULT_SIZES, batch: int = 1, backend: str = "numpy",
              dtype: str = "float64", repeat: int = 7, min_time: float = 0.05,
              truncation: int = DEFAULT_TRUNCATION, threads: int | None = 1,
              rtrl_max_n: int | None = RTRL_MAX_N, fit_min_n: int | None = None,
              rounds: int = 1, progress: Progress | None = None) -> BenchResult:
    """Measure every estimator at every size; ratios to the forward-only step; fits.

    The forward-only baseline (``readout-only``) is measured at every size even when it is not
    in ``estimators``. ``rtrl`` is skipped above ``rtrl_max_n`` hidden units (``None``: never).
    The fits use the sizes n ≥ ``fit_min_n`` (all when ``None``) of each estimator.
    """
    estimators = list(dict.fromkeys(estimators))
    sizes = sorted(dict.fromkeys(int(s) for s in sizes))
    validate_request(estimators, sizes, batch, repeat, min_time, truncation, backend, dtype,
                     rounds)
    result = BenchResult(backend=backend, dtype=dtype, batch=batch, threads=threads,
                         repeat=repeat, rounds=rounds, min_time=min_time, truncation=truncation,
                         estimators=estimators, sizes=sizes, fit_min_n=fit_min_n,
                         machine=machine_info(backend), method=(__doc__ or "").strip())
    names = list(dict.fromkeys([FORWARD_ONLY, *estimators]))
    plan = []
    for name in names:
        for n in sizes:
            if name == "rtrl" and rtrl_max_n is not None and n > rtrl_max_n:
                result.skipped.append({"estimator": name, "n": n,
                                       "reason": f"rtrl above n = {rtrl_max_n} (O(n²P) time, "
                                       "O(nP) memory per stream; see --rtrl-max-n)"})
                continue
            plan.append((name, n))
    measured: dict[tuple[str, int], list[BenchRow]] = {key: [] for key in plan}
    control: dict[int, list[float]] = {n: [] for n in sizes}
    per_round = len(plan) + len(sizes)
    total = rounds * per_round
    with blas_threads(threads):
        for r in range(rounds):
            for i, (name, n) in enumerate(plan):
                if progress is not None:
                    progress(r * per_round + i, total, f"{name} n={n}")
                measured[name, n].append(measure(name, n, batch, backend, dtype, repeat,
                                                 min_time, truncation))
            for i, n in enumerate(sizes):
                if progress is not None:
                    progress(r * per_round + len(plan) + i, total, f"control n={n}")
                # the forward-only step runs at every size: its row knows P
                size = measured[FORWARD_ONLY, n][0].P
                control[n].extend(measure_control(size, backend, dtype, repeat, min_time))
    if progress is not None:
        progress(total, total, "done")
    result.rows = [merge_rounds(measured[key]) for key in plan]
    for row in result.rows:
        base = result.row(FORWARD_ONLY, row.n)
        row.ratio_to_forward = row.us_per_step / base.us_per_step if base else None
    if FORWARD_ONLY not in estimators:
        result.rows = [r for r in result.rows if r.estimator != FORWARD_ONLY]
    result.fits = fit_rows(result.rows, fit_min_n)
    for n in sizes:
        result.control.append({"n": n, "P": measured[FORWARD_ONLY, n][0].P,
                               "us": statistics.median(control[n]), "block_us": control[n]})
    used = [c for c in result.control if fit_min_n is None or c["n"] >= fit_min_n]
    if len({c["P"] for c in used}) >= 2:
        result.fits[CONTROL] = fit_scaling([c["P"] for c in used], [c["us"] for c in used])
    return result


def merge_rounds(rows: Sequence[BenchRow]) -> BenchRow:
    """One row from the rounds of one (estimator, n): the median over all their blocks (memory
    from the first round: it does not depend on timing)."""
    first = rows[0]
    blocks = [t for row in rows for t in row.block_us]
    return BenchRow(**{**asdict(first), "us_per_step": statistics.median(blocks),
                       "us_min": min(blocks), "us_max": max(blocks), "blocks": len(blocks),
                       "block_us": blocks, "finite": all(row.finite for row in rows)})


def fit_rows(rows: Sequence[BenchRow], fit_min_n: int | None = None) -> dict[str, ScalingFit]:
    """:func:`~gradflow.tools.scaling.fit_scaling` of µs per step against P for each estimator
    with at least two sizes (n ≥ ``fit_min_n``)."""
    fits: dict[str, ScalingFit] = {}
    for name in dict.fromkeys(r.estimator for r in rows):
        mine = [r for r in rows if r.estimator == name and (fit_min_n is None or r.n >= fit_min_n)]
        if len({r.P for r in mine}) >= 2:
            fits[name] = fit_scaling([r.P for r in mine], [r.us_per_step for r in mine])
    return fits
