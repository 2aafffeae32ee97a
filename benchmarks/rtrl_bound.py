"""RTRL against its BLAS bound: the step's time over that of the DGEMM J·G it cannot avoid.

    taskset -c 0 python benchmarks/rtrl_bound.py [--sizes 32 64 128] [--repeat 21]
                                [--min-time 0.05] [--clock wall|cpu] [--json out.json]

RTRL's step (Williams & Zipser 1989) is G_t = J_t G_{t−1} + F_t and g_t = Σ_b δ_bᵀ G_t,b: with
the ``rnn`` model and B = 1 its cost is dominated by the product J_t G_{t−1} of an n × n by an
n × P_rec matrix, 2n²P_rec flops. In one process, with one BLAS thread (threadpoolctl, through
the trainer's :func:`gradflow.training.threads.blas_threads`), for each n this script times, in
interleaved blocks of about ``min_time`` seconds each,

(a) ``np.matmul(J, G, out=G2)`` for J (1, n, n), G and G2 (1, n, P_rec): the DGEMM bound;
(b) one full online step of RTRL: :meth:`gradflow.Trainer.advance` on the trainer of
    :func:`gradflow.tools.bench.make_trainer` (task ``add``, model ``rnn``, SGD), warmed up;
(c) the RTRL estimator's :meth:`~gradflow.Estimator.step` alone, on a record of that run;

and reports the median time of each (µs), the ratios (b)/(a) and (c)/(a), and the minor page
faults per step of (a), (b) and (c) over all their blocks (``resource.getrusage``:
``ru_minflt``), which are 0 when nothing of size P is allocated and returned to the system each
step. It sets no allocator option (no ``mallopt``, no ``MALLOC_*`` variable): what it measures is
what a user gets. The blocks are long enough (50 ms: some 60 steps at n = 64, 4 at n = 128) that
the first call after a switch, which finds the caches filled by the other two, is a small part of
each: the medians are those of a steady run, as in training.

**A shared core.** Run it pinned to one core (``taskset -c 0``): the ratios are meaningful only
when (a), (b) and (c) run on the same core under the same conditions. Every block is timed on two
clocks, the wall clock (``time.perf_counter``) and the process's CPU time
(``time.process_time``), and counts the process's involuntary context switches
(``ru_nivcsw``): a block during which another process took the core is *preempted* — its wall
time includes the other process's, and even its CPU time the refilling of caches the other
process evicted. The medians are taken over the blocks that were not preempted when each of (a),
(b) and (c) has at least :data:`MIN_CLEAN` of them (``clean`` in the JSON), else over all
blocks (``clean`` = 0: a busy core; the table says so).

Not an asv benchmark (asv only collects ``time_``, ``peakmem_``, ``track_``... names).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from gradflow import online_step
from gradflow.tools.bench import make_trainer
from gradflow.training.threads import blas_threads

SIZES = (32, 64, 128)
CLOCKS = ("wall", "cpu")
#: warm-up steps of the trainer before anything is timed
WARMUP = 32
#: blocks that were not preempted needed (for each of (a), (b), (c)) to use only those
MIN_CLEAN = 5


@dataclass
class BoundRow:
    """One size and clock: median µs of (a) the DGEMM, (b) the online step, (c) the estimator's
    step; their ratios to (a); minor page faults per call of each; the number of blocks the
    medians are taken over (``clean``: not preempted; 0 when all blocks were used)."""

    n: int
    p_rec: int
    clock: str
    dgemm_us: float
    step_us: float
    estimator_us: float
    step_ratio: float
    estimator_ratio: float
    dgemm_faults: float
    step_faults: float
    estimator_faults: float
    clean: int


def _usage() -> tuple[int, int]:
    """(minor page faults, involuntary context switches) of this process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_minflt, usage.ru_nivcsw


@dataclass
class _Timed:
    """A callable timed in blocks of ``count`` calls: per-call seconds of each block on each
    clock, whether another process preempted the block, and the minor page faults of all
    blocks."""

    fn: Callable[[], Any]
    count: int
    times: dict[str, list[float]] = field(default_factory=lambda: {c: [] for c in CLOCKS})
    preempted: list[bool] = field(default_factory=list)
    faults: int = 0
    calls: int = 0

    @classmethod
    def calibrated(cls, fn: Callable[[], Any], min_time: float) -> _Timed:
        """Blocks of as many calls as take about ``min_time`` seconds (after one warm call)."""
        fn()
        start = time.perf_counter()
        fn()
        once = max(time.perf_counter() - start, 1e-7)
        return cls(fn, max(1, math.ceil(min_time / once)))

    def block(self) -> None:
        fn, count = self.fn, self.count
        faults, switches = _usage()
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(count):
            fn()
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        faults_after, switches_after = _usage()
        self.faults += faults_after - faults
        self.calls += count
        self.preempted.append(switches_after > switches)
        self.times["wall"].append(wall / count)
        self.times["cpu"].append(cpu / count)

    @property
    def clean(self) -> int:
        return self.preempted.count(False)

    def median_us(self, clock: str, clean_only: bool) -> float:
        values = [t for t, p in zip(self.times[clock], self.preempted, strict=True)
                  if not (clean_only and p)]
        return 1e6 * statistics.median(values)

    @property
    def faults_per_call(self) -> float:
        return self.faults / max(self.calls, 1)


def measure(n: int, repeat: int = 21, min_time: float = 0.05, seed: int = 0) -> list[BoundRow]:
    """(a), (b) and (c) at ``n`` hidden units (see the module docstring), interleaved: a row for
    each clock."""
    trainer = make_trainer("rtrl", n, seed=seed)
    for _ in range(WARMUP):
        trainer.advance()
    model, estimator = trainer.parts.model, trainer.parts.estimator
    p_rec = model.layout.n_rec
    # a record of this run, for the estimator's step alone
    record = online_step(model, trainer.loss_fn, trainer.theta, trainer.h,
                         trainer.parts.task.next(), model.initial_state(1)).record
    rng = np.random.default_rng(seed)
    J = rng.standard_normal((1, n, n)) / math.sqrt(n)
    G = rng.standard_normal((1, n, p_rec))
    G2 = np.empty_like(G)

    def dgemm() -> None:
        np.matmul(J, G, out=G2)

    def estimator_step() -> None:
        estimator.step(record)

    timed = [_Timed.calibrated(fn, min_time) for fn in (dgemm, trainer.advance, estimator_step)]
    for _ in range(repeat):
        for t in timed:
            t.block()
    clean = min(t.clean for t in timed)
    clean_only = clean >= MIN_CLEAN
    rows = []
    for clock in CLOCKS:
        a, b, c = (t.median_us(clock, clean_only) for t in timed)
        rows.append(BoundRow(n=n, p_rec=p_rec, clock=clock, dgemm_us=a, step_us=b,
                             estimator_us=c, step_ratio=b / a, estimator_ratio=c / a,
                             dgemm_faults=timed[0].faults_per_call,
                             step_faults=timed[1].faults_per_call,
                             estimator_faults=timed[2].faults_per_call,
                             clean=clean if clean_only else 0))
    return rows


def table(rows: Sequence[BoundRow]) -> list[str]:
    """The Markdown table of docs/estimators/rtrl.md ("Cost")."""
    lines = ["| n | P_rec | (a) DGEMM J·G µs | (b) online step µs | (b)/(a) | "
             "(c) estimator step µs | (c)/(a) | page faults per step (a) / (b) / (c) |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r.n} | {r.p_rec:,} | {r.dgemm_us:,.0f} | {r.step_us:,.0f} | "
                     f"{r.step_ratio:.2f}× | {r.estimator_us:,.0f} | {r.estimator_ratio:.2f}× | "
                     f"{r.dgemm_faults:.1f} / {r.step_faults:.1f} / {r.estimator_faults:.1f} |")
    return lines


def main(argv: Sequence[str] | None = None) -> list[BoundRow]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--repeat", type=int, default=21, help="interleaved blocks of each")
    parser.add_argument("--min-time", type=float, default=0.05, help="seconds per block")
    parser.add_argument("--clock", choices=CLOCKS, default="wall", help="the table's clock")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args(argv)
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    with blas_threads(1):
        rows = [row for n in args.sizes for row in measure(n, args.repeat, args.min_time)]
    shown = [r for r in rows if r.clock == args.clock]
    blocks = ", ".join(f"n = {r.n}: {r.clean} not preempted" if r.clean else
                       f"n = {r.n}: all (busy core)" for r in shown)
    print(f"numpy {np.__version__}, one BLAS thread, CPUs {cpus}; {args.repeat} blocks of "
          f"≥ {args.min_time:g} s each; medians of the {args.clock} clock over blocks ({blocks})")
    print("\n".join(table(shown)))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump([asdict(r) for r in rows], fh, indent=1)
    return rows


if __name__ == "__main__":
    main()
