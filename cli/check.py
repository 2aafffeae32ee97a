"""``gradflow check``: bias, mean square error and cosine of an estimator against an exact
reference, and the verdict they support.

The computation is :func:`gradflow.estimator_statistics` and the verdict
:func:`~gradflow.verification.statistics.verdict` (gradflow/verification/statistics.py); this
module parses options and prints a rich table and the verdict (or JSON).
"""

from __future__ import annotations

import json
import math
from typing import Annotated, Any

import typer

import gradflow
from gradflow.contracts.errors import GradflowError
from gradflow.verification.statistics import CheckResult, Verdict, estimator_statistics, verdict

_TARGETS = ("model", "estimator", "reference")
#: the table's columns, each saying what it holds (g: the reference's gradient, ĝ: one estimate,
#: m: the mean of the N estimates)
COLUMNS = ("step", "reference\n‖g‖", "rel. bias ± s.e.\n‖m−g‖/‖g‖", "cos(m, g)",
           "mean\ncos(ĝ, g)", "rel. MSE\nE‖ĝ−g‖²/‖g‖²")
LEGEND = ("g: the reference's gradient; ĝ: one estimate; m: the mean of the N estimates; s.e.: "
          "the standard error of the bias; rel. MSE: the variance when unbiased")
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


def _print_table(result: CheckResult, per_step: bool, judged: Verdict) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    title = (f"{result.estimator} vs {result.reference} on {result.model} "
             f"({result.samples} samples, {result.steps} steps, seed {result.seed}, "
             f"θ × {result.theta_scale:g}, "
             f"{result.backend}/{result.dtype}, sampler: {result.sampler})")
    table = Table(title=Text(title))
    for col in COLUMNS:
        table.add_column(Text(col), justify="right")
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
    console = Console(highlight=False)
    console.print(table)
    console.print(Text(LEGEND, style="dim"))
    # one line however narrow the terminal (`gradflow check uoro | tail -1` is the verdict)
    console.print(Text.assemble(("verdict: ", "bold"), (f"{result.estimator} is ", ""),
                                (judged.text, "bold red" if judged.contradicts else "bold")),
                  soft_wrap=True)


def check(
    estimator: Annotated[str, typer.Argument(
        metavar="ESTIMATOR", help="estimator to check (a registered name)", show_default=False)],
    model: Annotated[str, typer.Option(
        "--model", "-m", metavar="NAME", help="model (a registered name)")] = "rnn",
    reference: Annotated[str | None, typer.Option(
        "--reference", "-r", metavar="NAME",
        help="exact reference estimator (default: the first registered estimator that is exact "
             "and online, rtrl)")] = None,
    samples: Annotated[int, typer.Option(
        "--samples", "-n", metavar="N", help="number of independent estimates")] = 1000,
    steps: Annotated[int, typer.Option(
        "--steps", "-T", metavar="T", help="trajectory length")] = 20,
    seed: Annotated[int, typer.Option(
        "--seed", metavar="N", help="seed of θ, the data and the estimator's signs")] = 0,
    backend: Annotated[str, typer.Option(
        "--backend", metavar="NAME", help="numpy, cupy or array_api_strict")] = "numpy",
    dtype: Annotated[str, typer.Option(
        "--dtype", metavar="DTYPE", help="float64 or float32")] = "float64",
    loss: Annotated[str, typer.Option(
        "--loss", metavar="LOSS", help="mse (normal targets) or ce (random labels)")] = "mse",
    theta_scale: Annotated[float, typer.Option(
        "--theta-scale", metavar="FACTOR",
        help="multiply the initial θ (> 1 saturates tanh units)")] = 1.0,
    settings: Annotated[list[str] | None, typer.Option(
        "--set", metavar="TARGET.OPTION=VALUE", help="an option of the model, estimator or "
        "reference, repeatable (e.g. --set model.n_hidden=8)")] = None,
    per_step: Annotated[bool, typer.Option("--per-step/--sum",
                                           help="a row per step (and the sum), or the sum "
                                           "over the trajectory only")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output "
                                          "(every step and the sum)")] = False,
) -> None:
    """Bias, mean square error and cosine of ESTIMATOR's gradient estimates against an exact
    reference (default: rtrl), on a frozen random trajectory: N independent estimates of each
    step's gradient and of their sum.

    The last line is the verdict on the sum: exact (a deterministic estimator within rounding of
    the reference), consistent with unbiased (a stochastic one whose bias is under 4 standard
    errors) or biased, compared with the kind the estimator declares; the exit status is 1
    when the two disagree (an estimator declared exact or unbiased measured otherwise)."""
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
        data = result.to_dict()
        judged = verdict(result, _declared(estimator))
        data["verdict"] = judged.to_dict()
        typer.echo(json.dumps(data, indent=2))
        if judged.contradicts:
            raise typer.Exit(1)
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
    judged = verdict(result, _declared(estimator))
    _print_table(result, per_step, judged)
    if judged.contradicts:
        raise typer.Exit(1)


def _declared(estimator: str) -> str:
    """The kind the registered estimator ``estimator`` declares."""
    return str(gradflow.get_registry().get("estimator", estimator).cls.kind)
