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
  after each line;
* one process at a time: a run directory being written is locked (``flock`` on ``.lock``,
  where the OS has it, with the holder's pid and host in the file), so a second ``gradflow
  train --resume`` of the same run, or a ``--force`` run into it, is refused (naming the holder)
  instead of interleaving its lines with the first's; the lock of a process that died is
  recognised and taken over with a warning;
* gradflow's own files in a run directory that is continued may not be symbolic links (a run
  directory from elsewhere cannot redirect an append);
* resuming a run (:meth:`RunDir.reopen`) first cuts both files back to the checkpoint's step
  (the lines a killed run wrote after its last checkpoint, and a half-written last line, go),
  rewriting them atomically, so that the continued run appends exactly the lines an
  uninterrupted run would have written.
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import shutil
import socket
import time
import warnings
from pathlib import Path
from typing import Any, TextIO

from gradflow.contracts.errors import GradflowWarning, RunDirError

CONFIG, METRICS, TIMING = "config.json", "metrics.jsonl", "timing.jsonl"
SUMMARY, CHECKPOINT = "summary.json", "checkpoint"
LOCK = ".lock"
_TMP = re.compile(r"\.(config\.json|metrics\.jsonl|timing\.jsonl|summary\.json)\.tmp-\d+")
OWN_FILES = (CONFIG, METRICS, TIMING, SUMMARY, CHECKPOINT)


def write_synced(path: Path, data: bytes) -> None:
    """Write ``data`` to a new file ``path``, flushed and fsynced before returning."""
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def fsync_directory(path: Path) -> None:
    """fsync a directory, so that the renames in it survive a crash (where the OS allows it)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename (atomic on POSIX)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write_synced(tmp, data)
        os.replace(tmp, path)
        fsync_directory(path.parent)
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


def _alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this machine (one of another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def _holder(fd: int) -> tuple[int, str] | None:
    """(pid, host) written in a lock file by the process that took it, or ``None``."""
    try:
        text = os.pread(fd, 200, 0).decode("utf-8", "replace").split()
        return (int(text[0]), text[1]) if len(text) >= 2 else None
    except (OSError, ValueError):
        return None


def _lock(path: Path) -> int | None:
    """Take the run directory's lock: an exclusive, non-blocking ``flock`` on ``path/.lock``
    (released by the OS when the descriptor is closed or the process ends, even by SIGKILL),
    with the holder's pid and host written in the file.

    A second writer is refused with a :class:`RunDirError` naming the holder. A lock file left
    by a process that died (killed, crashed, a machine that went down) is recognised — its
    ``flock`` is free, and its pid is no longer running — and taken over with a
    :class:`~gradflow.GradflowWarning`. Where ``flock`` is not available (some network
    filesystems), the pid in the file is the lock: a live holder on this host refuses, a dead
    one is taken over (best effort: two writers starting in the same instant could both pass).
    Returns the descriptor (``None`` where the OS has no ``fcntl``).
    """
    lock_path = path / LOCK
    if lock_path.is_symlink():
        raise RunDirError(f"run directory {str(path)!r}: {LOCK} is a symbolic link; gradflow "
                          "does not write through links")
    try:
        import fcntl
    except ImportError:  # pragma: no cover (Windows)
        return None
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
    except OSError as exc:
        raise RunDirError(f"cannot lock run directory {str(path)!r}: "
                          f"{exc.strerror or exc}") from None
    held = _holder(fd)
    me, host = os.getpid(), socket.gethostname()
    busy = f"run directory {str(path)!r} is being written by another gradflow process"
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        flocked = True
    except OSError as exc:
        flocked = False
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            os.close(fd)
            who = f" (pid {held[0]} on {held[1]})" if held else ""
            raise RunDirError(f"{busy}{who}") from None
    if held is not None and held[0] != me:
        pid, where = held
        if not flocked and (where != host or _alive(pid)):  # no flock: the pid is the lock
            os.close(fd)
            hint = "" if where == host else f"; if it is gone, delete {str(lock_path)!r}"
            raise RunDirError(f"{busy} (pid {pid} on {where}{hint})")
        state = "is no longer running" if where == host and not _alive(pid) else \
            "no longer holds it"
        warnings.warn(GradflowWarning(
            f"took over the stale lock of run directory {str(path)!r}: process {pid} on "
            f"{where}, which held it, {state} (killed or crashed)"), stacklevel=3)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{me} {host}\n".encode(), 0)
    return fd


def _refuse_links(path: Path) -> None:
    """A run directory to continue must not have gradflow's own files as symbolic links: a run
    directory from elsewhere could otherwise make an append land in any file."""
    for name in OWN_FILES:
        if (path / name).is_symlink():
            raise RunDirError(f"run directory {str(path)!r}: {name} is a symbolic link; "
                              "gradflow does not write through links")


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

    def __init__(self, path: Path, lock: int | None = None) -> None:
        self.path = path
        self._files: dict[str, TextIO] = {}
        self._lock = lock

    @classmethod
    def create(cls, path: str | Path, force: bool = False) -> RunDir:
        """Create (or, with ``force``, reuse) the directory ``path``; see the module's rules."""
        p = Path(path)
        if p.exists() and not p.is_dir():
            raise RunDirError(f"run directory {str(p)!r} exists and is not a directory")
        lock = None
        if p.is_dir() and any(p.iterdir()):
            if not force:
                raise RunDirError(f"run directory {str(p)!r} already exists and is not empty; "
                                  "pass --force to overwrite it, or choose another --out")
            lock = _lock(p)
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
        return cls(p, lock if lock is not None else _lock(p))

    @classmethod
    def reopen(cls, path: str | Path, step: int) -> RunDir:
        """An existing run directory, to be continued after ``step``: the lines of
        ``metrics.jsonl`` and ``timing.jsonl`` beyond ``step`` (and any partial line) are cut."""
        p = Path(path)
        if not p.is_dir():
            raise RunDirError(f"run directory {str(p)!r} does not exist")
        _refuse_links(p)
        lock = _lock(p)
        for entry in p.iterdir():  # temporaries of JSON files a killed writer left behind
            if _TMP.fullmatch(entry.name) and entry.is_file():
                entry.unlink(missing_ok=True)
        for name in (METRICS, TIMING):
            target = p / name
            if not target.exists():
                continue
            text = target.read_text(encoding="utf-8")
            kept = [line for line in text.splitlines(keepends=True)
                    if line.endswith("\n") and _line_step(line) <= step]
            if "".join(kept) != text:
                atomic_write_bytes(target, "".join(kept).encode())
        return cls(p, lock)

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
        """Close the files and release the directory's lock."""
        for fh in self._files.values():
            fh.close()
        self._files.clear()
        if self._lock is not None:
            try:  # a clean end leaves no holder behind: the next writer has nothing to take over
                os.ftruncate(self._lock, 0)
            except OSError:
                pass
            os.close(self._lock)
            self._lock = None

    @property
    def checkpoint(self) -> Path:
        return self.path / CHECKPOINT


def _line_step(line: str) -> float:
    """The ``step`` of a JSON line; +inf for a line that is not a complete record."""
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError, RecursionError):
        return math.inf


def read_metrics(path: str | Path, name: str = METRICS) -> list[dict[str, Any]]:
    """The records of a run's ``metrics.jsonl`` (or of its file ``name``, e.g.
    ``timing.jsonl``); a partial last line, from a killed run, is skipped, and so is any line
    that is not a record with an integer ``step`` (a file altered by hand or from elsewhere)."""
    p = Path(path)
    if p.is_dir():
        p = p / name
    records = []
    for line in p.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            continue
        step = record.get("step") if isinstance(record, dict) else None
        if isinstance(step, int) and not isinstance(step, bool):
            records.append(record)
    return records
