"""Checkpoints: arrays in an ``.npz`` file and metadata in ``meta.json``, written atomically, the
last two kept.

A run's checkpoint directory holds one subdirectory per checkpoint, ``step-<12 digits>/``, each
with ``arrays.npz`` and ``meta.json``. Writing a checkpoint builds the new subdirectory under a
temporary name (``.step-<step>.tmp-<pid>``: each file written, flushed and fsynced, then the
directory itself fsynced), renames it to its final name and fsyncs the parent: the rename is the
commit, so a checkpoint either exists whole or not at all, whatever moment a kill lands on. Then
all but the newest ``keep`` (default two) are deleted, so that the previous checkpoint survives
until the next one is complete. Temporary directories left by a killed writer are ignored by the
readers and swept away by the next writer.

The arrays are read with ``allow_pickle=False``; ``meta.json`` carries the format name and
version, the step, the array file's SHA-256 (checked on load) and the JSON scalars.
:func:`load_checkpoint` reads the newest checkpoint that is intact, falling back to the one
before it (and saying so) if the newest is damaged.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from gradflow.errors import GradflowError
from gradflow.rundir import fsync_directory, write_synced

FORMAT = "gradflow-checkpoint"
FORMAT_VERSION = 2
META, ARRAYS = "meta.json", "arrays.npz"
#: number of checkpoints kept in a run's checkpoint directory
KEEP = 2
_NAME = re.compile(r"step-(\d{12})")
_TMP = re.compile(r"\.step-\d{12}\.(tmp|old)-\d+")


class CheckpointError(GradflowError):
    """A checkpoint that is missing, of another format or version, or damaged."""


def split_state(state: dict[str, Any], to_numpy: Any) -> tuple[dict[str, np.ndarray],
                                                              dict[str, Any]]:
    """Split a flat state dict into arrays (as NumPy, via ``to_numpy``) and JSON scalars."""
    arrays, scalars = {}, {}
    for key, value in state.items():
        if value is None or isinstance(value, bool | int | float | str):
            scalars[key] = value
        elif isinstance(value, np.generic):
            scalars[key] = value.item()
        else:
            arrays[key] = np.asarray(to_numpy(value))
    return arrays, scalars


def checkpoint_name(step: int) -> str:
    return f"step-{int(step):012d}"


def list_checkpoints(directory: str | Path) -> list[tuple[int, Path]]:
    """The committed checkpoints in ``directory`` as (step, path), oldest first."""
    d = Path(directory)
    if not d.is_dir():
        return []
    found = []
    for entry in d.iterdir():
        match = _NAME.fullmatch(entry.name)
        if match and entry.is_dir():
            found.append((int(match.group(1)), entry))
    return sorted(found)


def _sweep_temporaries(d: Path) -> None:
    for entry in d.iterdir():
        if _TMP.fullmatch(entry.name):
            shutil.rmtree(entry, ignore_errors=True)


def save_checkpoint(directory: str | Path, step: int, arrays: dict[str, np.ndarray],
                    meta: dict[str, Any], keep: int = KEEP) -> Path:
    """Write a checkpoint of ``arrays`` and the JSON-able ``meta`` at ``step`` into
    ``directory`` (see the module's rules) and return its path."""
    if keep < 1:
        raise ValueError(f"keep must be at least 1, got {keep}")
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    _sweep_temporaries(root)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    data = buffer.getvalue()
    name = checkpoint_name(step)
    final, tmp = root / name, root / f".{name}.tmp-{os.getpid()}"
    tmp.mkdir()
    try:
        write_synced(tmp / ARRAYS, data)
        record = {"format": FORMAT, "version": FORMAT_VERSION, "step": int(step),
                  "arrays": ARRAYS, "sha256": hashlib.sha256(data).hexdigest(), **meta}
        write_synced(tmp / META, (json.dumps(record, indent=2, allow_nan=False) + "\n").encode())
        fsync_directory(tmp)
        old = root / f".{name}.old-{os.getpid()}"
        if final.exists():  # the same step again: keep the old one until the new one is in
            os.replace(final, old)
        os.replace(tmp, final)
        fsync_directory(root)
        if old.exists():
            shutil.rmtree(old)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    for _, path in list_checkpoints(root)[:-keep]:
        shutil.rmtree(path, ignore_errors=True)
    return final


def _load_one(d: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    try:
        meta = json.loads((d / META).read_text())
    except FileNotFoundError:
        raise CheckpointError(f"no checkpoint in {str(d)!r} ({META} is missing)") from None
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {str(d)!r}: unreadable {META} ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{str(d)!r} is not a gradflow checkpoint")
    if meta.get("version") != FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {str(d)!r} has format version {meta.get('version')}; "
                              f"this gradflow reads version {FORMAT_VERSION}")
    path = d / str(meta.get("arrays"))
    try:
        data = path.read_bytes()
    except OSError:
        raise CheckpointError(f"checkpoint {str(d)!r}: array file {path.name!r} is missing") \
            from None
    if hashlib.sha256(data).hexdigest() != meta.get("sha256"):
        raise CheckpointError(f"checkpoint {str(d)!r}: {path.name} is damaged (SHA-256 differs)")
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    meta["path"] = str(d)
    return arrays, meta


def load_checkpoint(directory: str | Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """(arrays, meta) of a checkpoint; :class:`CheckpointError` if there is no usable one.

    ``directory`` is one checkpoint (it holds ``meta.json``) or a run's checkpoint directory, of
    which the newest intact checkpoint is read. ``meta["path"]`` is the checkpoint read;
    ``meta["skipped"]`` lists the problems of newer ones that could not be read (damaged).
    """
    d = Path(directory)
    if (d / META).exists():
        return _load_one(d)
    found = list_checkpoints(d)
    if not found:
        raise CheckpointError(f"no checkpoint in {str(d)!r}")
    skipped: list[str] = []
    for _, path in reversed(found):
        try:
            arrays, meta = _load_one(path)
        except CheckpointError as exc:
            skipped.append(str(exc))
            continue
        meta["skipped"] = skipped
        return arrays, meta
    more = f" (and {len(skipped) - 1} older one(s) unusable too)" if len(skipped) > 1 else ""
    raise CheckpointError(f"{skipped[0]}{more}")
