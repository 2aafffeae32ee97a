"""``gradflow study STUDY.toml``: variants × tasks, learning rates tuned on their own seeds,
evaluated on others, and the leaderboard (see :mod:`gradflow.tools.study`)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer

from gradflow.contracts.errors import ConfigError, SweepError
from gradflow.tools.study import load_study, run_study, validate_study


def study(
    file: Annotated[Path, typer.Argument(
        metavar="STUDY", show_default=False,
        help="TOML file: a base config, [study] (seeds, lr protocol), [[tasks]], [[variants]]")],
    out: Annotated[Path | None, typer.Option(
        metavar="DIR", help="study directory (default studies/<time>-<file name>); a study "
                            "started again in it skips the runs it completed")] = None,
    workers: Annotated[int | None, typer.Option(
        min=1, metavar="N",
        help="processes of the local pool (default: one per core)")] = None,
    scheduler: Annotated[str | None, typer.Option(
        metavar="ADDRESS",
        help="run on the Dask distributed cluster at this address (tcp://HOST:PORT)")] = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="check every run's configuration as training would (without "
                          "training), print the plan, and exit: status 2 if any is "
                          "invalid")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress lines")] = False,
) -> None:
    """Compare estimator variants fairly on tasks: tune each one's learning rate on tuning seeds
    (protocol "tune"), evaluate the chosen rate on the evaluation seeds, and write the
    leaderboard (DIR/leaderboard.md, .csv): mean final loss with its 95 % confidence interval,
    gaps to the optimum and to the memoryless reference, speed, and every optimizer setting.

    Example: gradflow study docs/studies/add.toml --workers 2
    """
    if scheduler is not None and workers is not None:
        raise typer.BadParameter("--workers sizes the local pool; a Dask cluster has its own "
                                 "workers", param_hint="--workers")
    parsed = load_study(file)
    if dry_run:
        problems = validate_study(parsed)
        for name, problem in problems.items():
            typer.echo(f"{name}: invalid: {problem}")
        configurations = len(parsed.tasks) * len(parsed.variants)
        tuning = (configurations * len(parsed.grid) * len(parsed.tuning_seeds)
                  if parsed.protocol == "tune" else 0)
        typer.echo(f"{configurations} configurations ({len(parsed.tasks)} tasks × "
                   f"{len(parsed.variants)} variants): {tuning} tuning runs, "
                   f"{configurations * len(parsed.seeds)} evaluation runs")
        if problems:
            raise ConfigError(f"{len(problems)} runs have an invalid configuration: "
                              f"{', '.join(problems)}")
        return
    directory = out or Path("studies") / f"{time.strftime('%Y%m%d-%H%M%S')}-{file.stem}"
    from rich.console import Console

    err = Console(stderr=True, highlight=False)
    configurations = len(parsed.tasks) * len(parsed.variants)
    if not quiet:
        tuning = (f"{configurations * len(parsed.grid) * len(parsed.tuning_seeds)} tuning runs, "
                  if parsed.protocol == "tune" else "")
        err.print(f"study of {configurations} configurations: {tuning}"
                  f"{configurations * len(parsed.seeds)} evaluation runs, into {directory}",
                  markup=False)

    def report(phase: str, run: Any, outcome: dict[str, Any]) -> None:
        if outcome.get("status") != "completed":
            err.print(f"failed ({phase}): {run.name}: {outcome.get('error')}", markup=False,
                      soft_wrap=True)
        elif not quiet:
            err.print(f"{phase}: {run.name} done", markup=False)

    result = run_study(parsed, directory, workers, scheduler, report)
    typer.echo((result.directory / "leaderboard.md").read_text(encoding="utf-8"), nl=False)
    figures = ", ".join(path.name for path in result.figures)
    typer.echo(f"study directory: {result.directory} (leaderboard.md, leaderboard.csv"
               f"{', ' + figures if figures else ''}, tune/, eval/)")
    if result.failed:
        raise SweepError(f"{len(result.failed)} runs failed: {', '.join(result.failed)} (see "
                         "error.txt in their directories)")
