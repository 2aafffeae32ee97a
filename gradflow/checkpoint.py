"""Checkpoints: arrays in an ``.npz`` file and metadata in ``meta.json``, written atomically.

A checkpoint directory holds ``meta.json`` and the array file it names,
``arrays-<step>.npz``. Writing a new checkpoint first writes the new array file (temporary name,
fsync, rename), then replaces ``meta.json`` the same way, then deletes the array file it no longer
names: the rename of ``meta.json`` is the commit, so at every instant ``meta.json`` names a
complete array file. The arrays are read with ``allow_pickle=False``; ``meta.json`` carries the
format name and version, the array file's SHA-256 (checked on load) and the JSON scalars.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from gradflow.errors import GradflowError
from gradflow.rundir import atomic_write_bytes, atomic_write_json

FORMAT = "gradflow-checkpoint"
FORMAT_VERSION = 1
META = "meta.json"


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


def save_checkpoint(directory: str | Path, step: int, arrays: dict[str, np.ndarray],
                    meta: dict[str, Any]) -> Path:
    """Write a checkpoint of ``arrays`` and the JSON-able ``meta`` into ``directory``."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    data = buffer.getvalue()
    name = f"arrays-{step:012d}.npz"
    atomic_write_bytes(d / name, data)
    old = _named_arrays(d)
    atomic_write_json(d / META, {
        "format": FORMAT, "version": FORMAT_VERSION, "step": int(step), "arrays": name,
        "sha256": hashlib.sha256(data).hexdigest(), **meta,
    })
    if old is not None and old != name and (d / old).exists():
        (d / old).unlink()
    return d


def _named_arrays(d: Path) -> str | None:
    try:
        return json.loads((d / META).read_text())["arrays"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def load_checkpoint(directory: str | Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """(arrays, meta) of the checkpoint in ``directory``; :class:`CheckpointError` if unusable."""
    d = Path(directory)
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
    return arrays, meta
