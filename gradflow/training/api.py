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
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from gradflow.runfiles.config import ConfigLike, as_config
from gradflow.runfiles.run import Run
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
    trainer = Trainer(as_config(config, sets, out))
    summary = trainer.run(out, force, progress, handle_signals=handle_signals)
    return Run(str(trainer.config.run.out), trainer.config, summary)


def resume(path: str | Path, steps: int | None = None, progress: Progress | None = None,
           handle_signals: bool = True) -> Run:
    """Continue the run in ``path`` from its newest checkpoint (bit for bit what an
    uninterrupted run would have done); ``steps`` extends (or shortens) ``run.steps``."""
    trainer = Trainer.resume(path, steps)
    summary = trainer.run(progress=progress, handle_signals=handle_signals)
    return Run(str(trainer.config.run.out), trainer.config, summary)
