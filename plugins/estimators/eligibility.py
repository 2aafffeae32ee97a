"""Per-unit eligibility traces and their learning signal: what ``rflo`` and ``e-prop`` share.

Both estimators keep, per stream, one trace per recurrent parameter θ_j and coordinate c of its
unit u(j) (:meth:`gradflow.Model.units`: s coordinates per unit), an array ε (B, s, P_rec):

    ε_t[c, j] = Σ_c' D_t[u(j), c, c'] ε_{t−1}[c', j] + F_t[coords[u(j), c], j]
    g_t,rec[j] = Σ_b Σ_c L_t,b[coords[u(j), c]] ε_t,b[c, j]

with D_t the trace's own decay (RFLO: the leak λ of the unit's coordinates, a diagonal; e-prop:
the unit's internal Jacobian block) and L_t the learning signal (:class:`LearningSignal`). F_t is
added by the model's ``param_jacobian_units_accumulate`` (its non-zero entries only: F_t[k, j] = 0
unless k is a coordinate of u(j)), the decay and the contraction with L_t go through the units'
parameter blocks seen as (…, groups, n_units, width) arrays (:meth:`gradflow.Units.views`), so a
per-unit number reaches its parameters by broadcasting: no gather of P indices, no dense J_t or
F_t, nothing of size P allocated per step (the temporaries are bands of units of at most
:func:`gradflow.block_size` numbers, in the cache while they live).

**The learning signal** (option ``feedback``):

* ``"readout"`` (default): L_t = δ_t = ∂ℓ_t/∂h_t, the readout's own feedback (the record's
  ``delta``); with it the estimate is the gradient the traces can see (RTRL's, when the traces
  are the whole influence matrix);
* ``"random"``: L_t = (∂ℓ_t/∂ŷ_t) Bᵀ through a fixed random matrix B (n_state × k), the
  feedback alignment of Lillicrap et al. (2016) that Murray (2019) and Bellec et al. (2020,
  "random e-prop") use. B's entries are N(0, 1/k), as in Murray's published code
  (``np.random.randn(n_rec, n_out) / n_out**0.5``), drawn in float64 from a counter-based
  generator seeded with ``feedback_seed`` (:class:`gradflow.CounterRNG`: the same numbers on
  every backend), then cast to the run's dtype; rows of the state coordinates the readout does
  not read (:func:`read_coordinates`: the ``lstm``'s c) are zero, as the readout's own feedback
  is there. B is rebuilt from
  the options whenever the estimator is created, so it is the same after a resume and is not
  part of the checkpointed state.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterator
from typing import Any, Literal

import numpy as np
from pydantic import Field

from gradflow import (
    AffineReadoutModel,
    CounterRNG,
    Estimator,
    EstimatorOptions,
    Model,
    PerStream,
    StepRecord,
    block_size,
    blocks,
)

Array = Any


class FeedbackOptions(EstimatorOptions):
    feedback: Literal["readout", "random"] = Field(
        "readout", description="learning signal: the readout's δ_t = ∂ℓ_t/∂h_t, or the output "
        "error through a fixed random matrix B (n_state × k, entries N(0, 1/k))")
    feedback_seed: int = Field(0, ge=0, description="seed of the random feedback matrix B")


class LearningSignal:
    """L_t per stream (B, n_state) from a step's record (module docstring)."""

    def __init__(self, model: Model, options: FeedbackOptions) -> None:
        self.random = options.feedback == "random"
        self.matrix: Array | None = None
        if self.random:
            self.matrix = feedback_matrix(model, int(options.feedback_seed))

    def __call__(self, record: StepRecord) -> Array:
        if not self.random:
            return record.delta
        if record.dy is None:
            raise ValueError("random feedback needs the output error ∂ℓ_t/∂ŷ_t (StepRecord.dy), "
                             "which the caller of this step did not give")
        return record.dy @ self.matrix.mT


def read_coordinates(model: Model) -> np.ndarray:
    """The state coordinates the readout reads, a bool array (n_state,): the first
    ``n_visible`` of a model with gradflow's affine readout (the ``lstm``'s h, not its c: the
    readout's δ_t is exactly zero on the others), every coordinate for any other model."""
    read = np.ones(model.n_state, dtype=bool)
    if isinstance(model, AffineReadoutModel):
        read[model.affine_readout.n_visible:] = False
    return read


def feedback_matrix(model: Model, seed: int) -> Array:
    """B (n_state, k): N(0, 1/k) entries from ``CounterRNG(seed)``, zero on the rows of the
    coordinates the readout does not read (:func:`read_coordinates`)."""
    xp, k = model.xp, model.n_out
    draws = CounterRNG(xp, seed).normal((model.n_state, k), xp.float64) * (1.0 / k ** 0.5)
    rows = model.backend.asarray(read_coordinates(model).astype(np.float64))
    return xp.astype(draws * rows[:, None], model.dtype)


def unit_bands(xp: Any, view: Array, rows: int = 1) -> Iterator[tuple[int, int]]:
    """Bands of units of a block view (…, groups, n_units, width) such that ``rows`` slices
    (groups, band, width) hold at most :func:`gradflow.block_size` numbers together (one band
    when the whole view does; on a GPU always one): the temporaries of the decay and of the
    contraction are formed and consumed while they are in the cache."""
    groups, n_units, width = (int(d) for d in view.shape[-3:])
    per_unit = max(1, rows * groups * width)
    return iter(blocks(n_units, max(1, block_size(xp) // per_unit)))


class UnitTraceEstimator(Estimator):
    """The shared step of the module docstring; a subclass sets ``name``, ``description``,
    ``requires`` and implements :meth:`decay` (ε ← D_t ε in place)."""

    Options = FeedbackOptions
    kind = "biased"

    def __init__(self, model: Model, options: FeedbackOptions) -> None:
        super().__init__(model, options)
        self.units = model.units()
        coords = self.units.coords  # (n_units, s)
        #: index of L_t's entries in unit order, c major: L_units[b, c, u] = L_t[b, coords[u, c]]
        self._coords = model.backend.asarray(np.ascontiguousarray(coords.T).reshape(-1))
        #: the slots c whose coordinates the readout reads for some unit: L_t is exactly zero on
        #: the others (both feedbacks), so the contraction skips their traces (the lstm's c)
        read = read_coordinates(model)
        self._read_slots = [c for c in range(coords.shape[1]) if read[coords[:, c]].any()]
        self.signal = LearningSignal(model, options)

    def state_fields(self) -> list[PerStream]:
        """ε (B, s, P_rec), zero at the start and when a stream starts a new sequence."""
        return [PerStream("e", (self.units.size, self.layout.n_rec))]

    @abstractmethod
    def decay(self, record: StepRecord, views: list[Array]) -> None:
        """ε_{t−1} ← D_t ε_{t−1} in place, on the block views (B, s, groups, n_units, width) of
        the state."""

    def unit_signal(self, signal: Array) -> Array:
        """L_t (B, n_state) as L_units (B, s, n_units): one take of n_state numbers."""
        xp = self.xp
        picked = xp.take(signal, self._coords, axis=1)
        return xp.reshape(picked, (int(signal.shape[0]), self.units.size, self.units.n_units))

    def step(self, record: StepRecord) -> Array:
        xp, model, units = self.xp, self.model, self.units
        e = self.state.e
        views = list(units.views(xp, e))
        self.decay(record, views)
        model.param_jacobian_units_accumulate(record.theta, record.cache, e)  # ε += F_t
        signal = self.unit_signal(self.signal(record))  # (B, s, n_units)
        buf = self.direction_buffer()
        p = self.layout.n_rec
        terms = [(b, c) for b in range(int(e.shape[0])) for c in self._read_slots]
        if not terms:
            buf[:p] = 0.0
        for view, out in zip(views, units.views(xp, buf[:p]), strict=True):
            for u0, u1 in unit_bands(xp, view) if terms else ():
                target = out[:, u0:u1, :]
                for i, (b, c) in enumerate(terms):
                    term = view[b, c, :, u0:u1, :] * signal[b, c, None, u0:u1, None]
                    if i == 0:
                        target[...] = term
                    else:
                        target += term
        buf[p:] = record.grad_out
        return buf
