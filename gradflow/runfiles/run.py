"""Reading a run directory: :func:`load_run` and :class:`Run` (its configuration, summary,
learning curve and checkpoint), whether the CLI or the API (:func:`gradflow.train`) wrote it::

    run = gradflow.load_run("runs/uoro")
    run.metrics["step"], run.metrics["loss"]     # arrays, one entry per metrics line
    run["final_loss"]                             # the summary (a Run reads like its dict)
    run.theta                                     # θ of the newest checkpoint
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from gradflow.contracts.errors import RunDirError
from gradflow.runfiles.checkpoint import load_checkpoint
from gradflow.runfiles.config import TrainConfig, run_config
from gradflow.runfiles.rundir import CHECKPOINT, CONFIG, METRICS, SUMMARY, TIMING, read_metrics


def columns(records: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """JSON records as columns: ``step`` as int64, every other numeric key as float64 with NaN
    where a line lacks it (``eval_loss`` exists only on evaluation lines)."""
    keys: dict[str, None] = {}
    for record in records:
        keys.update(dict.fromkeys(record))
    out: dict[str, np.ndarray] = {}
    for key in keys:
        values = [r.get(key) for r in records]
        numeric = [isinstance(v, int | float) for v in values]
        if not any(numeric):
            continue
        if key == "step" and all(numeric):
            out[key] = np.array(values, dtype=np.int64)
        else:  # a value that is not a number (a damaged line) reads as NaN
            out[key] = np.array([v if ok else np.nan for v, ok in zip(values, numeric,
                                                                     strict=True)],
                                dtype=np.float64)
    return out


class Run(Mapping[str, Any]):
    """A run directory: its configuration, summary, learning curve and checkpoint.

    A Run reads like its summary dict (``run["final_loss"]``, ``dict(run)``), which is what
    :func:`train` returned before it returned a Run.
    """

    def __init__(self, path: str | Path, config: TrainConfig, summary: dict[str, Any]) -> None:
        self.path = Path(path)
        self.config = config
        self.summary = summary
        self._metrics: dict[str, np.ndarray] | None = None
        self._timing: dict[str, np.ndarray] | None = None

    # -- the summary, as a mapping ---------------------------------------------------------------
    def __getitem__(self, key: str) -> Any:
        return self.summary[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.summary)

    def __len__(self) -> int:
        return len(self.summary)

    def __repr__(self) -> str:
        final = self.summary.get("final_loss")
        loss = f", final_loss={final:.4f}" if isinstance(final, float) else ""
        return (f"Run({str(self.path)!r}, status={self.status!r}, "
                f"steps={self.summary.get('steps')}{loss})")

    @property
    def status(self) -> str:
        """``completed``, ``interrupted``, ``diverged``, ``failed`` (a plugin raised), or
        ``incomplete`` (no summary yet: a
        killed or still running run)."""
        return str(self.summary.get("status", "incomplete"))

    @property
    def name(self) -> str:
        """``estimator/model/task``."""
        c = self.config
        return f"{c.estimator.name}/{c.model.name}/{c.task.name}"

    # -- the learning curve -----------------------------------------------------------------------
    @property
    def metrics(self) -> dict[str, np.ndarray]:
        """``metrics.jsonl`` as arrays: ``step`` (int64), ``loss``, ``bits``, ``grad_norm``,
        ``lr``, ``eval_loss``, ``eval_bits`` (float64; NaN where a line has no value), and the
        columns a run adds: ``align_cos`` and ``align_relerr`` with ``run.align_every``, a
        task's own metrics (``copy_length``)."""
        if self._metrics is None:
            self._metrics = columns(self._records(METRICS))
        return self._metrics

    @property
    def timing(self) -> dict[str, np.ndarray]:
        """``timing.jsonl`` as arrays: ``step``, ``wall`` (seconds), ``steps_per_s``."""
        if self._timing is None:
            self._timing = columns(self._records(TIMING))
        return self._timing

    def _records(self, name: str) -> list[dict[str, Any]]:
        return read_metrics(self.path, name) if (self.path / name).exists() else []

    def reload(self) -> Run:
        """Read the directory again (a run that is still being written)."""
        return load_run(self.path)

    # -- the checkpoint ---------------------------------------------------------------------------
    def checkpoint(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """(arrays, meta) of the newest intact checkpoint (see
        :mod:`gradflow.runfiles.checkpoint`)."""
        return load_checkpoint(self.path / CHECKPOINT)

    @property
    def theta(self) -> np.ndarray:
        """θ of the newest checkpoint (the final θ of a completed run), as a NumPy array."""
        return self.checkpoint()[0]["theta"]


def load_run(path: str | Path) -> Run:
    """Open the run directory ``path``."""
    p = Path(path)
    if not p.exists():
        raise RunDirError(f"no such run directory: {str(p)!r}")
    if not (p / CONFIG).is_file():
        raise RunDirError(f"{str(p)!r} is not a gradflow run directory ({CONFIG} is missing)")
    try:
        config = run_config(json.loads((p / CONFIG).read_text()))
    except (OSError, ValueError, ValidationError, RecursionError) as exc:
        raise RunDirError(f"{str(p / CONFIG)!r} cannot be read as a gradflow config "
                          f"({type(exc).__name__})") from None
    summary: dict[str, Any] = {}
    if (p / SUMMARY).is_file():
        try:
            summary = json.loads((p / SUMMARY).read_text())
        except (OSError, ValueError, RecursionError):
            summary = {}
    return Run(p, config, summary if isinstance(summary, dict) else {})
