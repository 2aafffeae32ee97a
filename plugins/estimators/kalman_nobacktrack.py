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
"""

from __future__ import annotations

from typing import Any, ClassVar

from gradflow_plugins.estimators.nobacktrack import NoBackTrack
from gradflow_plugins.estimators.rank_one import RankOneOptions
from pydantic import Field

from gradflow import (
    TEMPORARY_BLOCK,
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

    # -- state -------------------------------------------------------------------------------
    def state_fields(self) -> list[Any]:
        """ṽ and w̃ (reset at a sequence boundary), J_h (B, n) from ``jh_init`` (a stream's metric
        survives its boundaries), J_θ (P,) from 0, and the update count t (with R replicated
        runs every array has a leading replica axis; t is shared: they step together)."""
        return [*super().state_fields(),
                PerStream("J_h", (self.model.n_state,), fill=self.jh_init, reset=False),
                Shared("J_theta", (self.layout.size,)),
                Scalar("t", 0)]

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

    def param_sqnorm(self, w: Array) -> Array:
        """Σ_j w_bj² / (J_θ,j + λ) per stream, (B, 1): dot products of w_b with w_b ⊙ inv, in
        blocks of columns so that the temporary holds at most ``TEMPORARY_BLOCK`` numbers."""
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
        and written once, while it is in the cache."""
        state = self.state
        state.t += 1
        gamma = self.gamma if self.gamma is not None else 1.0 / (state.t + self.t0)
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
