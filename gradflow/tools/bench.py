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
The forward-only baseline is the registered estimator that declares ``forward_only`` (the built-in
``readout-only``), whose step is all of the above with a zero recurrent gradient. An estimator with
a ``truncation`` option (``tbptt``) runs with truncation 16 unless told otherwise: it updates every
16 steps, so its blocks are multiples of its update interval and its time per step is amortised.
Estimators that are not ``online`` (``bptt``: it updates only at sequence boundaries) cannot run
on the endless ``add`` stream and are refused.

**How it is timed.** BLAS threads are limited (one by default, as the trainer does: an online step
multiplies small matrices). For each (estimator, n): a trainer is built, run for a warm-up
(≥ 2 update intervals and ≥ 20 ms), then ``repeat`` blocks of s steps are timed with
``time.perf_counter`` (the backend is synchronised before each clock reading, for CuPy), s chosen
so that a block lasts about ``min_time`` seconds and rounded up to a multiple of the update
interval. With ``rounds`` > 1 the whole plan (every estimator at every size) is measured that
many times in turn, each time with a fresh trainer, so that a slow spell of a shared machine does
not fall on one estimator only. The time per step is the **median** over all the blocks (of all
rounds) of block time / s. A size is skipped, with the larger ones of the same estimator, when
one step there takes longer than ``max_step_ms`` (RTRL's O(n²P) beyond n ≈ 128 on a CPU), or when
the estimator's declared state would take more than a quarter of the free memory.

**Memory.** ``state_bytes``: the bytes of the arrays of the estimator's state (what a
checkpoint stores: for RTRL G, for the rank-one family ṽ, w̃ and the filter's diagonals, for TBPTT
its window of caches), after the warm-up; per parameter: divided by P; in floats: further divided
by the dtype's size. ``peak_step_bytes`` (NumPy and array-api-strict only): the largest amount of
memory allocated during one step above what was allocated before it (``tracemalloc``, which sees
NumPy's buffers), i.e. the temporaries of a step.

**Calls.** On the numpy backend, each row also reports the calls one step makes, counted by
:mod:`gradflow.tools.call_count` (see there for what counts as one): ``numpy_calls_per_step``
(NumPy operations on arrays), ``python_calls_per_step`` (Python functions) and
``builtin_calls_per_step`` (built-in functions called from Python). The count is a separate
measurement on two fresh trainers of the row's configuration, made after the row was timed (a
counted step is much slower, and the timed trainer is never counted): s_c = u·max(8, ⌈200/u⌉)
steps (u: the update interval, so that TBPTT's update steps count in their share) after 2u steps
of warm-up, the average per step. Counting runs each trainer's steps at least at their timed
speed t, so it takes at least 2·(s_c + 2u)·t; a row for which that exceeds ``count_budget``
seconds (large n, RTRL) is not counted, and ``calls_note`` says so (nothing is estimated). On the
other backends the counts are ``None``.

**The memory-bandwidth bound.** At every size the bandwidth of the pass a step's arrays go
through is measured: the in-place ``x += y`` over two arrays of P numbers of the run's dtype, in
the backend's namespace, timed like the control below (blocks of about ``min_time``, the median;
same BLAS-thread limit), 3 · itemsize · P bytes per pass (x and y read, x written):
``bandwidth`` in the JSON, ``bandwidth_bytes_per_s`` in each row of that size. The bytes a step
must stream (the definition of the bound):

    bound_bytes = itemsize · (2·P_upd + r·P_rec) + 2·state_bytes

* P_upd = P: θ read and written by the update; P_upd = P_out = P − P_rec for an estimator that
  declares ``forward_only`` (its recurrent part is zero: plain SGD never touches θ_rec);
* r = 1 (the forward step reads θ_rec once), plus 1 if the estimator ``requires`` the model
  primitive ``jvp_state`` or ``vjp`` (it propagates a tangent or a cotangent through the
  recurrent weights, which reads them again);
* state_bytes: the bytes of the estimator's declared state (above), read and written once.

For UORO at n = 1024, B = 1: 8 · (2P + 2P_rec) + 2 · 8 · (n + P_rec + 1) ≈ 6 · 8 · P ≈ 50.5 MB.
``bound_us`` = bound_bytes ÷ bandwidth, the time streaming those bytes takes at that size, and
``ratio_to_bound`` = ``us_per_step`` ÷ ``bound_us``: how far the step is from being limited by
memory alone (what is above 1 is arithmetic, Python dispatch, temporaries and passes beyond the
minimum; RTRL's O(n²P) arithmetic is far above it by construction).

**Scaling.** :func:`gradflow.tools.scaling.fit_scaling` of the median times against P, per
estimator: the plain log–log slope and the exponent k of t = t₀ + c·P^k (sizes n ≥
``fit_min_n``). **The marginal cost** of an estimator is its step time minus the forward-only
step's at the same n, m = t − t_fwd: the forward step, loss, readout and update that every step
makes (most of t₀) cancel, and what remains is the estimator's own work. It is fitted the same
way against P over the sizes n ≥ 128 (:data:`MARGINAL_MIN_N`; and ≥ ``fit_min_n``) at which both
were measured (``fits[estimator].marginal`` in the JSON: the sizes, m, and the fit). It is not
fitted, and its note says why, with fewer than two such sizes or where m ≤ 0 (a logarithm needs
a positive cost); the forward-only estimator has no marginal cost.

**The memory control.** At every size the same timing is applied to one pass that is O(P) by
construction and does nothing else: the optimizer's update θ ← θ − η g of P numbers (SGD, the
update every step above ends with; :data:`CONTROL`). Its fitted exponent is the machine's, not an
algorithm's: where the arrays of the larger sizes no longer fit in the caches, every pass over
them costs more per number, and an exponent fitted across that boundary exceeds 1 for any O(P)
step. An estimator whose exponent is close to the control's scales like a fixed number of passes
over θ.
"""

from __future__ import annotations

import gc
import math
import os
import platform
import statistics
import time
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from gradflow.contracts.backend import Backend, get_backend
from gradflow.contracts.errors import BenchError
from gradflow.contracts.estimator import Estimator
from gradflow.contracts.model import JVP_STATE, VJP, Model
from gradflow.contracts.state import declared_bytes, snapshot
from gradflow.registry.discovery import get_registry
from gradflow.registry.factory import build_estimator, build_model, build_task
from gradflow.runfiles.config import TrainConfig, build_config
from gradflow.tools.call_count import CallCount, count_calls
from gradflow.tools.scaling import ScalingFit, fit_scaling
from gradflow.training.threads import blas_threads
from gradflow.training.trainer import Trainer
from gradflow.version import __version__

DEFAULT_SIZES = (32, 64, 128, 256, 512, 1024, 2048)
#: an estimator whose step takes longer than this (ms, measured after one warm-up interval) is
#: not measured at that size nor at the larger ones (RTRL's O(n²P) above n ≈ 128 on a CPU)
MAX_STEP_MS = 100.0
#: an estimator whose declared state exceeds this fraction of the free memory is not built
MEMORY_FRACTION = 0.25
DEFAULT_TRUNCATION = 16
#: small enough that no benchmarked run diverges over its few thousand steps (a diverged θ would
#: time arithmetic on inf and NaN); the cost of a step does not depend on it
LEARNING_RATE = 1e-5
#: the name of the memory-bound control in rows and fits (see the module docstring)
CONTROL = "control: θ -= ηg"
#: the marginal cost t − t_fwd is fitted over the sizes n ≥ this (module docstring)
MARGINAL_MIN_N = 128
#: a row's calls are not counted when counting would take longer than this (seconds, estimated
#: from the row's timed step; module docstring)
COUNT_BUDGET_S = 3.0
#: a count runs max(COUNT_INTERVALS update intervals, COUNT_MIN_STEPS steps) after
#: COUNT_WARMUP_INTERVALS intervals of warm-up
COUNT_INTERVALS, COUNT_MIN_STEPS, COUNT_WARMUP_INTERVALS = 8, 200, 2
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
    #: steps between two updates of the estimator (TBPTT's truncation; 1 for most)
    update_interval: int = 1
    #: the bytes a step must stream (module docstring: the memory-bandwidth bound)
    bound_bytes: int = 0
    finite: bool = True
    ratio_to_forward: float | None = None
    #: the bandwidth of ``x += y`` at this size, bytes per second
    bandwidth_bytes_per_s: float | None = None
    #: bound_bytes at that bandwidth, µs; and us_per_step over it
    bound_us: float | None = None
    ratio_to_bound: float | None = None
    #: calls per step, counted (numpy backend only; ``None`` with ``calls_note`` saying why)
    numpy_calls_per_step: float | None = None
    python_calls_per_step: float | None = None
    builtin_calls_per_step: float | None = None
    calls_note: str | None = None


@dataclass(frozen=True)
class MarginalFit:
    """The marginal cost m = t − t_fwd of one estimator and its fit against P (module
    docstring). ``fit`` is ``None`` when it cannot be fitted, and ``note`` says why."""

    sizes: list[int]
    P: list[int]
    us: list[float]
    fit: ScalingFit | None
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"sizes": self.sizes, "P": self.P, "us": self.us,
                "fit": None if self.fit is None else self.fit.to_dict(), "note": self.note}


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
    #: the estimator whose step is the forward-only baseline of the ratios
    forward_only: str = ""
    skipped: list[dict[str, Any]] = field(default_factory=list)
    control: list[dict[str, Any]] = field(default_factory=list)
    #: per size: the bandwidth of x += y over P numbers (module docstring)
    bandwidth: list[dict[str, Any]] = field(default_factory=list)
    #: per estimator: the fit of its marginal cost t − t_fwd (module docstring)
    marginal: dict[str, MarginalFit] = field(default_factory=dict)
    #: seconds a row's count of calls may take (0: calls not counted)
    count_budget: float = COUNT_BUDGET_S
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
            "forward_only": self.forward_only, "estimators": self.estimators, "sizes": self.sizes,
            "fit_min_n": self.fit_min_n, "marginal_min_n": MARGINAL_MIN_N,
            "count_budget": self.count_budget,
            "rows": [asdict(r) for r in self.rows],
            "fits": {k: {**v.to_dict(), **({"marginal": self.marginal[k].to_dict()}
                                           if k in self.marginal else {})}
                     for k, v in self.fits.items()},
            "skipped": self.skipped, "control": self.control, "bandwidth": self.bandwidth,
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


def _bench_model(config: TrainConfig) -> Model:
    """The model of a benchmarked configuration, sized for its task (nothing else is built)."""
    be = get_backend(config.run.backend, config.run.dtype)
    task = build_task(config.task.name, config.task.options(), be, config.run.batch, 0).instance
    return build_model(config.model.name, {**config.model.options(), "n_in": task.n_in,
                                           "n_out": task.n_out}, be).instance


def bench_params(n: int) -> tuple[int, int]:
    """(P, P_rec) of the benchmarked model with ``n`` hidden units."""
    layout = _bench_model(bench_config(forward_baseline(), n)).layout
    return layout.size, layout.n_rec


def forward_baseline() -> str:
    """The estimator every ratio is taken against: the first registered estimator that declares
    ``forward_only`` (its step is the forward step and the readout gradient, nothing more)."""
    for info in get_registry().entries["estimator"].values():
        if info.cls.forward_only:
            return info.name
    raise BenchError("no registered estimator declares forward_only = True: there is no "
                     "forward-only step to take the ratios against")


def default_estimators() -> list[str]:
    """Every registered estimator that runs on an endless stream (``online``), the forward-only
    baseline first, then in the order they were registered."""
    online = [i.name for i in get_registry().entries["estimator"].values() if i.cls.online]
    return list(dict.fromkeys([forward_baseline(), *online]))


def _online(estimator: str) -> None:
    info = get_registry().get("estimator", estimator)  # unknown: a PluginError naming the known
    if not info.cls.online:
        raise BenchError(f"estimator {estimator!r} is not online: it returns directions only at "
                         "sequence boundaries, and the benchmark's add task is one endless "
                         "stream (it would never update, and its memory would grow without "
                         "bound)")


def make_trainer(estimator: str, n: int, batch: int = 1, backend: str = "numpy",
                 dtype: str = "float64", truncation: int = DEFAULT_TRUNCATION,
                 seed: int = 0) -> Trainer:
    """A :class:`~gradflow.Trainer` of :func:`bench_config`, not yet stepped."""
    _online(estimator)
    return Trainer(bench_config(estimator, n, batch, backend, dtype, truncation, seed))


def update_interval(trainer: Trainer) -> int:
    """Steps between two updates of the trainer's estimator (TBPTT's k1; 1 for most)."""
    interval = trainer.parts.estimator.update_interval
    if interval is None:
        raise BenchError(f"estimator {trainer.parts.estimator.name!r} has no update interval "
                         "on an endless stream")
    return int(interval)


def free_memory(backend: Backend) -> int | None:
    """Bytes of memory free for new arrays on ``backend``'s device (``None``: unknown)."""
    if backend.name == "cupy":
        import cupy

        return int(cupy.cuda.Device().mem_info[0])
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not on this OS
        return None


def too_big(estimator: str, n: int, batch: int, backend: str, dtype: str,
            truncation: int = DEFAULT_TRUNCATION) -> str | None:
    """Why the estimator is not built at this size (its declared state exceeds
    :data:`MEMORY_FRACTION` of the free memory), or ``None``. Nothing large is allocated."""
    config = bench_config(estimator, n, batch, backend, dtype, truncation)
    model = _bench_model(config)
    free = free_memory(model.backend)
    if free is None:
        return None
    est = build_estimator(estimator, config.estimator.options(), model).instance
    itemsize = array_bytes(model.xp, model.backend.zeros((1,)))
    need = declared_bytes(est.state_fields(), batch, itemsize)
    if need > MEMORY_FRACTION * free:
        return (f"its state ({need / 2**20:,.0f} MiB) exceeds {MEMORY_FRACTION:.0%} of the free "
                f"memory ({free / 2**20:,.0f} MiB)")
    return None


class _Skip(Exception):
    """A size that is not measured (too slow a step), with the reason."""


# -- measuring -----------------------------------------------------------------------------------
def run_steps(trainer: Trainer, steps: int) -> float:
    """Seconds per step over ``steps`` consecutive steps (device synchronised at both ends)."""
    return time_calls(trainer.advance, trainer.parts.backend.synchronize, steps)


def time_calls(advance: Callable[[], object], sync: Callable[[], None], steps: int) -> float:
    """Seconds per call of ``advance`` over ``steps`` calls, ``sync`` at both ends."""
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
    """Bytes of the arrays of the estimator's state (what a checkpoint holds), counted in place
    (a snapshot would copy them)."""
    xp, est = trainer.parts.backend.xp, trainer.parts.estimator
    flat = snapshot(est.state_spec, est.state, lambda x: x)  # the arrays themselves, no copy
    return sum(array_bytes(xp, v) for v in flat.values()
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
            truncation: int = DEFAULT_TRUNCATION, seed: int = 0,
            max_step_ms: float | None = None) -> BenchRow:
    """Time and memory of one (estimator, n) (BLAS threads as the caller set them).

    With ``max_step_ms``, a step slower than that (timed over one update interval, after one
    interval of warm-up) raises ``_Skip`` before the measurement."""
    trainer = make_trainer(estimator, n, batch, backend, dtype, truncation, seed)
    if max_step_ms is not None:
        unit = update_interval(trainer)
        run_steps(trainer, unit)
        ms = run_steps(trainer, unit) * 1e3
        if ms > max_step_ms:
            raise _Skip(f"one step took {ms:,.0f} ms, more than --max-step-ms {max_step_ms:g}")
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
        peak_step_bytes=peak_step_bytes(trainer), update_interval=update_interval(trainer),
        bound_bytes=bound_bytes(type(trainer.parts.estimator), layout.size, layout.n_rec,
                                itemsize, nbytes),
        finite=finite)


def recurrent_reads(cls: type[Estimator]) -> int:
    """r of the bound: the passes over θ_rec of a step of ``cls`` (module docstring)."""
    return 1 + int(bool({JVP_STATE, VJP} & set(cls.requires)))


def bound_bytes(cls: type[Estimator], P: int, P_rec: int, itemsize: int,
                state_bytes: int) -> int:
    """The bytes a step of ``cls`` must stream: itemsize · (2·P_upd + r·P_rec) + 2·state_bytes
    (the definition of the memory-bandwidth bound, module docstring)."""
    p_update = P - P_rec if cls.forward_only else P
    return itemsize * (2 * p_update + recurrent_reads(cls) * P_rec) + 2 * state_bytes


def time_passes(one_pass: Callable[[], object], backend: Backend, repeat: int,
                min_time: float) -> list[float]:
    """Block times (µs per pass) of ``one_pass()``: the number of passes per block calibrated to
    about ``min_time`` seconds, ``repeat`` blocks, ``backend`` synchronised at both ends."""

    def passes(count: int) -> float:
        backend.synchronize()
        start = time.perf_counter()
        for _ in range(count):
            one_pass()
        backend.synchronize()
        return (time.perf_counter() - start) / count

    count = 1
    while passes(count) * count < min(min_time, 0.02):
        count *= 2
    count = max(1, math.ceil(min_time / max(passes(count), 1e-9)))
    return [passes(count) * 1e6 for _ in range(repeat)]


def measure_control(size: int, backend: str = "numpy", dtype: str = "float64", repeat: int = 7,
                    min_time: float = 0.05) -> list[float]:
    """Block times (µs per pass) of the memory control for ``size`` = P numbers: the SGD update
    θ ← θ − η g, alone (see the module docstring)."""
    from gradflow.training.optimizers import create_optimizer

    be = get_backend(backend, dtype)
    theta = be.xp.zeros((size,), dtype=be.dtype)
    g = be.xp.ones((size,), dtype=be.dtype)
    opt = create_optimizer("sgd", be.xp, size, be.dtype)
    return time_passes(lambda: opt.update(theta, g, LEARNING_RATE), be, repeat, min_time)


def measure_bandwidth(size: int, backend: str = "numpy", dtype: str = "float64",
                      repeat: int = 7, min_time: float = 0.05) -> tuple[int, list[float]]:
    """(bytes per pass, block times in µs per pass) of the in-place ``x += y`` over two arrays
    of ``size`` numbers in the backend's namespace: 3 · itemsize · size bytes a pass (x and y
    read, x written; module docstring, the memory-bandwidth bound)."""
    be = get_backend(backend, dtype)
    x = be.xp.zeros((size,), dtype=be.dtype)
    y = be.xp.ones((size,), dtype=be.dtype)

    def add() -> None:
        nonlocal x
        x += y

    return 3 * array_bytes(be.xp, x), time_passes(add, be, repeat, min_time)


# -- calls per step ------------------------------------------------------------------------------
def count_plan(interval: int) -> tuple[int, int]:
    """(steps, warm-up steps) of a count for an estimator updating every ``interval`` steps:
    whole intervals, at least :data:`COUNT_MIN_STEPS` steps and :data:`COUNT_INTERVALS`
    intervals, after :data:`COUNT_WARMUP_INTERVALS` intervals."""
    steps = interval * max(COUNT_INTERVALS, math.ceil(COUNT_MIN_STEPS / interval))
    return steps, COUNT_WARMUP_INTERVALS * interval


def count_step_calls(estimator: str, n: int, batch: int = 1, dtype: str = "float64",
                     truncation: int = DEFAULT_TRUNCATION, seed: int = 0,
                     interval: int | None = None) -> CallCount:
    """The calls per step of the benchmarked configuration on the numpy backend
    (:func:`gradflow.tools.call_count.count_calls` over :func:`count_plan`'s steps; ``interval``:
    the estimator's update interval when the caller knows it)."""

    def make() -> Trainer:
        return make_trainer(estimator, n, batch, "numpy", dtype, truncation, seed)

    steps, warmup = count_plan(update_interval(make()) if interval is None else interval)
    return count_calls(make, steps, warmup)


def add_call_counts(row: BenchRow, backend: str, batch: int, dtype: str, truncation: int,
                    budget: float) -> None:
    """Fill ``row``'s calls per step, or its ``calls_note`` when they are not counted: another
    backend than numpy, no budget, or a count that would take longer than ``budget`` seconds
    (at least 2 × its steps at the row's timed speed; module docstring)."""
    if backend != "numpy":
        row.calls_note = f"counted on the numpy backend only (this run: {backend})"
        return
    if not budget > 0:
        row.calls_note = "not counted (count budget 0)"
        return
    steps, warmup = count_plan(row.update_interval)
    least = 2 * (steps + warmup) * row.us_per_step * 1e-6
    if least > budget:
        row.calls_note = (f"not counted: counting would take at least {least:.1f} s (2 × "
                          f"{steps + warmup} steps of {row.us_per_step:,.0f} µs), more than the "
                          f"count budget of {budget:g} s")
        return
    calls = count_step_calls(row.estimator, row.n, batch, dtype, truncation,
                             interval=row.update_interval)
    gc.collect()  # the counted trainers' memory is returned before the next row is timed
    row.numpy_calls_per_step = calls.numpy_calls
    row.python_calls_per_step = calls.python_calls
    row.builtin_calls_per_step = calls.builtin_calls


# -- the whole benchmark -----------------------------------------------------------------------
def validate_request(estimators: Sequence[str], sizes: Sequence[int], batch: int = 1,
                     repeat: int = 7, min_time: float = 0.05,
                     truncation: int = DEFAULT_TRUNCATION, backend: str = "numpy",
                     dtype: str = "float64", rounds: int = 1,
                     count_budget: float = COUNT_BUDGET_S) -> None:
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
    if not count_budget >= 0:
        raise BenchError(f"count budget must not be negative, got {count_budget}")
    for name in estimators:
        _online(name)
    get_backend(backend, dtype)  # an unusable backend: one clear line before any work


def machine_info(backend: str = "numpy") -> dict[str, Any]:
    """Where the numbers come from: CPU, Python, NumPy, BLAS (and the GPU on CuPy)."""
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


def run_bench(estimators: Sequence[str] | None = None,
              sizes: Sequence[int] = DEFAULT_SIZES, batch: int = 1, backend: str = "numpy",
              dtype: str = "float64", repeat: int = 7, min_time: float = 0.05,
              truncation: int = DEFAULT_TRUNCATION, threads: int | None = 1,
              max_step_ms: float | None = MAX_STEP_MS, fit_min_n: int | None = None,
              rounds: int = 1, count_budget: float = COUNT_BUDGET_S,
              progress: Progress | None = None) -> BenchResult:
    """Measure every estimator at every size; ratios to the forward-only step and to the
    memory-bandwidth bound; calls per step; fits.

    ``estimators`` defaults to :func:`default_estimators`. The forward-only baseline
    (:func:`forward_baseline`) is measured at every size even when it is not in ``estimators``.
    An estimator is not measured at a size, nor at the larger ones, when its declared state
    exceeds :data:`MEMORY_FRACTION` of the free memory or one of its steps takes longer than
    ``max_step_ms`` (``None``: no limit); ``skipped`` says which and why. The fits use the sizes
    n ≥ ``fit_min_n`` (all when ``None``) of each estimator, the marginal fits also n ≥
    :data:`MARGINAL_MIN_N`. Each row's calls are counted (once, after its first timing) when
    that takes at most ``count_budget`` seconds (0: never).
    """
    estimators = list(dict.fromkeys(default_estimators() if estimators is None else estimators))
    sizes = sorted(dict.fromkeys(int(s) for s in sizes))
    validate_request(estimators, sizes, batch, repeat, min_time, truncation, backend, dtype,
                     rounds, count_budget)
    baseline = forward_baseline()
    result = BenchResult(backend=backend, dtype=dtype, batch=batch, threads=threads,
                         repeat=repeat, rounds=rounds, min_time=min_time, truncation=truncation,
                         estimators=estimators, sizes=sizes, fit_min_n=fit_min_n,
                         forward_only=baseline, count_budget=count_budget,
                         machine=machine_info(backend), method=(__doc__ or "").strip())
    plan = [(name, n) for name in dict.fromkeys([baseline, *estimators]) for n in sizes]
    measured: dict[tuple[str, int], list[BenchRow]] = {key: [] for key in plan}
    params = {n: bench_params(n)[0] for n in sizes}
    control: dict[int, list[float]] = {n: [] for n in sizes}
    bandwidth: dict[int, list[float]] = {n: [] for n in sizes}
    pass_bytes: dict[int, int] = {}
    total = rounds * (len(plan) + 2 * len(sizes))
    done = 0
    with blas_threads(threads):
        for r in range(rounds):
            for name, n in list(plan):
                if progress is not None:
                    progress(done, total, f"{name} n={n}")
                done += 1
                if (name, n) not in plan:  # skipped in this round, with a smaller size
                    continue
                reason = too_big(name, n, batch, backend, dtype, truncation) if r == 0 else None
                try:
                    if reason is not None:
                        raise _Skip(reason)
                    row = measure(name, n, batch, backend, dtype, repeat, min_time, truncation,
                                  max_step_ms=max_step_ms if r == 0 else None)
                except _Skip as exc:
                    for m in [m for other, m in plan if other == name and m >= n]:
                        plan.remove((name, m))
                        result.skipped.append({"estimator": name, "n": m, "reason": (
                            str(exc) if m == n else f"skipped with n = {n}: {exc}")})
                    continue
                if r == 0:  # after the timing, on trainers of its own
                    if progress is not None:
                        progress(done, total, f"{name} n={n}: counting calls")
                    add_call_counts(row, backend, batch, dtype, truncation, count_budget)
                measured[name, n].append(row)
            for n in sizes:
                if progress is not None:
                    progress(done, total, f"control n={n}")
                done += 1
                control[n].extend(measure_control(params[n], backend, dtype, repeat, min_time))
                if progress is not None:
                    progress(done, total, f"bandwidth n={n}")
                done += 1
                pass_bytes[n], times = measure_bandwidth(params[n], backend, dtype, repeat,
                                                         min_time)
                bandwidth[n].extend(times)
    if progress is not None:
        progress(total, total, "done")
    for n in sizes:
        us = statistics.median(bandwidth[n])
        result.bandwidth.append({"n": n, "P": params[n], "bytes_per_pass": pass_bytes[n],
                                 "us": us, "bytes_per_s": pass_bytes[n] / (us * 1e-6),
                                 "block_us": bandwidth[n]})
    speed = {b["n"]: b["bytes_per_s"] for b in result.bandwidth}
    result.rows = [merge_rounds(measured[key]) for key in plan]
    for row in result.rows:
        base = result.row(baseline, row.n)
        row.ratio_to_forward = row.us_per_step / base.us_per_step if base else None
        row.bandwidth_bytes_per_s = speed[row.n]
        row.bound_us = row.bound_bytes / speed[row.n] * 1e6
        row.ratio_to_bound = row.us_per_step / row.bound_us
    result.marginal = marginal_fits(result.rows, baseline, fit_min_n)
    if baseline not in estimators:
        result.rows = [r for r in result.rows if r.estimator != baseline]
    result.fits = fit_rows(result.rows, fit_min_n)
    for n in sizes:
        result.control.append({"n": n, "P": params[n], "us": statistics.median(control[n]),
                               "block_us": control[n]})
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


def marginal_fit(points: Sequence[tuple[int, int, float, float]],
                 min_n: int = MARGINAL_MIN_N) -> MarginalFit:
    """The marginal cost of one estimator from its points (n, P, t, t_fwd) (µs per step; t_fwd
    the forward-only step at the same n), fitted against P over the points with n ≥ ``min_n``
    (module docstring)."""
    used = sorted((n, p, t - t_fwd) for n, p, t, t_fwd in points if n >= min_n)
    sizes, ps, us = [u[0] for u in used], [u[1] for u in used], [u[2] for u in used]
    if len(set(ps)) < 2:
        return MarginalFit(sizes, ps, us, None, f"needs two sizes n ≥ {min_n} (this run has "
                                                f"{len(set(ps))})")
    below = [n for n, _, m in used if m <= 0]
    if below:
        return MarginalFit(sizes, ps, us, None, "the step was not slower than the forward-only "
                                                f"step at n = {', '.join(map(str, below))}")
    return MarginalFit(sizes, ps, us, fit_scaling(ps, us))


def marginal_fits(rows: Sequence[BenchRow], baseline: str,
                  fit_min_n: int | None = None) -> dict[str, MarginalFit]:
    """:func:`marginal_fit` of every estimator of ``rows`` against the ``baseline`` rows of the
    same n (sizes n ≥ :data:`MARGINAL_MIN_N` and ≥ ``fit_min_n``); the baseline's own entry is
    empty, with the note that it has no marginal cost."""
    base = {r.n: r.us_per_step for r in rows if r.estimator == baseline}
    min_n = max(MARGINAL_MIN_N, fit_min_n or 0)
    fits = {}
    for name in dict.fromkeys(r.estimator for r in rows):
        if name == baseline:
            fits[name] = MarginalFit([], [], [], None, "n/a: the forward-only step itself")
            continue
        fits[name] = marginal_fit([(r.n, r.P, r.us_per_step, base[r.n]) for r in rows
                                   if r.estimator == name and r.n in base], min_n)
    return fits
