"""The run directory: ``config.json``, ``metrics.jsonl``, ``timing.jsonl``, ``summary.json``,
``checkpoint/``.

``metrics.jsonl`` holds only what the computation determines (step, loss, bits, gradient norm,
learning rate, held-out loss), so the same config gives a byte-identical file and a resumed run
continues it line for line; the wall-clock side of each line (wall seconds, steps per second)
goes to the matching line of ``timing.jsonl``, since no two runs take the same time.

Rules that keep a run directory from being lost or corrupted:

* an existing non-empty directory is refused unless ``force`` is given; with ``force`` only the
  files gradflow writes are replaced, anything else in the directory is left alone;
* JSON files are written atomically (a temporary file in the same directory, flushed and fsynced,
  then renamed over the old one), so a reader sees the old or the new file, never half of one;
* ``metrics.jsonl`` and ``timing.jsonl`` are appended one complete line at a time and flushed
  after each line.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any, TextIO

from gradflow.errors import GradflowError

CONFIG, METRICS, TIMING = "config.json", "metrics.jsonl", "timing.jsonl"
SUMMARY, CHECKPOINT = "summary.json", "checkpoint"
OWN_FILES = (CONFIG, METRICS, TIMING, SUMMARY, CHECKPOINT)


class RunDirError(GradflowError):
    """The run directory cannot be created or would overwrite an existing run."""


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename (atomic on POSIX)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def finite_or_none(data: Any) -> Any:
    """``data`` with NaN and ±inf floats (at any depth of dicts and lists) replaced by None."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {k: finite_or_none(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [finite_or_none(v) for v in data]
    return data


def atomic_write_json(path: Path, data: Any) -> None:
    """Write ``data`` as strict JSON (non-finite numbers become ``null``), atomically."""
    text = json.dumps(finite_or_none(data), indent=2, allow_nan=False)
    atomic_write_bytes(path, (text + "\n").encode())


def default_run_path(task: str, estimator: str, root: str = "runs") -> Path:
    """``runs/<YYYYmmdd-HHMMSS>-<task>-<estimator>``, made unique with a counter if needed."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path(root) / f"{stamp}-{task}-{estimator}"
    path, k = base, 1
    while path.exists():
        path = base.with_name(f"{base.name}-{k}")
        k += 1
    return path


class RunDir:
    """A run directory being written."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._files: dict[str, TextIO] = {}

    @classmethod
    def create(cls, path: str | Path, force: bool = False) -> RunDir:
        """Create (or, with ``force``, reuse) the directory ``path``; see the module's rules."""
        p = Path(path)
        if p.exists() and not p.is_dir():
            raise RunDirError(f"run directory {str(p)!r} exists and is not a directory")
        if p.is_dir() and any(p.iterdir()):
            if not force:
                raise RunDirError(f"run directory {str(p)!r} already exists and is not empty; "
                                  "pass --force to overwrite it, or choose another --out")
            for name in OWN_FILES:
                target = p / name
                if target.is_dir() and not target.is_symlink():
                    shutil.rmtree(target)
                elif target.exists() or target.is_symlink():
                    target.unlink()
        try:
            p.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RunDirError(f"cannot create run directory {str(p)!r}: "
                              f"{exc.strerror or exc}") from None
        return cls(p)

    def write_json(self, name: str, data: Any) -> None:
        atomic_write_json(self.path / name, data)

    def _append(self, name: str, record: dict[str, Any]) -> None:
        fh = self._files.get(name)
        if fh is None:
            fh = self._files[name] = open(self.path / name, "a", encoding="utf-8")
        fh.write(json.dumps(finite_or_none(record), allow_nan=False) + "\n")
        fh.flush()

    def log(self, record: dict[str, Any], timing: dict[str, Any] | None = None) -> None:
        """Append one line to ``metrics.jsonl`` and, if given, the step's wall-clock figures to
        ``timing.jsonl`` (non-finite numbers are written as ``null``: every line is strict JSON)."""
        self._append(METRICS, record)
        if timing is not None:
            self._append(TIMING, {"step": record["step"], **timing})

    def close(self) -> None:
        for fh in self._files.values():
            fh.close()
        self._files.clear()

    @property
    def checkpoint(self) -> Path:
        return self.path / CHECKPOINT


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a run's ``metrics.jsonl`` (a partial last line, from a killed run, is
    skipped)."""
    p = Path(path)
    if p.is_dir():
        p = p / METRICS
    records = []
    for line in p.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records
