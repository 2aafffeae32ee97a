"""``gradflow train``: train a model online on a task with a gradient estimator.

The configuration comes from ``--config FILE.toml`` (sections run, model, estimator, task,
optimizer), then ``--set section.key=value`` overrides (TOML literals, else strings), then the
flags; the later wins. The resolved config, metrics, summary and checkpoints go to the run
directory (``--out``, default ``runs/<time>-<task>-<estimator>``).

``--resume RUN_DIR`` continues a stopped or killed run from its newest checkpoint with the
configuration stored there (``--steps`` may change its length); the continued run equals an
uninterrupted one bit for bit. SIGINT (Ctrl-C) or SIGTERM lets the current step finish, writes a
checkpoint and exits with 128 + the signal number, printing the command that resumes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from gradflow.contracts.errors import ConfigError
from gradflow.contracts.losses import LN2
from gradflow.runfiles.config import build_config
from gradflow.training.replicas import ReplicatedTrainer, is_group
from gradflow.training.trainer import Trainer

_FLAGS = {
    "model": "model.name", "estimator": "estimator.name", "task": "task.name",
    "steps": "run.steps", "batch": "run.batch", "seed": "run.seed", "backend": "run.backend",
    "dtype": "run.dtype", "optimizer": "optimizer.name", "lr": "optimizer.lr",
    "out": "run.out", "checkpoint_every": "run.checkpoint_every", "logger": "run.loggers",
    "replicas": "run.replicas",
}


def _fmt(x: float | None, digits: int = 4) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def summary_lines(summary: dict[str, Any]) -> list[str]:
    """The short report printed at the end of a run."""
    lines = [f"{summary['task']} · {summary['model']} (P={summary['n_params']}) · "
             f"{summary['estimator']} · {summary['steps']:,} steps in {summary['seconds']:.1f} s "
             f"({summary['steps_per_s']:,.0f} steps/s)"]
    final, ce = summary["final_loss"], summary["loss_kind"] == "ce"
    bits = f" ({_fmt(summary['final_bits'])} bits)" if ce else ""
    lines.append(f"final loss {_fmt(final)} nats{bits}, mean of the last "
                 f"{summary['final_window']:,} steps")
    refs = dict(summary.get("references") or {})
    optimum = summary.get("optimum")
    if optimum is not None:
        refs.pop("optimum", None)
        gap = f" (gap {final - optimum:+.4f})" if final is not None else ""
        lines.append(f"optimum {optimum:.4f} nats{gap}")
    if refs:
        lines.append("references: " + ", ".join(
            f"{k} {v:.4f} nats" + (f" ({v / LN2:.4f} bits)" if ce else "")
            for k, v in refs.items()))
    if summary.get("eval_loss") is not None:
        lines.append(f"held-out loss {summary['eval_loss']:.4f} nats (best "
                     f"{summary['best_eval_loss']:.4f} at step {summary['best_eval_step']:,})")
    lines.append(f"run directory: {summary['run_dir']}")
    return lines


def train(
    model: Annotated[str | None, typer.Option(
        metavar="NAME", help="model plugin (default rnn)")] = None,
    estimator: Annotated[str | None, typer.Option(
        metavar="NAME", help="estimator plugin (default rtrl)")] = None,
    task: Annotated[str | None, typer.Option(
        metavar="NAME", help="task plugin (default add)")] = None,
    steps: Annotated[int | None, typer.Option(
        metavar="N", help="data steps (default 100000)")] = None,
    batch: Annotated[int | None, typer.Option(
        metavar="B", help="independent streams B (default 1)")] = None,
    seed: Annotated[int | None, typer.Option(metavar="N", help="random seed (default 0)")] = None,
    backend: Annotated[str | None, typer.Option(
        metavar="NAME", help="numpy (default), cupy or array_api_strict")] = None,
    dtype: Annotated[str | None, typer.Option(
        metavar="DTYPE", help="float64 (default) or float32")] = None,
    optimizer: Annotated[str | None, typer.Option(
        metavar="NAME", help="adam (default) or sgd")] = None,
    lr: Annotated[float | None, typer.Option(
        metavar="RATE", help="learning rate γ (default adam 0.003, sgd 0.1)")] = None,
    out: Annotated[str | None, typer.Option(
        metavar="DIR", help="run directory (default runs/TIME-TASK-ESTIMATOR)")] = None,
    checkpoint_every: Annotated[int | None, typer.Option(
        metavar="N",
        help="steps between checkpoints (default 10000; 0: only at the end); the last two are "
             "kept")] = None,
    replicas: Annotated[int | None, typer.Option(
        metavar="R",
        help="R runs advanced together, seeds seed … seed + R − 1 (run.replica_seeds, "
             "optimizer.replica_lrs to choose), each in DIR/replica-NNN exactly as the run "
             "made alone (default 1)")] = None,
    logger: Annotated[list[str] | None, typer.Option(
        "--logger", metavar="NAME",
        help="also log the metrics with this logger plugin (tensorboard, mlflow), repeatable; "
             "metrics.jsonl is always written")] = None,
    resume: Annotated[Path | None, typer.Option(
        "--resume", metavar="RUN_DIR",
        help="continue the run in RUN_DIR from its newest checkpoint, with its own "
             "configuration (only --steps may change)")] = None,
    config: Annotated[Path | None, typer.Option(
        "--config", metavar="FILE",
        help="TOML file with sections run, model, estimator, task, optimizer")] = None,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", metavar="SECTION.KEY=VALUE",
        help="override a config value, repeatable (e.g. --set estimator.truncation=10)")
    ] = None,
    force: Annotated[bool, typer.Option(
        "--force", help="overwrite an existing non-empty run directory")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bar")] = False,
    debug: Annotated[bool, typer.Option("--debug", hidden=True,
                                        help="show tracebacks on errors")] = False,
) -> None:
    """Train a recurrent model online on a task with a gradient estimator, and write a run
    directory: the resolved config, the metrics, a summary and checkpoints.

    The configuration comes from --config FILE, then each --set override, then the flags (the
    later wins); gradflow config show prints it resolved. --resume RUN_DIR continues a stopped
    or killed run from its newest checkpoint, bit for bit as if it had not stopped; Ctrl-C
    writes a checkpoint first.

    Example: gradflow train --task add --estimator tbptt --steps 20000
    """
    values = {"model": model, "estimator": estimator, "task": task, "steps": steps,
              "batch": batch, "seed": seed, "backend": backend, "dtype": dtype,
              "optimizer": optimizer, "lr": lr, "out": out, "checkpoint_every": checkpoint_every,
              "logger": logger or None, "replicas": replicas}
    from rich.console import Console

    err = Console(stderr=True)
    if resume is not None:
        given = [f"--{k.replace('_', '-')}" for k, v in values.items()
                 if v is not None and k != "steps"]
        given += [name for name, v in (("--config", config), ("--set", set_),
                                       ("--force", force)) if v]
        if given:
            raise ConfigError(f"--resume continues a run with the configuration it was started "
                              f"with; it cannot be combined with {', '.join(given)} (only "
                              "--steps, to change its length)")
        trainer: Trainer | ReplicatedTrainer = (
            ReplicatedTrainer.resume(resume, steps) if is_group(resume)
            else Trainer.resume(resume, steps))
        for note in trainer.notes:  # (skipped checkpoints are warnings: main prints them)
            err.print(f"note: {note}", markup=False, highlight=False, soft_wrap=True)
        if not quiet:
            err.print(f"resuming {resume} at step {trainer.step:,} of "
                      f"{trainer.config.run.steps:,}", markup=False, highlight=False)
    else:
        flags = {_FLAGS[k]: v for k, v in values.items()}
        built = build_config(config, set_ or (), flags)
        trainer = ReplicatedTrainer(built) if built.run.replicas > 1 else Trainer(built)
    if isinstance(trainer, ReplicatedTrainer):
        _train_replicas(trainer, force, quiet, err)
        return
    resolved = trainer.config
    if not quiet:
        m = trainer.parts.model
        err.print(f"training {resolved.model.name} (n_state={m.n_state}, P={m.layout.size}) "
                  f"with {resolved.estimator.name} on {resolved.task.name}: "
                  f"{resolved.run.steps:,} steps, batch {resolved.run.batch}, "
                  f"{resolved.run.backend}/{resolved.run.dtype}", markup=False, highlight=False)
        err.print(optimizer_line(resolved, trainer.parts.optimizer_defaults), markup=False,
                  highlight=False)
    if quiet:
        summary = trainer.run(force=force)
    else:
        summary = _run_with_progress(trainer, force, err)
    for line in summary_lines(summary):
        typer.echo(line)


def optimizer_line(resolved: Any, defaults: dict[str, Any]) -> str:
    """The run's complete optimizer settings, and which of them are the estimator's defaults
    (nothing about the updates is left unsaid in a run's header)."""
    line = f"optimizer: {resolved.optimizer.describe()}"
    if defaults:
        line += (f" ({', '.join(defaults)} from {resolved.estimator.name}'s optimizer defaults; "
                 "set optimizer.* to choose)")
    return line


def _train_replicas(group: ReplicatedTrainer, force: bool, quiet: bool, err: Any) -> None:
    """A replicated run: a header, one progress bar, then a line per replica and the mean."""
    first = group.members[0]
    resolved, m = first.config, first.parts.model
    how = "together" if group.batched else "one after the other (the model or estimator does " \
        "not declare replicas)"
    if not quiet:
        err.print(f"training {len(group.members)} replicas of {resolved.model.name} "
                  f"(n_state={m.n_state}, P={m.layout.size}) with {resolved.estimator.name} on "
                  f"{resolved.task.name}: {resolved.run.steps:,} steps, advanced {how}",
                  markup=False, highlight=False)
        err.print(optimizer_line(resolved, first.parts.optimizer_defaults), markup=False,
                  highlight=False)
    summaries = (group.run(force=force) if quiet
                 else _run_with_progress(group, force, err))
    finals = []
    for member, summary in zip(group.members, summaries, strict=True):
        final = summary["final_loss"]
        finals.append(final)
        typer.echo(f"{Path(str(member.config.run.out)).name}: seed {member.config.run.seed}, "
                   f"lr {member.config.optimizer.lr:g}, final loss {_fmt(final)} nats")
    mean = sum(finals) / len(finals)
    first_summary = summaries[0]
    typer.echo(f"mean final loss {mean:.4f} nats over {len(finals)} replicas, "
               f"{first_summary['steps']:,} steps in {first_summary['seconds']:.1f} s")
    typer.echo(f"run directory: {group.out}")


def _run_with_progress(trainer: Any, force: bool, console: Any) -> Any:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (TextColumn("[progress.description]{task.description}"), BarColumn(),
               MofNCompleteColumn(), TextColumn("loss {task.fields[loss]}"),
               TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False) as bar:
        tid = bar.add_task("train", total=trainer.config.run.steps, completed=trainer.step,
                           loss="…")

        def progress(step: int, record: dict[str, Any] | None) -> None:
            if record is None:
                bar.update(tid, completed=step)
            else:
                bar.update(tid, completed=step, loss=f"{record['loss']:.4f}")

        return trainer.run(force=force, progress=progress)
