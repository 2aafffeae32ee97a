"""TensorBoard: a run's metrics lines as TensorBoard scalars (event files written with
tensorboardX, the ``tensorboard`` extra).

Every number of a metrics line (``loss``, ``bits``, ``grad_norm``, ``lr``, ``eval_loss``, a task's
own such as ``copy_length``) becomes a scalar of that tag at the line's step, in event files under
``RUN_DIR/tensorboard``: ``tensorboard --logdir runs/`` then shows every run. The directory is
rebuilt from ``metrics.jsonl`` when the logger opens (a resumed run's lines up to its checkpoint,
nothing for a new run), so it never holds the lines an interrupted process wrote after its last
checkpoint.
"""

from __future__ import annotations

import shutil
from typing import Any

import gradflow

#: the directory of the event files, inside the run directory
DIRECTORY = "tensorboard"


def scalars(record: dict[str, Any]) -> dict[str, float]:
    """The numbers of a metrics line, by tag (``step`` and empty values left out)."""
    return {key: float(value) for key, value in record.items()
            if key != "step" and isinstance(value, int | float) and not isinstance(value, bool)}


class TensorBoardLogger(gradflow.Logger):
    name = "tensorboard"
    description = "TensorBoard event files in RUN_DIR/tensorboard (extra 'tensorboard')"

    def __init__(self, options: gradflow.LoggerOptions) -> None:
        super().__init__(options)
        try:
            from tensorboardX import SummaryWriter
        except ImportError:
            raise gradflow.PluginError("logger 'tensorboard' needs tensorboardX: pip install "
                                       "'gradflow[tensorboard]'") from None
        self._writer_class = SummaryWriter
        self.writer: Any = None

    def open(self, run: gradflow.RunRecord) -> None:
        directory = run.path / DIRECTORY
        if directory.is_symlink():
            raise gradflow.RunDirError(f"run directory {str(run.path)!r}: {DIRECTORY} is a "
                                       "symbolic link; gradflow does not write through links")
        if directory.exists():
            shutil.rmtree(directory)  # rebuilt from metrics.jsonl, the source of truth
        self.writer = self._writer_class(logdir=str(directory), flush_secs=30)
        for record in run.records:
            self.log(record)

    def log(self, record: dict[str, Any]) -> None:
        step = int(record["step"])
        for tag, value in scalars(record).items():
            self.writer.add_scalar(tag, value, step)

    def close(self, status: str) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
