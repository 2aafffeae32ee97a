"""``gradflow check``: bias, variance and cosine of an estimator against an exact reference.

The computation is :func:`gradflow.estimator_statistics` (in gradflow/check.py); this module parses
options and prints a rich table (or JSON).
"""

from __future__ import annotations

import json
import math
from typing import Annotated, Any

import typer

import gradflow
from gradflow.contracts.errors import GradflowError
from gradflow.verification.statistics import CheckResult, estimator_statistics

_TARGETS = ("model", "estimator", "reference")
#: bounds of --samples and --steps (beyond them a check would run for days or exhaust memory)
MAX_SAMPLES, MAX_STEPS = 10_000_000, 100_000


def parse_settings(settings: list[str]) -> dict[str, dict[str, Any]]:
    """``["model.n_hidden=8", "estimator.eps=1e-6"]`` -> ``{"model": {"n_hidden": 8}, ...}``.

    Values are read as JSON when they parse (numbers, true/false, null, lists) and as strings
    otherwise; the plugin's own options model validates them.
    """
    out: dict[str, dict[str, Any]] = {k: {} for k in _TARGETS}
    for item in settings:
        key, sep, raw = item.partition("=")
        target, dot, name = key.strip().partition(".")
        if not sep or not dot or not name or target not in out:
            raise GradflowError(f"--set {item!r}: expected TARGET.OPTION=VALUE with TARGET one "
                                f"of {', '.join(_TARGETS)} (e.g. model.n_hidden=8)")
        try:
            value: Any = json.loads(raw)
        except (ValueError, RecursionError):
            value = raw
        out[target][name] = value
    return out


def _fmt(x: float | None, spec: str = ".3g") -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    return format(x, spec)


def _print_table(result: CheckResult, per_step: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    title = (f"{result.estimator} vs {result.reference} on {result.model} "
             f"({result.samples} samples, {result.steps} steps, seed {result.seed}, "
             f"θ × {result.theta_scale:g}, "
             f"{result.backend}/{result.dtype}, sampler: {result.sampler})")
    table = Table(title=title)
    for col in ("step", "‖ref‖", "rel. bias ± s.e.", "cos(mean, ref)", "mean cos",
                "rel. variance"):
        table.add_column(col, justify="right")
    rows = result.rows if per_step else [result.total]
    for row in rows:
        table.add_row(
            "sum" if row.step is None else str(row.step),
            _fmt(row.ref_norm),
            f"{_fmt(row.rel_bias)} ± {_fmt(row.rel_bias_se)}",
            _fmt(row.cos_mean, ".4f"),
            _fmt(row.mean_cos, ".4f"),
            _fmt(row.rel_var),
        )
    Console().print(table)


def check(
    estimator: Annotated[str, typer.Argument(help="estimator to check (a registered name)")],
    model: Annotated[str, typer.Option("--model", "-m", help="model (a registered name)")] = "rnn",
    reference: Annotated[str | None, typer.Option(
        "--reference", "-r", help="exact reference estimator (default: the first registered "
        "estimator that is exact and online, rtrl)")] = None,
    samples: Annotated[int, typer.Option("--samples", "-n",
                                         help="number of independent estimates")] = 1000,
    steps: Annotated[int, typer.Option("--steps", "-T", help="trajectory length")] = 20,
    seed: Annotated[int, typer.Option("--seed", help="seed of θ, the data and the "
                                      "estimator's signs")] = 0,
    backend: Annotated[str, typer.Option("--backend", help="numpy, cupy or "
                                         "array_api_strict")] = "numpy",
    dtype: Annotated[str, typer.Option("--dtype", help="float64 or float32")] = "float64",
    loss: Annotated[str, typer.Option("--loss", help="mse (normal targets) or ce (random "
                                      "labels)")] = "mse",
    theta_scale: Annotated[float, typer.Option("--theta-scale", help="multiply the initial θ "
                                               "(> 1 saturates tanh units)")] = 1.0,
    settings: Annotated[list[str] | None, typer.Option(
        "--set", help="option of the model, estimator or reference: TARGET.OPTION=VALUE, "
        "e.g. --set model.n_hidden=8 (repeatable)")] = None,
    per_step: Annotated[bool, typer.Option("--per-step/--sum",
                                           help="a row per step (and the sum), or the sum "
                                           "over the trajectory only")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output "
                                          "(every step and the sum)")] = False,
) -> None:
    """Bias, variance and cosine of ESTIMATOR's gradient estimates against an exact reference
    (default: rtrl), on a frozen random trajectory: N independent estimates of each step's
    gradient and of their sum."""
    if samples < 2:
        raise GradflowError(f"--samples must be at least 2, got {samples}")
    if steps < 1:
        raise GradflowError(f"--steps must be at least 1, got {steps}")
    if samples > MAX_SAMPLES or steps > MAX_STEPS:
        raise GradflowError(f"--samples must be at most {MAX_SAMPLES:,} and --steps at most "
                            f"{MAX_STEPS:,}, got {samples:,} and {steps:,}")
    if not math.isfinite(theta_scale):
        raise GradflowError(f"--theta-scale must be a finite number, got {theta_scale}")
    if loss not in ("mse", "ce"):
        raise GradflowError(f"--loss must be mse or ce, got {loss!r}")
    opts = parse_settings(settings or [])
    be = gradflow.get_backend(backend, dtype)
    mdl = gradflow.create_model(model, backend=be, **opts["model"])
    if as_json:
        result = estimator_statistics(mdl, estimator, reference, samples=samples, steps=steps,
                                      seed=seed, loss=loss, theta_scale=theta_scale,
                                      estimator_options=opts["estimator"],
                                      reference_options=opts["reference"])
        typer.echo(json.dumps(result.to_dict(), indent=2))
        return
    from rich.console import Console
    from rich.progress import Progress

    with Progress(console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(f"sampling {estimator}", total=samples)

        def advance(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        result = estimator_statistics(mdl, estimator, reference, samples=samples, steps=steps,
                                      seed=seed, loss=loss, theta_scale=theta_scale,
                                      estimator_options=opts["estimator"],
                                      reference_options=opts["reference"], progress=advance)
    _print_table(result, per_step)
