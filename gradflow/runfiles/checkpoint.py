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

The arrays are read with ``allow_pickle=False`` after every member of the archive has been
checked (:func:`read_arrays`: uncompressed, numeric dtypes only, sizes that fit), so a hostile
file can neither unpickle anything nor make the reader allocate more than the file holds;
``meta.json`` carries the format name and version, the step (which must match the directory's
name), the array file's SHA-256 (checked on load: a truncated or altered file is detected) and
the JSON scalars.
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
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from gradflow.contracts.errors import CheckpointError
from gradflow.runfiles.rundir import fsync_directory, write_synced

FORMAT = "gradflow-checkpoint"
FORMAT_VERSION = 2
META, ARRAYS = "meta.json", "arrays.npz"
#: number of checkpoints kept in a run's checkpoint directory
KEEP = 2
_NAME = re.compile(r"step-(\d{12})")
_TMP = re.compile(r"\.step-\d{12}\.(tmp|old)-\d+")


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


def _read_meta(d: Path) -> dict[str, Any]:
    try:
        meta = json.loads((d / META).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"no checkpoint in {str(d)!r} ({META} is missing)") from None
    except (OSError, ValueError, RecursionError) as exc:
        why = "nested too deeply" if isinstance(exc, RecursionError) else exc
        raise CheckpointError(f"checkpoint {str(d)!r}: unreadable {META} ({why})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{str(d)!r} is not a gradflow checkpoint")
    if meta.get("version") != FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {str(d)!r} has format version {meta.get('version')}; "
                              f"this gradflow reads version {FORMAT_VERSION}")
    if meta.get("arrays") != ARRAYS:  # never a path of the checkpoint's choosing
        raise CheckpointError(f"checkpoint {str(d)!r}: {META} names the array file "
                              f"{meta.get('arrays')!r}; a gradflow checkpoint's is {ARRAYS!r}")
    step = meta.get("step")
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise CheckpointError(f"checkpoint {str(d)!r}: {META} has no valid step ({step!r})")
    match = _NAME.fullmatch(d.name)
    if match and int(match.group(1)) != step:
        raise CheckpointError(f"checkpoint {str(d)!r}: {META} says step {step}, its directory "
                              f"step {int(match.group(1))}")
    if not isinstance(meta.get("sha256"), str):
        raise CheckpointError(f"checkpoint {str(d)!r}: {META} has no SHA-256 of {ARRAYS}")
    return meta


def read_arrays(data: bytes, where: str) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` file's bytes, read without ever unpickling anything.

    Before NumPy reads an array (with ``allow_pickle=False``), each member of the archive is
    checked: stored uncompressed (as ``np.savez`` writes it: no zip bomb), named ``*.npy``, with
    a header of a plain numeric or boolean dtype (no object arrays, whose data is a pickle) and
    data no larger than the member itself. Anything else is a :class:`CheckpointError` naming the
    member; ``where`` names the file in messages.
    """
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        raise CheckpointError(f"{where} is not an .npz archive") from None
    arrays: dict[str, np.ndarray] = {}
    with archive:
        for info in archive.infolist():
            name = info.filename
            if not name.endswith(".npy") or info.is_dir():
                raise CheckpointError(f"{where}: member {name!r} is not a .npy array")
            if info.compress_type != zipfile.ZIP_STORED:
                raise CheckpointError(f"{where}: member {name!r} is compressed, which gradflow "
                                      "never writes; refusing it")
            try:
                with archive.open(info) as fh:
                    version = np.lib.format.read_magic(fh)
                    header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                              else np.lib.format.read_array_header_2_0)
                    shape, _, dtype = header(fh)
            except (ValueError, OSError, EOFError, zipfile.BadZipFile, SyntaxError,
                    TypeError) as exc:
                raise CheckpointError(f"{where}: member {name!r} has no valid .npy header "
                                      f"({exc})") from None
            key = name[:-len(".npy")]
            if dtype.hasobject or dtype.kind not in "biuf" or dtype.fields is not None:
                raise CheckpointError(
                    f"{where}: array {key!r} has dtype {dtype.str!r}"
                    f"{' (pickled Python objects)' if dtype.hasobject else ''}; a gradflow "
                    "checkpoint holds only numbers and booleans: refusing it (nothing was "
                    "unpickled)")
            size = int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
            if size > info.file_size:
                raise CheckpointError(f"{where}: array {key!r} claims shape {shape}, more data "
                                      "than the file holds")
            try:
                with archive.open(info) as fh:
                    arrays[key] = np.lib.format.read_array(fh, allow_pickle=False)
            except (ValueError, OSError, EOFError, zipfile.BadZipFile, MemoryError) as exc:
                raise CheckpointError(f"{where}: array {key!r} cannot be read ({exc})") from None
    return arrays


def _load_one(d: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    meta = _read_meta(d)
    path = d / ARRAYS
    try:
        data = path.read_bytes()
    except OSError:
        raise CheckpointError(f"checkpoint {str(d)!r}: array file {path.name!r} is missing") \
            from None
    if hashlib.sha256(data).hexdigest() != meta["sha256"]:
        raise CheckpointError(f"checkpoint {str(d)!r}: {path.name} is damaged (SHA-256 differs "
                              f"from the one in {META})")
    arrays = read_arrays(data, f"checkpoint {str(d)!r}: {ARRAYS}")
    meta["path"] = str(d)
    return arrays, meta


def load_checkpoint(directory: str | Path,
                    at_most: int | None = None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """(arrays, meta) of a checkpoint; :class:`CheckpointError` if there is no usable one.

    ``directory`` is one checkpoint (it holds ``meta.json``) or a run's checkpoint directory, of
    which the newest intact checkpoint is read (the newest at step ``at_most`` or before, when
    given: the replicas of a replicated run resume at the same step). ``meta["path"]`` is the
    checkpoint read; ``meta["skipped"]`` lists the problems of newer ones that could not be read
    (damaged).
    """
    d = Path(directory)
    if (d / META).exists():
        return _load_one(d)
    found = [(step, path) for step, path in list_checkpoints(d)
             if at_most is None or step <= at_most]
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
