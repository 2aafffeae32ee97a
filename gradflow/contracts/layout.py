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
        """The parameter ``name`` as an array of its shape, sharing memory with θ."""
        spec = self._spec(name)
        return _reshape(theta[spec.slice], spec.shape)

    def unflatten(self, theta: Any) -> dict[str, Any]:
        """``{name: view}`` for every parameter (views of θ, no copy)."""
        self._check(theta)
        return {name: self.view(theta, name) for name in self.specs}

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
            from array_api_compat import array_namespace

            xp = array_namespace(*pieces)
        return xp.concat([xp.reshape(p, (-1,)) for p in pieces])

    def _spec(self, name: str) -> ParamSpec:
        try:
            return self.specs[name]
        except KeyError:
            raise KeyError(f"no parameter {name!r}; the layout has {self.names}") from None


#: array namespace of each array type seen, so that a view costs no namespace lookup per step
_NAMESPACES: dict[type, Any] = {}


def _reshape(x: Any, shape: tuple[int, ...]) -> Any:
    xp = _NAMESPACES.get(type(x))
    if xp is None:
        from array_api_compat import array_namespace

        xp = _NAMESPACES.setdefault(type(x), array_namespace(x))
    return xp.reshape(x, shape)
