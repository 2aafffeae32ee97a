"""``gradflow sweep GRID.toml``: a grid of runs on a local process pool or a Dask cluster.

GRID.toml is a training config plus a ``[sweep]`` table of dotted option names to lists and/or
``[[variants]]`` of whole config sections; every variant crossed with the product runs as a
separate run under the sweep directory, and the summary aggregated over seeds
goes to ``summary.csv`` and ``summary.md`` (printed at the end). Failed runs are reported by name;
the others still run, and the command then exits with status 1.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer

from gradflow.contracts.errors import ConfigError, SweepError
from gradflow.tools.sweep import SweepRun, load_grid, run_sweep, validate_runs
from gradflow.tools.sweep_summary import SEED_KEY, group_rows, to_markdown


def _default_out(grid: Path) -> Path:
    base = Path("sweeps") / f"{time.strftime('%Y%m%d-%H%M%S')}-{grid.stem}"
    path, k = base, 1
    while path.exists():
        path, k = base.with_name(f"{base.name}-{k}"), k + 1
    return path


def sweep(
    grid: Annotated[Path, typer.Argument(
        metavar="GRID", show_default=False,
        help="TOML file: a training config plus a sweep table of dotted names to lists and/or "
             "[[variants]] of whole config sections")],
    out: Annotated[Path | None, typer.Option(
        metavar="DIR", help="sweep directory (default sweeps/<time>-<grid name>)")] = None,
    workers: Annotated[int | None, typer.Option(
        min=1, metavar="N",
        help="processes of the local pool (default: one per core, at most one per run)")] = None,
    scheduler: Annotated[str | None, typer.Option(
        metavar="ADDRESS",
        help="run on the Dask distributed cluster at this address (tcp://HOST:PORT) instead of "
             "the local pool; needs the dask extra of gradflow")] = None,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", metavar="SECTION.KEY=VALUE",
        help="override a value of the base config, repeatable")] = None,
    force: Annotated[bool, typer.Option(
        "--force", help="run again in an existing non-empty sweep directory")] = False,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="list the runs, check every run's configuration as training would "
                          "(without training), and exit: status 2 if any is invalid")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bar")] = False,
) -> None:
    """Train every combination of the lists in a grid's sweep table (crossed with its variants) as
    a separate run, on a local process pool (default) or a Dask cluster, and aggregate the final
    losses over seeds.

    Example: gradflow sweep grid.toml --workers 2
    """
    if scheduler is not None and workers is not None:
        raise typer.BadParameter("--workers sizes the local pool; a Dask cluster has its own "
                                 "workers", param_hint="--workers")
    parsed = load_grid(grid, set_ or ())
    runs = parsed.runs()
    if dry_run:
        problems = validate_runs(parsed)
        for run in runs:
            problem = problems.get(run.name)
            typer.echo(run.name if problem is None else f"{run.name}: invalid: {problem}")
        if problems:
            raise ConfigError(f"{len(problems)} of {len(runs)} runs have an invalid "
                              f"configuration: {', '.join(problems)}")
        return
    directory = out or _default_out(grid)
    from rich.console import Console

    err = Console(stderr=True, highlight=False)
    where = f"Dask scheduler {scheduler}" if scheduler else "a local process pool"
    if not quiet:
        err.print(f"sweep of {len(runs)} runs on {where} into {directory}", markup=False)
    failures: list[str] = []

    def report(run: SweepRun, result: dict[str, Any]) -> None:
        if result.get("status") != "completed":
            failures.append(run.name)
            err.print(f"failed: {run.name}: {result.get('error')}", markup=False, soft_wrap=True)

    if quiet:
        result = run_sweep(parsed, directory, workers, scheduler, force, report)
    else:
        result = _with_progress(parsed, directory, workers, scheduler, force, report, err,
                                len(runs))
    keys = [k for k in parsed.keys if k != SEED_KEY]
    typer.echo(to_markdown(group_rows(result), keys), nl=False)
    typer.echo(f"sweep directory: {result.directory} (summary.csv, summary.md, runs.csv)")
    if result.failed:
        raise SweepError(f"{len(result.failed)} of {len(runs)} runs failed: "
                         f"{', '.join(result.failed)} (see error.txt in their directories)")


def _with_progress(grid: Any, directory: Path, workers: int | None, scheduler: str | None,
                   force: bool, report: Any, console: Any, total: int) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("sweep"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as bar:
        tid = bar.add_task("sweep", total=total)

        def done(run: SweepRun, result: dict[str, Any]) -> None:
            report(run, result)
            bar.advance(tid)

        return run_sweep(grid, directory, workers, scheduler, force, done)
