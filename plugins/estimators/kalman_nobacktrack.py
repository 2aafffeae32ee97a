"""Kalman-NoBackTrack: NoBackTrack in the metrics of a lightweight Kalman-like filter
(Ollivier, Tallec & Charpiat, arXiv 1507.07680, the filtered version of the algorithm).

Two diagonal "information" estimates are kept:

* on θ (shared by the streams, all P parameters, starting at 0):
      J_θ ← (1 − γ_t) J_θ + γ_t ĝ_t²,   γ_t = 1/(t + t0)  (t = 1, 2, ... ; or a constant γ),
  where ĝ_t is the full (recurrent + readout) gradient estimate of the step, squared elementwise.
  With γ_t = 1/(t + t0), J_θ is the running mean of ĝ² — the information of an extended Kalman
  filter on a static parameter, here restricted to its diagonal;
* on the state (per stream, starting at ``jh_init``):
      J_h ← (1 − β) J_h + β (B δ_t)²,
  the mean square sensitivity of the loss to each state coordinate (δ_t carries the 1/B of the
  mean loss; B δ_t is the stream's own loss gradient, so the metric of a stream does not depend on
  how many streams run). The norms use it with a relative floor,
      M_h = J_h + κ · mean_k J_h      (κ = ``state_floor``, per stream),
  because δ_t only sees the coordinates the readout reads: on the others (the cell state of an
  LSTM, every coordinate but s¹ of the ``influence`` model) J_h decays like jh_init (1 − β)^t,
  although an error of ṽ there reaches the loss later through J_t. With M_h → 0 there, ρ_k → ∞
  on those coordinates, the cross terms of the fresh pair grow like M_h^(−1/2) ∝ e^(βt/2), and so
  do ĝ and J_θ: the step (J_θ + λ)⁻¹ĝ vanishes. Only the shape of M_h matters (scaling the state
  metric by c scales every ρ by c^(−1/4), which leaves ṽ w̃ᵀ unchanged), so the floor is relative.

The rank-one reduction of NoBackTrack is done with norms in these metrics,

    |w|² = Σ_j w_j² / (J_θ,j + λ)   (θ_rec part),     |v|² = Σ_k M_h,k v_k²,
    ρ̄   = sqrt((|w̃| + ε) / (|J_t ṽ| + ε)),   ρ_k = sqrt((|F_t[k, :]| + ε) / (|e_k| + ε)),

with |F_t[k, :]|² = Σ_j F_t[k, j]² / (J_θ,j + λ) (the model's ``param_row_sqnorms`` with the inverse
metric) and |e_k|² = M_h,k. The metrics weight the error of ṽ w̃ᵀ the way it matters for the update
(a state error counts through δ, a parameter error through the step (J_θ + λ)⁻¹), so the balancing
minimises the variance of the preconditioned update instead of a Euclidean one. Any positive
weights keep the estimate unbiased: the ρ's of step t use J_h (updated with δ_t, which does not
depend on the signs) and J_θ from before step t, never the signs drawn at step t.

Each step, in order: J_h ← ..., the NoBackTrack update in these norms, ĝ_t = [Σ_b (δ_t,b · ṽ_b) w̃_b,
∂ℓ_t/∂θ_out], J_θ ← ..., and the direction returned is (J_θ + λ)⁻¹ ĝ_t (the natural-gradient /
Kalman step). With :attr:`precondition` off (as in :func:`gradflow.frozen_gradients` and
``gradflow check``), ĝ_t itself is returned; the filter is updated the same way.

Memory per stream: ṽ (n), w̃ (P_rec), J_h and M_h (n); plus J_θ (P) shared. Cost per step:
NoBackTrack's plus O(P). J_θ is updated in place, and (J_θ + λ)⁻¹ is computed once per step, after
the update, in a buffer allocated once: it preconditions this step's direction (ĝ ⊙ (J_θ + λ)⁻¹, in
place in the direction buffer) and gives the metric of the next step (J_θ does not change in
between). The three are one pass over ĝ, J_θ and (J_θ + λ)⁻¹, block by block
(:mod:`gradflow.contracts.blocking`).

**Rank r** (option ``rank``): r independent chains per stream, averaged into ĝ_t (variance ÷ r,
cost × r; :mod:`~gradflow_plugins.estimators.rank_one`). The filter is the same: J_h from the
step's δ_t, its metric shared by a stream's r chains, J_θ from the averaged ĝ_t.

**The quasi-diagonal metric** (option ``metric = "quasi-diagonal"``; Ollivier, "Riemannian metrics
for neural networks I", arXiv 1303.0818: the quasi-diagonal outer-product metric, QDOP). A diagonal
metric depends on how each input of a unit is coded (replacing an input x_j by x_j + c, the bias
absorbing the shift, mixes the bias's gradient into w_j's); QDOP keeps, per unit, the diagonal and
each incoming weight's coupling with that unit's bias — exactly the entries such a change mixes —
and inverts that "arrow" matrix unit by unit. A unit here is a row i of the model's Kronecker weight
matrix W (``param_kron_factors`` / ``kron_index``: F_t[k, W_ij] = D[k, i] x̂_j, rows the
pre-activations, columns the inputs): its incoming weights are W_ij, its bias the last column, whose
input x̂ must be the constant 1 (checked on random inputs when the estimator is created; a model
without the primitive, or whose last input is not 1, is refused with a one-line error). Information
kept: J_θ as above, and per weight the coupling C_ij ← (1 − γ_t) C_ij + γ_t ĝ_ij ĝ_i0 (state
``J_cross`` (P_rec,), θ_rec's order, 0 on the biases). Per unit i, with D_j = J_θ,ij + λ (weights),
a = J_θ,i0 + λ (bias), c_j = C_ij:

    M_i = [[a, cᵀ], [c, diag(D)]],   s = a − Σ_j c_j² / D_j   (floored at λ: see below),
    M_i⁻¹ z:  x_0 = (z_0 − Σ_j c_j z_j / D_j) / s,   x_j = z_j / D_j − (c_j / D_j) x_0,
    zᵀ M_i⁻¹ z = Σ_j z_j² / D_j + (z_0 − Σ_j c_j z_j / D_j)² / s.

This is QDOP's update (Ollivier 2013, the quasi-diagonal gradient, with the bias as the index 0).
It replaces (J_θ + λ)⁻¹ on θ_rec everywhere: in |w̃|² = w̃ᵀ M⁻¹ w̃, in the row norms
|F_t[k, :]|² = Σ_i D[k, i]² x̂ᵀ M_i⁻¹ x̂ (row k of F_t is Σ_i D[k, i] e_i ⊗ x̂, and M⁻¹ is block
diagonal over the units) and in the returned step M⁻¹ ĝ_rec; the readout keeps the diagonal
(J_θ + λ)⁻¹ (its structure is not part of the model contract). Any positive-definite metric
keeps ĝ unbiased (the metric is from before step t). The arrow matrix of the undamped information
need not be positive definite (its couplings come from a full matrix whose other off-diagonal
entries are dropped), so s is floored at λ — the value it has at least whenever the undamped
quasi-diagonal information is positive semi-definite —, i.e. the bias's diagonal entry is raised
to λ + Σ_j c_j² / D_j where needed: the metric stays positive definite and ‖M⁻¹‖ bounded. Cost:
O(P) per step more (gathers into W's order, and the Kronecker factors of F_t); memory P_rec more.
Measured on ``add`` it does not train (the Schur complement is floored on every unit: the arrow
matrix of these statistics is far from positive definite; docs/estimators/kalman-nobacktrack.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
from gradflow_plugins.estimators.nobacktrack import NoBackTrack
from gradflow_plugins.estimators.rank_one import RankOneOptions
from pydantic import Field

from gradflow import (
    PARAM_KRON_FACTORS,
    TEMPORARY_BLOCK,
    CapabilityError,
    PerStream,
    Scalar,
    Shared,
    StepRecord,
    block_size,
    blocks,
)

Array = Any


def information_cap(xp: Any, dtype: Any) -> float:
    """The largest J_θ kept, √(largest float): where ĝ² overflows (saturated units with huge
    loss gradients feed back through the metric: w̃ grows like √(J_θ + λ)), J_θ stops there, so
    (J_θ + λ)⁻¹ stays > 0, the state stays finite and w̃ stays far from overflowing."""
    return float(xp.finfo(dtype).max) ** 0.5


def at_most(xp: Any, x: Array, cap: Array) -> None:
    """x ← min(x, cap) in place (NaN stays NaN)."""
    try:
        xp.minimum(x, cap, out=x)  # NumPy, CuPy
    except TypeError:  # a namespace without out= (array-api-strict)
        x[...] = xp.minimum(x, cap)


class KalmanNoBackTrackOptions(RankOneOptions):
    """Options of ``kalman-nobacktrack`` (defaults: the setting measured in
    docs/architecture.md §9)."""

    t0: float = Field(
        100.0, ge=0.0,
        description="t0 of the default schedule γ_t = 1/(t + t0) of the information on θ",
    )
    gamma: float | None = Field(
        None, gt=0.0, le=1.0,
        description="constant γ for the information on θ (an exponential moving average) "
        "instead of 1/(t + t0)",
    )
    damping: float = Field(
        1e-3, gt=0.0, description="λ: damping added to J_θ in the metric and the step",
    )
    beta: float = Field(
        1e-3, gt=0.0, le=1.0, description="β: rate of the moving average J_h of δ²",
    )
    jh_init: float = Field(1e-2, gt=0.0, description="initial value of every entry of J_h")
    state_floor: float = Field(
        1.0, ge=0.0,
        description="κ: the state metric of the norms is J_h + κ·mean_k J_h (per stream), so that "
        "coordinates the loss does not read directly keep a weight (0: J_h itself, which decays "
        "to 0 there and makes the estimate's variance grow like e^(βt/2))",
    )
    metric: Literal["diagonal", "quasi-diagonal"] = Field(
        "diagonal",
        description="the metric on θ_rec: 'diagonal' (J_θ + λ) or 'quasi-diagonal' (QDOP, "
        "Ollivier 2013: per unit the diagonal plus each incoming weight's coupling with the "
        "unit's bias, inverted unit by unit; needs the model's param_kron_factors)",
    )


@dataclass(frozen=True)
class QuasiDiagonalUnits:
    """The units of the quasi-diagonal metric: θ_rec as the model's Kronecker weight matrix W
    (n_rows × n_cols, ``kron_index``), one unit per row, its bias the last column.

    ``order`` (P_rec,) lists θ_rec's indices row by row (W's order), ``inverse`` is its inverse
    permutation (θ_rec's order from W's)."""

    n_rows: int
    n_cols: int
    order: np.ndarray
    inverse: np.ndarray

    @classmethod
    def of(cls, model: Any, owner: str) -> QuasiDiagonalUnits:
        """The units of ``model``, after checking that it has them: the Kronecker primitive,
        every recurrent parameter once in ``kron_index``, and a last input x̂ that is the
        constant 1 (two random states and inputs); otherwise a :class:`~gradflow.CapabilityError`
        naming what is missing."""
        need = (f"{owner} with metric = 'quasi-diagonal' needs each unit's incoming weights and "
                f"bias")
        if not model.has(PARAM_KRON_FACTORS):
            raise CapabilityError(f"{need}, read from the model primitive "
                                  f"'{PARAM_KRON_FACTORS}', which model {model.name!r} does not "
                                  "provide (use metric = 'diagonal')")
        index = np.asarray(model.kron_index())
        n_rec = model.layout.n_rec
        if index.ndim != 2 or index.shape[1] < 2 or not np.array_equal(
                np.sort(index.reshape(-1)), np.arange(n_rec)):
            raise CapabilityError(f"{need}: model {model.name!r}'s kron_index does not hold each "
                                  f"of its {n_rec} recurrent parameters once")
        backend, xp = model.backend, model.xp
        rng = np.random.default_rng(0)
        theta = model.init_params(0)
        for _ in range(2):
            h = backend.asarray(0.5 * rng.standard_normal((2, model.n_state)))
            x = backend.asarray(rng.standard_normal((2, max(model.n_in, 1)))[:, :model.n_in])
            _, cache = model.forward(theta, h, x)
            _, xhat = model.param_kron_factors(theta, cache)
            if not bool(xp.all(xhat[..., -1] == 1.0)):
                raise CapabilityError(f"{need}: the last column of model {model.name!r}'s "
                                      "Kronecker weight matrix is not a bias (its input x̂ is not "
                                      "the constant 1; use metric = 'diagonal')")
        order = index.reshape(-1).astype(np.int64)
        return cls(int(index.shape[0]), int(index.shape[1]), order, np.argsort(order))


class KalmanNoBackTrack(NoBackTrack):
    name = "kalman-nobacktrack"
    description = ("NoBackTrack with norms in a diagonal Kalman-like filter's metrics; returns "
                   "the preconditioned step (J_θ + λ)⁻¹ĝ")
    Options = KalmanNoBackTrackOptions
    replicas = True
    #: the filter's (J_θ + λ)⁻¹ scaling is the variance control: plain SGD, no clipping
    optimizer_defaults: ClassVar[dict[str, Any]] = {
        "name": "sgd", "lr": 1e-4, "schedule": "constant", "clip_rec": None,
    }

    def __init__(self, model: Any, options: KalmanNoBackTrackOptions) -> None:
        super().__init__(model, options)
        self.t0 = float(options.t0)
        self.gamma = None if options.gamma is None else float(options.gamma)
        self.damping = float(options.damping)
        self.beta = float(options.beta)
        self.jh_init = float(options.jh_init)
        self.state_floor = float(options.state_floor)
        #: the units of the quasi-diagonal metric, or None for the diagonal one
        self.quasi_units: QuasiDiagonalUnits | None = None
        if getattr(options, "metric", "diagonal") == "quasi-diagonal":
            self.quasi_units = QuasiDiagonalUnits.of(model, self._owner)

    # -- state -------------------------------------------------------------------------------
    def state_fields(self) -> list[Any]:
        """ṽ and w̃ (reset at a sequence boundary), J_h (B, n) from ``jh_init`` (a stream's metric
        survives its boundaries), J_θ (P,) from 0, and the update count t (with R replicated
        runs every array has a leading replica axis; t is shared: they step together). With the
        quasi-diagonal metric, also the couplings ``J_cross`` (P_rec,) from 0."""
        fields = [*super().state_fields(),
                  PerStream("J_h", (self.model.n_state,), fill=self.jh_init, reset=False),
                  Shared("J_theta", (self.layout.size,)),
                  Scalar("t", 0)]
        if self.quasi_units is not None:
            fields.append(Shared("J_cross", (self.layout.n_rec,)))
        return fields

    def setup_workspace(self) -> None:
        """(J_θ + λ)⁻¹ and M_h, derived from the state; the cap of J_θ as one block."""
        super().setup_workspace()
        xp = self.xp
        self._inv = xp.zeros((*self.lead, self.layout.size), dtype=self.dtype)
        self._refresh_inverse()
        self._refresh_state_metric()
        size = min(block_size(xp), self.layout.size)
        # information_cap as a constant array of one block (min with an array is fast)
        self._cap = xp.full((size,), information_cap(xp, self.dtype), dtype=self.dtype)
        if self.quasi_units is not None:
            backend = self.backend
            self._order = backend.asarray(self.quasi_units.order)
            self._inverse = backend.asarray(self.quasi_units.inverse)
            self._refresh_quasi()

    def _refresh_inverse(self) -> None:
        """(J_θ + λ)⁻¹, (P,), in place: the inverse metric of the next step and this step's
        scaling (``x **= -1`` is the reciprocal, bit for bit 1 / x)."""
        inv = self._inv
        inv[...] = self.state.J_theta
        inv += self.damping
        inv **= -1

    def stream_estimates(self) -> Array | None:
        """``None``: the streams share J_θ, which the summed estimate updates, so they are not
        independent samples of a one-stream run (``gradflow check`` runs it once per sample)."""
        return None

    # -- the filter --------------------------------------------------------------------------
    def before_step(self, record: StepRecord) -> None:
        state = self.state
        scaled = record.delta * float(self.batch)
        state.J_h = (1.0 - self.beta) * state.J_h + self.beta * (scaled * scaled)
        self._refresh_state_metric()

    def _refresh_state_metric(self) -> None:
        """M_h = J_h + κ · mean_k J_h per stream, (B, n): the state metric of the norms (and its
        rows repeated for the r chains of each stream, (B·r, n))."""
        j_h = self.state.J_h
        if self.state_floor == 0.0:
            self._metric_h = j_h
        else:
            self._metric_h = j_h + self.state_floor * self.xp.mean(j_h, axis=-1, keepdims=True)
        self._metric_chains = self.spread(self._metric_h)

    def inv_param_metric(self) -> Array | None:
        return self._inv[..., : self.layout.n_rec]

    def unit_sqnorms(self) -> Array:
        return self._metric_chains

    def state_sqnorm(self, v: Array) -> Array:
        return self.xp.sum(self._metric_chains * (v * v), axis=-1, keepdims=True)

    # -- the quasi-diagonal metric (module docstring) -----------------------------------------
    def _by_units(self, x: Array) -> Array:
        """(…, P_rec) in θ_rec's order as (…, n_rows, n_cols): W's rows, the bias last."""
        units = self.quasi_units
        picked = self.xp.take(x, self._order, axis=x.ndim - 1)
        return self.xp.reshape(picked, (*tuple(x.shape[:-1]), units.n_rows, units.n_cols))

    def _from_units(self, x: Array) -> Array:
        """The inverse of :meth:`_by_units`."""
        flat = self.xp.reshape(x, (*tuple(x.shape[:-2]), self.layout.n_rec))
        return self.xp.take(flat, self._inverse, axis=flat.ndim - 1)

    def _refresh_quasi(self) -> None:
        """From J_θ and the couplings: per unit 1/D_j, c_j/D_j and 1/s (module docstring), each
        (…, n_rows, ·) with the replica axis in front."""
        xp, lam, state = self.xp, self.damping, self.state
        info = self._by_units(state.J_theta[..., : self.layout.n_rec])
        cross = self._by_units(state.J_cross)[..., :-1]
        diag = info[..., :-1] + lam
        ratio = cross / diag
        schur = (info[..., -1] + lam) - xp.sum(cross * ratio, axis=-1)
        self._qd_inv_diag = 1.0 / diag
        self._qd_ratio = ratio
        self._qd_inv_schur = 1.0 / xp.maximum(schur, xp.asarray(lam, dtype=self.dtype))

    def _quasi_arrays(self, extra: int) -> tuple[Array, Array, Array]:
        """1/D, c/D and 1/s with ``extra`` axes of length 1 after the replica axis (to meet
        arrays with stream axes)."""
        lead = len(self.lead)

        def widen(x: Array) -> Array:
            shape = tuple(x.shape)
            return self.xp.reshape(x, (*shape[:lead], *(1,) * extra, *shape[lead:]))

        return (widen(self._qd_inv_diag), widen(self._qd_ratio), widen(self._qd_inv_schur))

    def quasi_solve(self, z: Array) -> Array:
        """M⁻¹ z for z (…, P_rec) in θ_rec's order (the arrow matrices inverted unit by unit)."""
        xp = self.xp
        inv_diag, ratio, inv_schur = self._quasi_arrays(z.ndim - 1 - len(self.lead))
        units = self._by_units(z)
        weights, bias = units[..., :-1], units[..., -1]
        x0 = (bias - xp.sum(ratio * weights, axis=-1)) * inv_schur
        xw = weights * inv_diag - ratio * x0[..., None]
        return self._from_units(xp.concat([xw, x0[..., None]], axis=-1))

    def quasi_sqnorm(self, z: Array) -> Array:
        """zᵀ M⁻¹ z for z (…, P_rec), shape (…,)."""
        xp = self.xp
        inv_diag, ratio, inv_schur = self._quasi_arrays(z.ndim - 1 - len(self.lead))
        units = self._by_units(z)
        weights, bias = units[..., :-1], units[..., -1]
        off = bias - xp.sum(ratio * weights, axis=-1)
        per_unit = xp.sum(weights * weights * inv_diag, axis=-1) + off * off * inv_schur
        return xp.sum(per_unit, axis=-1)

    def row_sqnorms(self, record: StepRecord) -> Array:
        """Quasi-diagonal: |F_t[k, :]|² = Σ_i D[k, i]² x̂ᵀ M_i⁻¹ x̂ from the Kronecker factors
        (D, x̂) of F_t, (B, n); diagonal: the model's ``param_row_sqnorms``."""
        if self.quasi_units is None:
            return super().row_sqnorms(record)
        factors, inputs = self._kron_factors(record)  # (…, B, n, n_rows), (…, B, n_cols)
        inv_diag, ratio, inv_schur = self._qd_inv_diag, self._qd_ratio, self._qd_inv_schur
        xw, x0 = inputs[..., :-1], inputs[..., -1:]
        off = x0 - xw @ ratio.mT  # (…, B, n_rows): x̂_0 − Σ_j c_ij x̂_j / D_ij
        per_unit = (xw * xw) @ inv_diag.mT + off * off * inv_schur[..., None, :]
        return ((factors * factors) @ per_unit[..., None])[..., 0]

    def _kron_factors(self, record: StepRecord) -> tuple[Array, Array]:
        """The model's Kronecker factors of F_t (replica by replica for replicated runs: the
        primitive need not take a replicated θ)."""
        model = self.model
        if not self.lead:
            return model.param_kron_factors(record.theta, record.cache)
        parts = [model.param_kron_factors(record.theta[i, ...],
                                          {k: v[i, ...] for k, v in record.cache.items()})
                 for i in range(self.lead[0])]
        return (self.xp.stack([p[0] for p in parts]), self.xp.stack([p[1] for p in parts]))

    def param_sqnorm(self, w: Array) -> Array:
        """Σ_j w_bj² / (J_θ,j + λ) per stream, (B, 1): dot products of w_b with w_b ⊙ inv, in
        blocks of columns so that the temporary holds at most ``TEMPORARY_BLOCK`` numbers. With
        the quasi-diagonal metric, w_bᵀ M⁻¹ w_b."""
        if self.quasi_units is not None:
            return self.quasi_sqnorm(w)[..., None]
        xp, inv = self.xp, self.inv_param_metric()[..., None, :]  # (…, 1, P_rec)
        batch, size = w.shape[-2], w.shape[-1]
        total = None
        for c0, c1 in blocks(size, max(1, TEMPORARY_BLOCK // batch)):
            part = xp.vecdot(w[..., c0:c1] * inv[..., c0:c1], w[..., c0:c1])
            total = part if total is None else total + part
        return total[..., None]

    def finish(self, direction: Array) -> Array:
        """J_θ ← (1 − γ) J_θ + γ ĝ², then (J_θ + λ)⁻¹ and the preconditioned ĝ, in one blocked
        pass (:mod:`gradflow.contracts.blocking`): each block of ĝ, J_θ and (J_θ + λ)⁻¹ is read
        and written once, while it is in the cache. (Quasi-diagonal: :meth:`_finish_quasi`.)"""
        state = self.state
        state.t += 1
        gamma = self.gamma if self.gamma is not None else 1.0 / (state.t + self.t0)
        if self.quasi_units is not None:
            return self._finish_quasi(direction, gamma)
        xp, j_theta, inv, cap = self.xp, state.J_theta, self._inv, self._cap
        for i, j in blocks(j_theta.shape[-1], block_size(xp)):
            g = direction[..., i:j]
            g2 = g * g
            g2 *= gamma
            jt = j_theta[..., i:j]
            jt *= 1.0 - gamma
            jt += g2
            at_most(xp, jt, cap[: j - i])  # ĝ² may overflow, J_θ may not
            iv = inv[..., i:j]
            iv[...] = jt
            iv += self.damping
            iv **= -1
            if self.precondition:
                g *= iv
        return direction

    def _finish_quasi(self, direction: Array, gamma: float) -> Array:
        """J_θ ← (1 − γ) J_θ + γ ĝ², C_ij ← (1 − γ) C_ij + γ ĝ_ij ĝ_i0 (capped like J_θ), the
        metric's workspace, then M⁻¹ĝ_rec and (J_θ + λ)⁻¹ĝ_out."""
        xp, state, n_rec = self.xp, self.state, self.layout.n_rec
        cap = xp.asarray(information_cap(xp, self.dtype), dtype=self.dtype)
        g2 = direction * direction
        g2 *= gamma
        j_theta = state.J_theta
        j_theta *= 1.0 - gamma
        j_theta += g2
        at_most(xp, j_theta, cap)
        units = self._by_units(direction[..., :n_rec])
        products = units * units[..., -1:]  # ĝ_ij ĝ_i0; 0 on the bias itself
        products = xp.concat([products[..., :-1], xp.zeros_like(products[..., -1:])], axis=-1)
        cross = (1.0 - gamma) * state.J_cross + gamma * self._from_units(products)
        state.J_cross = xp.maximum(xp.minimum(cross, cap), -cap)
        self._refresh_inverse()
        self._refresh_quasi()
        if self.precondition:
            direction[..., :n_rec] = self.quasi_solve(direction[..., :n_rec])
            direction[..., n_rec:] *= self._inv[..., n_rec:]
        return direction
