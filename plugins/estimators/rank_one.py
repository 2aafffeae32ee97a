"""The rank-one trick shared by UORO, NoBackTrack and Kalman-NoBackTrack.

Per stream, the exact forward sensitivity G_t = ∂h_t/∂θ_rec (n × P_rec) obeys

    G_t = J_t G_{t−1} + F_t,    G_0 = 0.

These estimators keep instead one state-side vector ṽ (n) and one parameter-side vector w̃ (P_rec)
per stream, with E[ṽ_t w̃_tᵀ] = G_t. At each step the propagated old pair J_t ṽ w̃ᵀ is merged with
a fresh random rank-one pair (a, b) whose product has expectation F_t:

    ṽ ← ρ̄ J_t ṽ + a,    w̃ ← w̃ / ρ̄ + b,    ρ̄ = sqrt((|w̃| + ε) / (|J_t ṽ| + ε)).

Expanding the product, ṽw̃ᵀ = J_t ṽ w̃ᵀ + a bᵀ + ρ̄ J_t ṽ bᵀ + a w̃ᵀ / ρ̄: the two cross terms are
odd in the fresh random signs, so they vanish in expectation, and E[a bᵀ] = F_t — hence
E[ṽ_t w̃_tᵀ] = J_t E[ṽ_{t−1} w̃_{t−1}ᵀ] + F_t = G_t by induction (ρ̄ depends only on the past, never
on the signs drawn at step t). ρ̄ equalises the norms of the two factors of the old pair, which
minimises the variance the cross terms add (Ollivier, Tallec & Charpiat 2015, "rank-one trick";
Tallec & Ollivier 2017, UORO, Prop. 1). The ε keeps ρ̄ finite and non-zero when a factor is zero
(at the start, after a reset, or when every unit is saturated).

The gradient estimate of step t is then g_t = [Σ_b (δ_t,b · ṽ_b) w̃_b, ∂ℓ_t/∂θ_out]: an unbiased
estimate of ∂ℓ_t/∂θ (δ_t already carries the 1/B of the mean loss). Memory n + P_rec per stream;
cost per step one JVP in the state, one VJP and O(n + P) vector work — no n × P_rec array.

Subclasses supply the fresh pair (:meth:`RankOneEstimator._fresh`) and, for metric-weighted
versions, the norms (``_state_sqnorm``, ``_param_sqnorm``) and post-processing (``_finish``).
"""

from __future__ import annotations

import math
from abc import abstractmethod
from typing import Any

from pydantic import Field

from gradflow import JVP_STATE, VJP, Estimator, EstimatorOptions, StepRecord

Array = Any


class RankOneOptions(EstimatorOptions):
    """Options shared by the rank-one estimators."""

    eps: float = Field(
        1e-7, gt=0.0,
        description="ε added to both norms of every ratio ρ = sqrt((|w| + ε)/(|v| + ε)): keeps ρ "
        "finite and non-zero when a factor vanishes (zero state, saturated units)",
    )


def balance(xp: Any, num_sq: Array, den_sq: Array, eps: float) -> Array:
    """ρ = sqrt((sqrt(num_sq) + ε) / (sqrt(den_sq) + ε)), elementwise.

    Scaling the state factor of a rank-one pair by ρ and its parameter factor by 1/ρ makes their
    norms equal (up to ε); ``num_sq`` is the squared norm of the parameter factor, ``den_sq`` that
    of the state factor (arrays, or a Python number for a constant norm). Always finite and > 0
    for finite inputs.
    """
    return xp.sqrt((_root(xp, num_sq) + eps) / (_root(xp, den_sq) + eps))


def _root(xp: Any, x: Array | float) -> Array | float:
    return math.sqrt(x) if isinstance(x, int | float) else xp.sqrt(x)


class RankOneEstimator(Estimator):
    """Per-stream rank-one estimate ṽ w̃ᵀ of G_t (see the module docstring).

    State: ``v`` (B, n) and ``w`` (B, P_rec), both zero at the start and after a reset.
    """

    requires = frozenset({JVP_STATE, VJP})
    stochastic = True

    def __init__(self, model: Any, options: RankOneOptions) -> None:
        super().__init__(model, options)
        self.eps = float(options.eps)
        self._coef: Array | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def _allocate(self, batch: int) -> None:
        xp, n, p = self.xp, self.model.n_state, self.layout.n_rec
        self.v = xp.zeros((batch, n), dtype=self.dtype)
        self.w = xp.zeros((batch, p), dtype=self.dtype)
        self._coef = None

    def reset(self, mask: Array) -> None:
        """Masked streams start afresh: ṽ = 0, w̃ = 0 (h_0 does not depend on θ)."""
        self.v = self.zero_where(mask, self.v)
        self.w = self.zero_where(mask, self.w)

    def state_arrays(self) -> dict[str, Array]:
        return {"v": self.v, "w": self.w}

    # -- hooks -------------------------------------------------------------------------------
    def _prepare(self, record: StepRecord) -> None:
        """Called first in every step (filters update their metrics here). Default: nothing."""

    @abstractmethod
    def _fresh(self, record: StepRecord) -> tuple[Array, Array]:
        """A fresh pair (a (B, n), b (B, P_rec)) with E[a bᵀ] = F_t per stream, built from signs
        drawn now, already balanced, and odd in those signs."""

    def _state_sqnorm(self, v: Array) -> Array:
        """Squared norm of state vectors (B, n) -> (B, 1). Euclidean by default."""
        return self.xp.sum(v * v, axis=1, keepdims=True)

    def _param_sqnorm(self, w: Array) -> Array:
        """Squared norm of parameter vectors (B, P_rec) -> (B, 1). Euclidean by default."""
        return self.xp.sum(w * w, axis=1, keepdims=True)

    def _finish(self, direction: Array) -> Array:
        """Post-process the full estimate ĝ_t (P,) into the returned direction. Default: ĝ_t."""
        return direction

    # -- one step ----------------------------------------------------------------------------
    def step(self, record: StepRecord) -> Array:
        xp = self.xp
        self._prepare(record)
        v_prop = self.model.jvp_state(record.theta, record.cache, self.v)  # J_t ṽ
        a, b = self._fresh(record)
        rho = balance(xp, self._param_sqnorm(self.w), self._state_sqnorm(v_prop), self.eps)
        self.v = rho * v_prop + a
        self.w = self.w / rho + b
        self._coef = xp.sum(record.delta * self.v, axis=1)  # δ_t,b · ṽ_b, (B,)
        g_rec = self._coef @ self.w
        return self._finish(self.full_direction(g_rec, record.grad_out))

    def stream_estimates(self) -> Array | None:
        """(δ_t,b · ṽ_b) w̃_b for each stream b, (B, P_rec): the streams are independent."""
        if self._coef is None:
            return None
        return self._coef[:, None] * self.w
