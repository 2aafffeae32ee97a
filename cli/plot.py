"""``gradflow plot RUN_DIR... --out FILE.png|svg``: learning curves of runs on one figure (a sweep
directory stands for its runs, grouped over seeds with a 95 % band)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gradflow.tools.plot import check_output, learning_curves, sweep_runs


def plot(
    runs: Annotated[list[Path], typer.Argument(
        metavar="RUN_DIR...", show_default=False,
        help="run directories, or sweep directories (their runs, grouped over seeds)")],
    out: Annotated[Path, typer.Option(
        "--out", "-o", metavar="FILE", show_default=False,
        help="output image: .png, .svg or .pdf")],
    metric: Annotated[str, typer.Option(
        metavar="NAME",
        help="loss, bits, eval_loss, eval_bits, grad_norm, lr, steps_per_s, ...")] = "loss",
    smooth: Annotated[int, typer.Option(
        min=1, max=1_000_000, metavar="N",
        help="trailing mean over this many metrics lines (1: none)")] = 5,
    title: Annotated[str | None, typer.Option(metavar="TEXT", help="figure title")] = None,
    log_y: Annotated[bool, typer.Option("--log-y", help="logarithmic y axis")] = False,
    dpi: Annotated[int, typer.Option(min=10, max=2400, metavar="DPI",
                                     help="PNG resolution (dots per inch)")] = 100,
    x: Annotated[str, typer.Option(
        "--x", metavar="AXIS", help="step, or wall (wall-clock seconds)")] = "step",
    group_seeds: Annotated[bool | None, typer.Option(
        "--group-seeds/--no-group-seeds",
        help="one curve per configuration: the mean over its seeds and a 95 % confidence band "
             "(default: on for a sweep directory, off for run directories)")] = None,
) -> None:
    """Plot the learning curves of several runs on one figure: METRIC against the step, one
    line per run, labelled estimator/model/task (+ seed when the seeds differ) — or, for a sweep
    directory or with --group-seeds, one line per configuration with a 95 % band over its seeds.

    Example: gradflow plot runs/a runs/b --out curves.png --metric bits --smooth 10
    """
    check_output(out)
    expanded: list[Path] = []
    for path in runs:
        expanded.extend(sweep_runs(path) if (path / "sweep.json").is_file() else [path])
    grouped = (any((path / "sweep.json").is_file() for path in runs) if group_seeds is None
               else group_seeds)
    figure = learning_curves(expanded, metric=metric, smooth=smooth, title=title, log_y=log_y,
                             group_seeds=grouped, x=x)
    for name in figure.skipped:
        typer.echo(f"warning: {name} has no values of {metric!r}; left out", err=True)
    path = figure.save(out, dpi=dpi)
    what = "curve(s)" if grouped else "run(s)"
    typer.echo(f"{len(figure.lines)} {what} plotted to {path}")
