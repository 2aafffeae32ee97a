"""``gradflow bench``: µs per online step by estimator and size, the ratio to a forward-only step,
the ratio to the step's memory-bandwidth bound, its NumPy and Python calls, the estimator's state
memory and the fitted scaling exponents (of the step time and of its marginal cost), on the
user's own backend.

The measuring is :func:`gradflow.tools.bench.run_bench` (gradflow/tools/bench.py, where the method
is written down); this module parses options and prints rich tables (or JSON).
"""

from __future__ import annotations

import json
import math
from typing import Annotated, Any

import typer

from gradflow.contracts.errors import BenchError
from gradflow.tools.bench import (
    CONTROL,
    COUNT_BUDGET_S,
    DEFAULT_SIZES,
    DEFAULT_TRUNCATION,
    MARGINAL_MIN_N,
    MAX_STEP_MS,
    BenchResult,
    default_estimators,
    run_bench,
    validate_request,
)


def parse_list(text: str, what: str) -> list[str]:
    """``"a, b,c"`` -> ``["a", "b", "c"]`` (one-line error when empty)."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise BenchError(f"--{what} needs a comma-separated list, got {text!r}")
    return items


def parse_sizes(text: str) -> list[int]:
    """``"64,128"`` -> ``[64, 128]``: positive integers (one-line error otherwise)."""
    sizes = []
    for item in parse_list(text, "sizes"):
        try:
            value = int(item)
        except ValueError:
            raise BenchError(f"--sizes: {item!r} is not a whole number of hidden units") from None
        if value < 1:
            raise BenchError(f"--sizes: {value} is not a positive number of hidden units")
        sizes.append(value)
    return sizes


def _mib(x: float | None) -> str:
    return "-" if x is None else f"{x / 2**20:.3g}"


def _num(x: float | None, spec: str = ".3g") -> str:
    if x is None or not math.isfinite(x):
        return "-"
    return format(x, spec)


def _us(x: float | None) -> str:
    """µs with a decimal below 100, without one above (a column stays narrow at large n)."""
    return _num(x, ",.1f" if x is not None and x < 100 else ",.0f")


def _table(title: str, columns: tuple[str, ...], names: list[str]) -> Any:
    """A table whose first column holds estimator names, never wrapped nor shortened (at least
    as wide as the longest of ``names``); the other columns right-aligned, folded if they must."""
    from rich import box
    from rich.table import Table

    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False,
                  collapse_padding=True)
    table.add_column(columns[0], justify="left", no_wrap=True,
                     min_width=max(len(name) for name in [columns[0], *names]))
    for col in columns[1:]:
        table.add_column(col, justify="right", overflow="fold")
    return table


def print_tables(result: BenchResult) -> None:
    from rich.console import Console

    console = Console()
    names = [row.estimator for row in result.rows]
    title = (f"one online step (task add, model rnn, B = {result.batch}, {result.backend}/"
             f"{result.dtype}, BLAS threads {result.threads or 'default'}; median of "
             f"{result.repeat * result.rounds} blocks)")
    table = _table(title, ("estimator", "n", "P", "µs/step", "× fwd", "bound µs", "× bound",
                           "NumPy\ncalls"), names)
    for row in result.rows:
        table.add_row(row.estimator, str(row.n), f"{row.P:,}", _us(row.us_per_step),
                      _num(row.ratio_to_forward, ".2f"), _us(row.bound_us),
                      _num(row.ratio_to_bound, ".1f"), _num(row.numpy_calls_per_step, ",.0f"))
    console.print(table)
    console.print(f"× fwd: the step time over the forward-only step ({result.forward_only}) at "
                  "the same n. bound: the bytes the step must stream, itemsize · (2·P_upd + "
                  "r·P_rec) + 2·state, at the bandwidth of x += y over P numbers (× bound: the "
                  "step time over it). NumPy calls: per step, counted (gradflow.tools.bench "
                  "explains all three).")
    if result.bandwidth:
        console.print("bandwidth of x += y: " + ", ".join(
            f"n={b['n']} {b['bytes_per_s'] / 1e9:.3g} GB/s" for b in result.bandwidth))
    memory = _table("memory of a step", ("estimator", "n", "state MiB", "B/param",
                                         "floats/param", "peak MiB", "Python\ncalls"), names)
    for row in result.rows:
        memory.add_row(row.estimator, str(row.n), _mib(row.state_bytes),
                       _num(row.state_bytes_per_param, ".2f"),
                       _num(row.state_floats_per_param, ".2f"), _mib(row.peak_step_bytes),
                       _num(row.python_calls_per_step, ",.0f"))
    console.print(memory)
    console.print("state: the estimator's state; peak: the most a step allocates; Python "
                  "calls: Python functions called per step")
    if result.fits:
        print_fits(console, result)
    for row in result.rows:
        if not row.finite:
            console.print(f"warning: θ was not finite after timing {row.estimator} n={row.n}: "
                          "the run diverged and its time is that of inf/NaN arithmetic")
    for skip in result.skipped:
        console.print(f"skipped {skip['estimator']} n={skip['n']}: {skip['reason']}")
    if result.backend != "numpy":
        console.print(f"calls are counted on the numpy backend only (this run: "
                      f"{result.backend})")
        return
    for row in result.rows:
        if row.calls_note:
            console.print(f"calls of {row.estimator} n={row.n}: {row.calls_note}")


def print_fits(console: Any, result: BenchResult) -> None:
    """The fitted exponents of the step time and of the marginal cost, per estimator."""
    fits = _table("scaling of the step time t with P (least squares)",
                  ("estimator", "sizes n", "log-log\nslope", "k", "t₀ µs", "Δ sizes",
                   "Δ slope", "Δ k"), list(result.fits))
    for name, fit in result.fits.items():
        rows = result.control if name == CONTROL else [
            {"n": r.n} for r in result.rows if r.estimator == name]
        ns = [r["n"] for r in rows if result.fit_min_n is None or r["n"] >= result.fit_min_n]
        marginal = result.marginal.get(name)
        if marginal is None:
            cells = ("", "", "")
        elif name == result.forward_only:
            cells = ("n/a", "n/a", "n/a")
        elif marginal.fit is None:  # its note says why
            cells = (_span(marginal.sizes), "-", "-")
        else:
            cells = (_span(marginal.sizes), _num(marginal.fit.slope, ".3f"),
                     _num(marginal.fit.exponent, ".3f"))
        fits.add_row(name, _span(ns), _num(fit.slope, ".3f"), _num(fit.exponent, ".3f"),
                     _num(fit.overhead, ",.1f"), *cells)
    console.print(fits)
    console.print("k: the exponent of t = t₀ + c·P^k. Δ: the same fits of the marginal cost "
                  "t − t_fwd, the step time beyond the forward-only step's, over n ≥ "
                  f"{max(MARGINAL_MIN_N, result.fit_min_n or 0)}. {CONTROL}: the optimizer's "
                  "update of P numbers alone, O(P) by construction: its exponent is the "
                  "machine's memory hierarchy")
    for name, marginal in result.marginal.items():
        if marginal.note and name != result.forward_only and name in result.fits:
            console.print(f"marginal {name}: {marginal.note}")


def _span(sizes: list[int]) -> str:
    if not sizes:
        return "-"
    return str(sizes[0]) if min(sizes) == max(sizes) else f"{min(sizes)}…{max(sizes)}"


def bench(
    estimators: Annotated[str | None, typer.Option(
        "--estimators", "-e", metavar="NAMES",
        help="comma-separated estimators (default: every registered estimator that runs online, "
             "i.e. all but bptt)")] = None,
    sizes: Annotated[str, typer.Option(
        "--sizes", "-n", metavar="SIZES",
        help="comma-separated numbers of hidden units n (P = n² + 5n + 2)")]
        = ",".join(str(s) for s in DEFAULT_SIZES),
    batch: Annotated[int, typer.Option(
        "--batch", "-b", metavar="B", help="independent streams B")] = 1,
    backend: Annotated[str, typer.Option(
        metavar="NAME", help="numpy, cupy or array_api_strict")] = "numpy",
    dtype: Annotated[str, typer.Option(metavar="DTYPE", help="float64 or float32")] = "float64",
    repeat: Annotated[int, typer.Option(
        metavar="N", help="timed blocks per measurement (the median is reported)")] = 7,
    rounds: Annotated[int, typer.Option(
        metavar="N", help="measure the whole plan this many times in turn (the median is over all "
             "blocks): steadier numbers on a shared machine")] = 1,
    min_time: Annotated[float, typer.Option(
        "--min-time", metavar="SECONDS",
        help="seconds per timed block (its number of steps is calibrated)")] = 0.05,
    truncation: Annotated[int, typer.Option(
        metavar="K", help="tbptt's truncation (and update interval)")] = DEFAULT_TRUNCATION,
    max_step_ms: Annotated[float, typer.Option(
        "--max-step-ms", metavar="MS",
        help="skip an estimator at the sizes where one step takes longer than this, in "
             "milliseconds (0: no limit)")] = MAX_STEP_MS,
    fit_min_n: Annotated[int, typer.Option(
        "--fit-min-n", metavar="N", help="fit the exponents on sizes n ≥ this (0: all sizes)")] = 0,
    threads: Annotated[int, typer.Option(
        metavar="N", help="BLAS threads while timing (0: the library's default)")] = 1,
    count_budget: Annotated[float, typer.Option(
        "--count-budget", metavar="SECONDS",
        help="count a row's NumPy and Python calls per step (numpy backend, after its timing) "
             "unless that would take longer than this (0: do not count)")] = COUNT_BUDGET_S,
    replicas: Annotated[int, typer.Option(
        "--replicas", "-R", metavar="R",
        help="instead: time R replicated runs (run.replicas) against one run, per estimator and "
             "size: µs per step, per replica, and the throughput ratio")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Time one online step (task → forward → loss → estimator → clip → optimizer) for each
    estimator and model size; print µs per step, the ratio to the forward-only step (the
    estimator that declares forward_only: readout-only), the ratio to the time streaming the
    step's bytes takes at the measured bandwidth, the NumPy and Python calls per step, the
    estimator's state memory and the fitted scaling exponents of the step time and of the cost
    beyond the forward-only step.

    Example: gradflow bench -e uoro,tbptt -n 64,256,1024 --dtype float32 --json
    """
    result_args = dict(
        estimators=None if estimators is None else parse_list(estimators, "estimators"),
        sizes=parse_sizes(sizes),
        batch=batch, backend=backend, dtype=dtype, repeat=repeat, rounds=rounds,
        min_time=min_time,
        truncation=truncation, threads=threads or None, max_step_ms=max_step_ms or None,
        fit_min_n=fit_min_n or None, count_budget=count_budget)
    if max_step_ms < 0 or fit_min_n < 0 or threads < 0 or count_budget < 0:
        raise BenchError("--max-step-ms, --fit-min-n, --threads and --count-budget must not be "
                         "negative")
    validate_request(result_args["estimators"] or default_estimators(), result_args["sizes"],
                     batch, repeat, min_time, truncation, backend, dtype, rounds, count_budget)
    if replicas:
        _bench_replicas(replicas, result_args, as_json)
        return
    if as_json:
        typer.echo(json.dumps(run_bench(**result_args).to_dict(), indent=2))
        return
    from rich.console import Console
    from rich.progress import Progress

    with Progress(console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("benchmarking", total=None)

        def advance(done: int, total: int, label: str) -> None:
            bar.update(task, completed=done, total=total, description=label)

        result = run_bench(**result_args, progress=advance)
    print_tables(result)


def _bench_replicas(replicas: int, args: dict[str, Any], as_json: bool) -> None:
    """``--replicas R``: each estimator and size, R replicas against one run (see
    :mod:`gradflow.tools.replica_bench`)."""
    from gradflow.tools.replica_bench import measure_replicas
    from gradflow.training.threads import blas_threads

    if replicas < 2:
        raise BenchError(f"--replicas must be at least 2, got {replicas}")
    rows = []
    with blas_threads(args["threads"]):
        for estimator in args["estimators"] or default_estimators():
            for n in args["sizes"]:
                rows.append(measure_replicas(
                    estimator, n, replicas, args["batch"], args["backend"], args["dtype"],
                    args["repeat"], args["min_time"], args["truncation"]))
    if as_json:
        typer.echo(json.dumps({"replicas": replicas, "rows": [r.to_dict() for r in rows]},
                              indent=2))
        return
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(title=Text(f"{replicas} replicated runs against one run (µs per step, "
                             f"median of {args['repeat']} blocks)"), box=None)
    for col in ("estimator", "n", "advance", "one run", "R runs", "per replica", "× throughput"):
        table.add_column(Text(col), justify="left" if col in ("estimator", "advance") else "right",
                         no_wrap=col == "estimator")
    for r in rows:
        table.add_row(r.estimator, str(r.n), "together" if r.batched else "in turn",
                      f"{r.us_one:,.1f}", f"{r.us_group:,.1f}", f"{r.us_per_replica:,.2f}",
                      f"{r.throughput:.2f}")
    Console(highlight=False).print(table)
