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
  how many streams run).

The rank-one reduction of NoBackTrack is done with norms in these metrics,

    |w|² = Σ_j w_j² / (J_θ,j + λ)   (θ_rec part),     |v|² = Σ_k J_h,k v_k²,
    ρ̄   = sqrt((|w̃| + ε) / (|J_t ṽ| + ε)),   ρ_k = sqrt((|F_t[k, :]| + ε) / (|e_k| + ε)),

with |F_t[k, :]|² = Σ_j F_t[k, j]² / (J_θ,j + λ) (the model's ``param_row_sqnorms`` with the inverse
metric) and |e_k|² = J_h,k. The metrics weight the error of ṽ w̃ᵀ the way it matters for the update
(a state error counts through δ, a parameter error through the step (J_θ + λ)⁻¹), so the balancing
minimises the variance of the preconditioned update instead of a Euclidean one. Any positive
weights keep the estimate unbiased: the ρ's of step t use J_h (updated with δ_t, which does not
depend on the signs) and J_θ from before step t, never the signs drawn at step t.

Each step, in order: J_h ← ..., the NoBackTrack update in these norms, ĝ_t = [Σ_b (δ_t,b · ṽ_b) w̃_b,
∂ℓ_t/∂θ_out], J_θ ← ..., and the direction returned is (J_θ + λ)⁻¹ ĝ_t (the natural-gradient /
Kalman step). With :attr:`precondition` off (as in :func:`gradflow.frozen_gradients` and
``gradflow check``), ĝ_t itself is returned; the filter is updated the same way.

Memory per stream: ṽ (n), w̃ (P_rec), J_h (n); plus J_θ (P) shared. Cost per step: NoBackTrack's
plus O(P).
"""

from __future__ import annotations

from typing import Any, ClassVar

from gradflow_plugins.estimators.nobacktrack import NoBackTrack
from gradflow_plugins.estimators.rank_one import RankOneOptions
from pydantic import Field

from gradflow import StepRecord

Array = Any


class KalmanNoBackTrackOptions(RankOneOptions):
    """Options of ``kalman-nobacktrack`` (defaults: the setting measured in DESIGN §9)."""

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


class KalmanNoBackTrack(NoBackTrack):
    name = "kalman-nobacktrack"
    description = ("NoBackTrack with norms in a diagonal Kalman-like filter's metrics; returns "
                   "the preconditioned step (J_θ + λ)⁻¹ĝ")
    Options = KalmanNoBackTrackOptions
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

    # -- state -------------------------------------------------------------------------------
    def _allocate(self, batch: int) -> None:
        super()._allocate(batch)
        xp = self.xp
        self.J_h = xp.full((batch, self.model.n_state), self.jh_init, dtype=self.dtype)
        self.J_theta = xp.zeros((self.layout.size,), dtype=self.dtype)
        self.t = 0
        self._inv_rec: Array | None = None

    def state_arrays(self) -> dict[str, Array]:
        return {**super().state_arrays(), "J_h": self.J_h, "J_theta": self.J_theta}

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["t"] = self.t
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.t = int(state["t"])

    def stream_estimates(self) -> Array | None:
        """``None``: the streams share J_θ, which the summed estimate updates, so they are not
        independent samples of a one-stream run (``gradflow check`` runs it once per sample)."""
        return None

    # -- the filter --------------------------------------------------------------------------
    def _prepare(self, record: StepRecord) -> None:
        scaled = record.delta * float(self.batch)
        self.J_h = (1.0 - self.beta) * self.J_h + self.beta * (scaled * scaled)
        self._inv_rec = 1.0 / (self.J_theta[: self.layout.n_rec] + self.damping)

    def _inv_param_metric(self) -> Array | None:
        return self._inv_rec

    def _unit_sqnorms(self) -> Array:
        return self.J_h

    def _state_sqnorm(self, v: Array) -> Array:
        return self.xp.sum(self.J_h * (v * v), axis=1, keepdims=True)

    def _param_sqnorm(self, w: Array) -> Array:
        return self.xp.sum((w * w) * self._inv_rec, axis=1, keepdims=True)

    def _finish(self, direction: Array) -> Array:
        self.t += 1
        gamma = self.gamma if self.gamma is not None else 1.0 / (self.t + self.t0)
        self.J_theta = (1.0 - gamma) * self.J_theta + gamma * (direction * direction)
        if not self.precondition:
            return direction
        return direction / (self.J_theta + self.damping)
