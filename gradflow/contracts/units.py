"""The unit structure of a recurrent model: which state coordinates and parameters belong together.

Most recurrent cells are made of *units*: unit u owns a few state coordinates (one for ``rnn``
and ``gru``, the pair (h_u, c_u) for ``lstm``) and the recurrent parameters of the rows that drive
them, and a parameter of unit u moves only unit u's coordinates in one step:

    F_t[k, j] = ∂h_t,k/∂θ_j = 0   unless k is a coordinate of the unit of θ_j.

The estimators that keep the influence matrix G_t = ∂h_t/∂θ_rec on a sparsity pattern (SnAp-n,
Menick et al. 2021), or a per-unit eligibility trace (e-prop, Bellec et al. 2020; RFLO, Murray
2019), read the structure from :meth:`gradflow.Model.units`; their state is O(s · P_rec) per
stream (s coordinates per unit) instead of RTRL's O(n · P_rec).

**The parameters' units are given by blocks**, not one index per parameter, so that an estimator
can scale every parameter by a per-unit number with broadcasting, never a gather of P indices:
a :class:`UnitBlock` ``(start, groups, width)`` covers the ``groups · n_units · width``
consecutive recurrent parameters from ``start`` on, seen as an array (groups, n_units, width), and
parameter (g, u, w) belongs to unit u. The ``rnn``'s W_hh (n × n) is one block (1, n, n): row u
of W_hh is unit u's; the ``lstm``'s W_ih (4n × m), with its four gate blocks, is (4, n, m).

The default structure of a model that declares none is a single unit holding every coordinate and
every parameter: always true, and SnAp-n is then RTRL itself (correct, only not cheaper).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

Array = Any


@dataclass(frozen=True)
class UnitBlock:
    """``groups · n_units · width`` consecutive recurrent parameters from ``start``, seen as
    (groups, n_units, width): parameter (g, u, w) belongs to unit u."""

    start: int
    groups: int
    width: int


@dataclass(frozen=True)
class Units:
    """The unit structure (module docstring).

    coords: int array (n_units, s): the state coordinates of each unit (every coordinate in
        exactly one unit; ``coords[u, c]`` is unit u's c-th coordinate, in the same order for
        every unit: for the ``lstm``, c = 0 is h_u and c = 1 is c_u).
    blocks: the recurrent parameters, in order, as :class:`UnitBlock` s covering [0, P_rec).
    """

    coords: np.ndarray
    blocks: tuple[UnitBlock, ...]

    @property
    def n_units(self) -> int:
        return int(self.coords.shape[0])

    @property
    def size(self) -> int:
        """s: the number of state coordinates of a unit."""
        return int(self.coords.shape[1])

    @property
    def n_params(self) -> int:
        return sum(b.groups * self.n_units * b.width for b in self.blocks)

    @classmethod
    def single(cls, n_state: int, n_rec: int) -> Units:
        """One unit holding every coordinate and parameter (the default: always true)."""
        return cls(np.arange(n_state, dtype=np.int64)[None, :], (UnitBlock(0, 1, n_rec),))

    @classmethod
    def rows(cls, coords: np.ndarray, shapes: list[tuple[int, int]]) -> Units:
        """Consecutive parameter blocks of the given (groups, width), starting at 0."""
        blocks, start = [], 0
        n_units = int(coords.shape[0])
        for groups, width in shapes:
            blocks.append(UnitBlock(start, groups, width))
            start += groups * n_units * width
        return cls(np.asarray(coords, dtype=np.int64), tuple(blocks))

    def views(self, xp: Any, acc: Array) -> Iterator[Array]:
        """For ``acc`` (..., P_rec), one view per block of shape (..., groups, n_units, width):
        ``view *= scale[..., None, :, None]`` scales each parameter by its unit's number."""
        lead = tuple(acc.shape[:-1])
        for b in self.blocks:
            stop = b.start + b.groups * self.n_units * b.width
            yield xp.reshape(acc[..., b.start:stop], (*lead, b.groups, self.n_units, b.width))

    def param_unit(self) -> np.ndarray:
        """The unit of each recurrent parameter, an int array (P_rec,) (for checks and generic
        code; the hot paths use :meth:`views`)."""
        parts = [np.broadcast_to(np.arange(self.n_units)[None, :, None],
                                 (b.groups, self.n_units, b.width)).reshape(-1)
                 for b in self.blocks]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    def problems(self, n_state: int, n_rec: int) -> list[str]:
        """What is wrong with this structure for a model of these sizes (empty if nothing)."""
        out = []
        flat = np.sort(self.coords.reshape(-1))
        if self.coords.ndim != 2 or not np.array_equal(flat, np.arange(n_state)):
            out.append(f"coords must hold every state coordinate 0..{n_state - 1} exactly once")
        start = 0
        for b in self.blocks:
            if b.start != start or b.groups < 1 or b.width < 1:
                out.append(f"parameter block {b} does not continue at {start} with positive "
                           "sizes")
            start = b.start + b.groups * self.n_units * b.width
        if start != n_rec:
            out.append(f"the parameter blocks cover {start} recurrent parameters, not {n_rec}")
        return out
