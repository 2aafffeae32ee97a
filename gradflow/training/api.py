"""The Python API of training runs: :func:`train` and :func:`resume`, returning a
:class:`~gradflow.Run` (see :mod:`gradflow.runfiles.run`).

``gradflow.train(config)`` trains and returns the run: its directory, resolved configuration,
summary and learning curve::

    run = gradflow.train({"estimator": {"name": "tbptt"}, "run": {"steps": 20_000}})
    run.metrics["step"], run.metrics["loss"]     # arrays, one entry per metrics line
    run["final_loss"]                             # the summary (a Run reads like its dict)

The config is a :class:`~gradflow.TrainConfig`, a nested dict (the TOML file's structure), a
path to a TOML file, or ``None`` (the defaults); ``sets`` adds ``section.key=value`` overrides as
on the command line. ``gradflow.resume(dir)`` continues a run from its newest checkpoint.

A replicated run (``run.replicas = R``: R runs that differ in seed and learning rate, advanced
together, see :mod:`gradflow.training.replicas`) is trained by :func:`train_replicas` and continued
by :func:`resume_replicas`, which return one :class:`~gradflow.Run` per replica.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from gradflow.contracts.errors import ConfigError, RunDirError
from gradflow.runfiles.config import ConfigLike, as_config
from gradflow.runfiles.run import Run
from gradflow.training.replicas import ReplicatedTrainer, is_group
from gradflow.training.trainer import Progress, Trainer


def train(config: ConfigLike = None, *, out: str | Path | None = None, force: bool = False,
          sets: Sequence[str] = (), progress: Progress | None = None,
          handle_signals: bool = True) -> Run:
    """Train ``config`` (see :func:`as_config`) into the run directory ``out`` (default
    ``run.out``, else ``runs/<time>-<task>-<estimator>``) and return the :class:`Run`.

    An existing non-empty directory is refused unless ``force``. ``progress(step, record)`` is
    called as the run goes (see :class:`~gradflow.Trainer`). With ``handle_signals`` (and in the
    main thread), SIGINT/SIGTERM stop the run after a step with a checkpoint, raising
    :class:`~gradflow.TrainingInterrupted`; :func:`resume` continues it.
    """
    resolved = as_config(config, sets, out)
    if resolved.run.replicas > 1:
        raise ConfigError(f"run.replicas = {resolved.run.replicas} asks for a replicated run: "
                          "use gradflow.train_replicas, which returns a Run per replica")
    trainer = Trainer(resolved)
    summary = trainer.run(out, force, progress, handle_signals=handle_signals)
    return Run(str(trainer.config.run.out), trainer.config, summary)


def resume(path: str | Path, steps: int | None = None, progress: Progress | None = None,
           handle_signals: bool = True) -> Run:
    """Continue the run in ``path`` from its newest checkpoint (bit for bit what an
    uninterrupted run would have done); ``steps`` extends (or shortens) ``run.steps``."""
    if is_group(path):
        raise RunDirError(f"{str(path)!r} is a replicated run: continue it with "
                          "gradflow.resume_replicas (or one replica with its directory)")
    trainer = Trainer.resume(path, steps)
    summary = trainer.run(progress=progress, handle_signals=handle_signals)
    return Run(str(trainer.config.run.out), trainer.config, summary)


def train_replicas(config: ConfigLike = None, *, out: str | Path | None = None,
                   force: bool = False, sets: Sequence[str] = (),
                   progress: Progress | None = None, handle_signals: bool = True) -> list[Run]:
    """Train the replicated run ``config`` (``run.replicas`` ≥ 2) into ``out`` (one directory
    per replica inside it) and return a :class:`Run` per replica, in replica order."""
    group = ReplicatedTrainer(as_config(config, sets, out), out)
    summaries = group.run(force, progress, handle_signals=handle_signals)
    return [Run(str(m.config.run.out), m.config, summary)
            for m, summary in zip(group.members, summaries, strict=True)]


def resume_replicas(path: str | Path, steps: int | None = None,
                    progress: Progress | None = None, handle_signals: bool = True) -> list[Run]:
    """Continue the replicated run in ``path`` from the newest step all its replicas have a
    checkpoint for; return a :class:`Run` per replica."""
    group = ReplicatedTrainer.resume(path, steps)
    summaries = group.run(progress=progress, handle_signals=handle_signals)
    return [Run(str(m.config.run.out), m.config, summary)
            for m, summary in zip(group.members, summaries, strict=True)]
