"""``gradflow bench``: µs per online step by estimator and size, the ratio to a forward-only step,
the estimator's state memory and the fitted scaling exponents, on the user's own backend.

The measuring is :func:`gradflow.tools.bench.run_bench` (gradflow/tools/bench.py, where the method
is written down); this module parses options and prints rich tables (or JSON).
"""

from __future__ import annotations

import json
import math
from typing import Annotated

import typer

from gradflow.contracts.errors import BenchError
from gradflow.tools.bench import (
    CONTROL,
    DEFAULT_SIZES,
    DEFAULT_TRUNCATION,
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


def print_tables(result: BenchResult) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    title = (f"one online step (task add, model rnn, B = {result.batch}, {result.backend}/"
             f"{result.dtype}, BLAS threads {result.threads or 'default'}; median of "
             f"{result.repeat * result.rounds} blocks)")
    table = Table(title=title)
    for col in ("estimator", "n", "P", "µs/step", "× fwd", "state MiB", "B/param",
                "floats/param", "peak MiB"):
        table.add_column(col, justify="left" if col == "estimator" else "right")
    for row in result.rows:
        table.add_row(row.estimator, str(row.n), f"{row.P:,}", _num(row.us_per_step, ",.1f"),
                      _num(row.ratio_to_forward, ".2f"), _mib(row.state_bytes),
                      _num(row.state_bytes_per_param, ".2f"),
                      _num(row.state_floats_per_param, ".2f"), _mib(row.peak_step_bytes))
    console.print(table)
    console.print(f"× fwd: the step time over the forward-only step ({result.forward_only}) at "
                  "the same n; state: the estimator's state; peak: the most a step allocates")
    if result.fits:
        fits = Table(title="scaling of the step time t with P (least squares)")
        for col in ("estimator", "sizes n", "log-log slope", "k: t = t₀ + c·P^k", "t₀ µs"):
            fits.add_column(col, justify="left" if col == "estimator" else "right")
        for name, fit in result.fits.items():
            rows = result.control if name == CONTROL else [
                {"n": r.n} for r in result.rows if r.estimator == name]
            ns = [r["n"] for r in rows if result.fit_min_n is None or r["n"] >= result.fit_min_n]
            fits.add_row(name, f"{min(ns)}…{max(ns)}", _num(fit.slope, ".3f"),
                         _num(fit.exponent, ".3f"), _num(fit.overhead, ",.1f"))
        console.print(fits)
        console.print(f"{CONTROL}: the optimizer's update of P numbers alone, O(P) by "
                      "construction: its exponent is the machine's memory hierarchy")
    for row in result.rows:
        if not row.finite:
            console.print(f"warning: θ was not finite after timing {row.estimator} n={row.n}: "
                          "the run diverged and its time is that of inf/NaN arithmetic")
    for skip in result.skipped:
        console.print(f"skipped {skip['estimator']} n={skip['n']}: {skip['reason']}")


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
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Time one online step (task → forward → loss → estimator → clip → optimizer) for each
    estimator and model size; print µs per step, the ratio to the forward-only step (the
    estimator that declares forward_only: readout-only), the estimator's state memory and the
    fitted scaling exponents.

    Example: gradflow bench -e uoro,tbptt -n 64,256,1024 --dtype float32 --json
    """
    result_args = dict(
        estimators=None if estimators is None else parse_list(estimators, "estimators"),
        sizes=parse_sizes(sizes),
        batch=batch, backend=backend, dtype=dtype, repeat=repeat, rounds=rounds,
        min_time=min_time,
        truncation=truncation, threads=threads or None, max_step_ms=max_step_ms or None,
        fit_min_n=fit_min_n or None)
    if max_step_ms < 0 or fit_min_n < 0 or threads < 0:
        raise BenchError("--max-step-ms, --fit-min-n and --threads must not be negative")
    validate_request(result_args["estimators"] or default_estimators(), result_args["sizes"],
                     batch, repeat, min_time, truncation, backend, dtype, rounds)
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
