"""Flat parameter vectors and their named views.

Each model keeps all its parameters in one flat 1-D array θ = [θ_rec | θ_out]: the recurrent
parameters first, then the readout parameters. A :class:`ParamLayout` maps each name to a slice of
θ and a shape (row-major), giving zero-copy views, ``unflatten(θ) -> dict`` and
``flatten(dict) -> θ``. Estimator, optimizer and checkpoint state all work on flat vectors.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from gradflow.contracts.backend import namespace_of
from gradflow.contracts.errors import ShapeError


@dataclass(frozen=True)
class ParamSpec:
    """One named parameter: its place ``[offset, offset + size)`` in θ and its shape."""

    name: str
    shape: tuple[int, ...]
    offset: int
    recurrent: bool

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def slice(self) -> slice:
        return slice(self.offset, self.offset + self.size)


class ParamLayout:
    """The named pieces of a flat parameter vector θ = [θ_rec | θ_out].

    Parameters
    ----------
    recurrent:
        ``(name, shape)`` pairs of the recurrent core's parameters θ_rec, in order.
    readout:
        ``(name, shape)`` pairs of the readout's parameters θ_out, in order.
    """

    def __init__(
        self,
        recurrent: Iterable[tuple[str, tuple[int, ...]]],
        readout: Iterable[tuple[str, tuple[int, ...]]] = (),
    ) -> None:
        specs: list[ParamSpec] = []
        offset = 0
        for is_rec, group in ((True, recurrent), (False, readout)):
            for name, shape in group:
                shape = tuple(int(s) for s in shape)
                spec = ParamSpec(name, shape, offset, is_rec)
                if any(s.name == name for s in specs):
                    raise ValueError(f"duplicate parameter name {name!r}")
                specs.append(spec)
                offset += spec.size
            if is_rec:
                self.n_rec = offset
        self.specs: dict[str, ParamSpec] = {s.name: s for s in specs}
        self.size = offset
        #: (vector, its views) of the last vectors seen, newest first (see view)
        self._cached: list[tuple[Any, dict[str, Any]]] = []

    # -- sizes -------------------------------------------------------------------------------
    @property
    def n_out(self) -> int:
        """Number of readout parameters P_out."""
        return self.size - self.n_rec

    @property
    def names(self) -> list[str]:
        return list(self.specs)

    @property
    def rec(self) -> slice:
        """Slice of θ_rec in θ."""
        return slice(0, self.n_rec)

    @property
    def out(self) -> slice:
        """Slice of θ_out in θ."""
        return slice(self.n_rec, self.size)

    def __len__(self) -> int:
        return self.size

    def __contains__(self, name: object) -> bool:
        return name in self.specs

    def __repr__(self) -> str:
        parts = ", ".join(f"{s.name}{list(s.shape)}" for s in self.specs.values())
        return f"ParamLayout(P={self.size}, P_rec={self.n_rec}: {parts})"

    # -- views -------------------------------------------------------------------------------
    def _check(self, theta: Any) -> None:
        if theta.ndim != 1 or theta.shape[0] != self.size:
            raise ShapeError(f"θ must have shape ({self.size},), got {tuple(theta.shape)}")

    def view(self, theta: Any, name: str) -> Any:
        """The parameter ``name`` as an array of its shape, sharing memory with θ.

        θ may also be a vector of the recurrent parameters only (P_rec numbers: an estimator's
        w̃, a metric on θ_rec), whose views are the recurrent parameters'.

        The views of the last few vectors seen are kept: θ is one array updated in place for a
        whole run, so a model's step looks its weights up instead of slicing and reshaping θ
        again (a view costs a few microseconds, a step at n = 32 a few dozen). The layout holds
        a reference to each vector whose views it keeps, so that no other array can take its
        identity while they are kept.
        """
        cached = self._cached
        views = cached[0][1] if cached and cached[0][0] is theta else self.views(theta)
        try:
            return views[name]
        except KeyError:
            raise KeyError(f"no parameter {name!r} in a vector of {theta.shape[0]} numbers; the "
                           f"layout has {self.names}") from None

    def views(self, theta: Any) -> dict[str, Any]:
        """``{name: view}`` for every parameter of θ (cached like :meth:`view`; of the recurrent
        parameters only for a vector of P_rec numbers).

        θ may have leading axes: an array (B, P) or (B, P_rec) — one vector per stream, such as
        a rank-one estimator's w̃ — has views of shape (B, *shape), so that a per-stream update
        of one parameter is one operation on its view. Such views are made without a copy
        (``reshape(..., copy=False)``: a backend that would have to copy raises instead of
        handing out an array whose updates are lost).
        """
        for vector, views in self._cached:
            if vector is theta:
                return views
        size = theta.shape[-1] if theta.ndim >= 1 else -1
        if size == self.n_rec and self.n_rec != self.size:
            specs = [spec for spec in self.specs.values() if spec.recurrent]
        elif theta.ndim == 1:
            self._check(theta)
            specs = list(self.specs.values())
        elif size == self.size:
            specs = list(self.specs.values())
        else:
            raise ShapeError(f"vectors over θ must have {self.size} (or {self.n_rec}, θ_rec) "
                             f"numbers in their last axis, got shape {tuple(theta.shape)}")
        if theta.ndim == 1:
            views = {spec.name: _reshape(theta[spec.slice], spec.shape) for spec in specs}
        else:
            lead = tuple(theta.shape[:-1])
            views = {spec.name: _reshape(theta[..., spec.slice], lead + spec.shape, copy=False)
                     for spec in specs}
        self._cached = [(theta, views), *self._cached[:_CACHED - 1]]
        return views

    def unflatten(self, theta: Any) -> dict[str, Any]:
        """``{name: view}`` for every parameter (views of θ, no copy)."""
        return dict(self.views(theta))

    def flatten(self, params: Mapping[str, Any], xp: Any = None) -> Any:
        """Concatenate named arrays into θ, checking that names and shapes match the layout."""
        missing = [n for n in self.specs if n not in params]
        extra = [n for n in params if n not in self.specs]
        if missing or extra:
            raise ShapeError(f"parameter names do not match the layout: missing {missing}, "
                             f"unexpected {extra}")
        pieces = []
        for name, spec in self.specs.items():
            value = params[name]
            if tuple(value.shape) != spec.shape:
                raise ShapeError(f"parameter {name!r} must have shape {spec.shape}, "
                                 f"got {tuple(value.shape)}")
            pieces.append(value)
        if xp is None:
            xp = namespace_of(pieces[0])
        return xp.concat([xp.reshape(p, (-1,)) for p in pieces])

    def __getstate__(self) -> dict[str, Any]:
        """Pickled (a sweep's worker, a deep copy) without the cached views of a θ."""
        return {**self.__dict__, "_cached": []}


#: vectors whose views a layout keeps (θ, and a vector over θ_rec or two)
_CACHED = 4


def _reshape(x: Any, shape: tuple[int, ...], copy: bool | None = None) -> Any:
    xp = namespace_of(x)
    return xp.reshape(x, shape) if copy is None else xp.reshape(x, shape, copy=copy)
