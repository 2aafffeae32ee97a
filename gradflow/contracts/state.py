"""The state of an estimator, declared in one place.

An estimator lists what its state is made of in :meth:`gradflow.Estimator.state_fields`, once:

* :class:`PerStream` — an array with a leading axis of the B streams, ``(B, *shape)``: a stream's
  own memory of its past (RTRL's G, the rank-one factors ṽ and w̃). ``reset=True`` (the default)
  puts a stream's row back to ``fill`` when that stream starts a new sequence;
* :class:`Shared` — an array of the run, ``shape`` (the Kalman filter's information J_θ);
* :class:`Scalar` — a JSON number, boolean or ``None`` (an update count);
* :class:`Window` — a bounded queue of recent steps, each a dict of arrays or of dicts of arrays
  (TBPTT's δ_t and forward caches).

The base class does the rest, the same way for every estimator: it allocates the fields when a run
starts (:func:`allocate`), resets the per-stream fields of the streams a mask selects
(:func:`reset_streams`), snapshots the whole as a flat dict of copies (:func:`snapshot`: what a
checkpoint stores) and restores one (:func:`restore`), checking every declared field is there with
its declared shape. The values live in a :class:`State`, one attribute per field
(``estimator.state.v``); anything else an estimator keeps is configuration or a workspace derived
from the state (:meth:`gradflow.Estimator.setup_workspace`), never part of a checkpoint.

Flat keys of a snapshot: ``array.<name>`` for arrays, ``<name>`` for scalars, and for a window
``<name>.length`` with ``array.<name>.<i>.<key>`` (``array.<name>.<i>.<key>.<inner key>`` for a
dict in the entry) for entry i, oldest first.

A declaration holds no sizes that depend on B, so the same declaration serves any number of
streams — and a leading replica axis (R independent runs advanced together) is one more axis the
base class can put in front of every field without the estimator declaring anything new.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from gradflow.contracts.backend import namespace_of
from gradflow.contracts.errors import ShapeError

Array = Any


@dataclass(frozen=True)
class PerStream:
    """An array of shape (B, *shape): one row per stream, ``fill`` at the start.

    ``reset``: a stream that starts a new sequence gets its row back at ``fill`` (what the
    estimator remembers of a stream's past must not cross a sequence boundary). ``dtype``:
    ``"float"`` (the run's floating dtype) or ``"bool"``.
    """

    name: str
    shape: tuple[int, ...] = ()
    fill: float | bool = 0.0
    reset: bool = True
    dtype: Literal["float", "bool"] = "float"


@dataclass(frozen=True)
class Shared:
    """An array of shape ``shape`` shared by the streams of a run, ``fill`` at the start."""

    name: str
    shape: tuple[int, ...]
    fill: float = 0.0


@dataclass(frozen=True)
class Scalar:
    """A JSON scalar (int, float, bool or ``None``), ``value`` at the start."""

    name: str
    value: int | float | bool | None = 0


@dataclass(frozen=True)
class Window:
    """A queue of at most ``length`` entries (``None``: unbounded), oldest first; empty at the
    start. An entry is a dict whose values are arrays or dicts of arrays (a model's forward
    cache, kept as it is), with keys without '.'; it is never modified once appended."""

    name: str
    length: int | None = None


StateField = PerStream | Shared | Scalar | Window


class State:
    """The values of an estimator's declared fields, one attribute each (``state.G``)."""

    def __repr__(self) -> str:
        parts = []
        for key, value in vars(self).items():
            shape = getattr(value, "shape", None)
            shown = (f"{tuple(shape)}" if shape is not None else
                     f"[{len(value)}]" if isinstance(value, deque) else repr(value))
            parts.append(f"{key}={shown}")
        return f"State({', '.join(parts)})"


def check_fields(fields: Sequence[Any], owner: str) -> tuple[StateField, ...]:
    """``fields`` as a tuple, after checking that each is a declaration with a unique name."""
    seen: set[str] = set()
    for field in fields:
        if not isinstance(field, PerStream | Shared | Scalar | Window):
            raise TypeError(f"{owner}: state_fields() must return PerStream, Shared, Scalar or "
                            f"Window declarations, got {field!r}")
        if not field.name or "." in field.name or field.name in seen:
            raise ValueError(f"{owner}: state field names must be unique and without '.', got "
                             f"{field.name!r}")
        seen.add(field.name)
    return tuple(fields)


def _dtype(xp: Any, dtype: Any, field: PerStream | Shared) -> Any:
    return xp.bool if isinstance(field, PerStream) and field.dtype == "bool" else dtype


def _full(xp: Any, shape: tuple[int, ...], fill: float | bool, dtype: Any) -> Array:
    return xp.zeros(shape, dtype=dtype) if not fill else xp.full(shape, fill, dtype=dtype)


def declared_bytes(fields: Iterable[StateField], batch: int, itemsize: int) -> int:
    """Bytes of the arrays a declaration allocates for ``batch`` streams (floats of ``itemsize``
    bytes, booleans of 1; windows start empty), before anything is allocated."""
    total = 0
    for field in fields:
        if isinstance(field, PerStream):
            size = 1 if field.dtype == "bool" else itemsize
            total += batch * math.prod(field.shape) * size
        elif isinstance(field, Shared):
            total += math.prod(field.shape) * itemsize
    return total


def allocate(fields: Iterable[StateField], xp: Any, dtype: Any, batch: int,
             lead: tuple[int, ...] = ()) -> State:
    """A fresh :class:`State`: every field at its initial value, for ``batch`` streams (with the
    leading axes ``lead`` in front of every array: (R,) for R replicated runs)."""
    state = State()
    for field in fields:
        if isinstance(field, PerStream):
            value: Any = _full(xp, (*lead, batch, *field.shape), field.fill,
                               _dtype(xp, dtype, field))
        elif isinstance(field, Shared):
            value = _full(xp, (*lead, *field.shape), field.fill, dtype)
        elif isinstance(field, Scalar):
            value = field.value
        else:
            value = deque(maxlen=field.length)
        setattr(state, field.name, value)
    return state


def reset_streams(fields: Iterable[StateField], state: State, xp: Any, mask: Array) -> None:
    """Put the rows of the streams selected by ``mask`` (B,) — (R, B) for replicated runs — back
    at their initial value, for every per-stream field declared with ``reset=True`` (new arrays:
    the old ones may be referenced elsewhere)."""
    for field in fields:
        if isinstance(field, PerStream) and field.reset:
            x = getattr(state, field.name)
            m = xp.reshape(mask, tuple(mask.shape) + (1,) * (x.ndim - mask.ndim))
            setattr(state, field.name, xp.where(m, xp.asarray(field.fill, dtype=x.dtype), x))


def snapshot(fields: Iterable[StateField], state: State, copy: Callable[[Array], Array],
             replica: int | None = None) -> dict[str, Any]:
    """The state as a flat dict of copies (arrays through ``copy``) and JSON scalars — of
    replica ``replica`` of a replicated state (every array with a leading replica axis) when
    given: exactly what the state of that run made alone would give."""
    if replica is not None:
        whole = copy

        def copy(x: Array) -> Array:
            return whole(x[replica, ...])

    out: dict[str, Any] = {}
    for field in fields:
        value = getattr(state, field.name)
        if isinstance(field, PerStream | Shared):
            out[f"array.{field.name}"] = copy(value)
        elif isinstance(field, Scalar):
            out[field.name] = value
        else:
            out[f"{field.name}.length"] = len(value)
            for i, entry in enumerate(value):
                for key, item in entry.items():
                    prefix = f"array.{field.name}.{i}.{key}"
                    if isinstance(item, dict):
                        out.update({f"{prefix}.{k}": copy(v) for k, v in item.items()})
                    else:
                        out[prefix] = copy(item)
    return out


def restore(fields: Iterable[StateField], flat: Mapping[str, Any], load: Callable[[Any], Array],
            batch: int, owner: str) -> State:
    """A :class:`State` from a :func:`snapshot` (arrays through ``load``, which must copy),
    checking that every declared field is there with its declared shape."""
    state = State()
    for field in fields:
        try:
            if isinstance(field, PerStream | Shared):
                value: Any = load(flat[f"array.{field.name}"])
                want = ((batch, *field.shape) if isinstance(field, PerStream)
                        else tuple(field.shape))
                if tuple(value.shape) != want:
                    raise ShapeError(f"{owner}: state array {field.name!r} has shape "
                                     f"{tuple(value.shape)}, expected {want}")
            elif isinstance(field, Scalar):
                value = flat[field.name]
            else:
                value = deque(maxlen=field.length)
                for i in range(int(flat[f"{field.name}.length"])):
                    prefix = f"array.{field.name}.{i}."
                    entry: dict[str, Any] = {}
                    for k, v in flat.items():
                        if k.startswith(prefix):
                            key, dot, inner = k[len(prefix):].partition(".")
                            if dot:
                                entry.setdefault(key, {})[inner] = load(v)
                            else:
                                entry[key] = load(v)
                    value.append(entry)
        except KeyError as exc:
            raise ShapeError(f"{owner}: the saved state has no {exc.args[0]!r} (its state "
                             f"fields are {', '.join(f.name for f in fields)})") from None
        setattr(state, field.name, value)
    return state


def restore_replica(fields: Iterable[StateField], state: State, replica: int,
                    flat: Mapping[str, Any], load: Callable[[Any], Array], batch: int,
                    owner: str) -> None:
    """Write the :func:`snapshot` of a run made alone, ``flat``, into replica ``replica`` of a
    replicated state, checking every field like :func:`restore`. Scalars are shared by the
    replicas (they advance together). A window takes the entries of ``flat``: entries missing
    from the state are created (zero for the other replicas, which load theirs in turn)."""
    alone = restore(fields, flat, load, batch, owner)
    for field in fields:
        value = getattr(alone, field.name)
        if isinstance(field, PerStream | Shared):
            getattr(state, field.name)[replica, ...] = value
        elif isinstance(field, Scalar):
            setattr(state, field.name, value)
        else:
            window = getattr(state, field.name)
            replicas = _replicas(state, fields)
            while len(window) > len(value):
                window.popleft()
            for i, entry in enumerate(value):
                if i == len(window):
                    window.append(_stacked_zeros(entry, replicas))
                _write_entry(window[i], entry, replica)


def _replicas(state: State, fields: Iterable[StateField]) -> int:
    for field in fields:
        if isinstance(field, PerStream | Shared):
            return int(getattr(state, field.name).shape[0])
    raise ShapeError("a replicated state with windows needs an array field to know R")


def _stacked_zeros(entry: dict[str, Any], replicas: int) -> dict[str, Any]:
    """An entry shaped like ``entry`` with a leading replica axis, all zeros."""
    out: dict[str, Any] = {}
    for key, item in entry.items():
        if isinstance(item, dict):
            out[key] = _stacked_zeros(item, replicas)
        else:
            out[key] = namespace_of(item).zeros((replicas, *item.shape), dtype=item.dtype)
    return out


def _write_entry(target: dict[str, Any], entry: dict[str, Any], replica: int) -> None:
    for key, item in entry.items():
        if isinstance(item, dict):
            _write_entry(target[key], item, replica)
        else:
            target[key][replica, ...] = item
