"""Unbiased Online Recurrent Optimization (Tallec & Ollivier, arXiv 1702.05043).

UORO keeps a rank-one estimate ṽ w̃ᵀ of G_t = ∂h_t/∂θ_rec per stream and writes the whole fresh
term F_t as one random rank-one product: for signs ν ∈ {±1}^n, E[ν νᵀ] = I, so

    F_t = E[ν (νᵀ F_t)] = E[ν δθᵀ],    δθ = νᵀ F_t   (one vector-Jacobian product).

Each step (per stream, ε = 1e-7 by default):

    ṽ' = J_t ṽ,   ν ~ uniform {±1}^n,   δθ = νᵀ F_t,
    ρ0 = sqrt((|w̃| + ε) / (|ṽ'| + ε)),   ρ1 = sqrt((|δθ| + ε) / (|ν| + ε)),
    ṽ ← ρ0 ṽ' + ρ1 ν,   w̃ ← w̃ / ρ0 + δθ / ρ1,
    g_t = [Σ_b (δ_t,b · ṽ_b) w̃_b, ∂ℓ_t/∂θ_out].

ρ1 depends on ν only through |νᵀF_t|, which is even in ν, so the fresh pair (ρ1 ν, δθ/ρ1) is odd in
ν and its product is ν νᵀF_t: the cross terms vanish in expectation and E[ṽ w̃ᵀ] = G_t
(see :mod:`gradflow_plugins.estimators.rank_one`). Cost per step: one JVP, one VJP, O(n + P);
memory n + P_rec per stream.

By linearity δθ/ρ1 = (ν/ρ1)ᵀF_t: when the model gives |νᵀF_t| cheaply (it implements
``vjp_param_sqnorms``: O(n) for ``rnn``), ρ1 comes first and the VJP with the cotangent ν/ρ1 is
added straight into w̃; otherwise δθ is formed once, measured and scaled.
"""

from __future__ import annotations

from typing import Any, ClassVar

from gradflow_plugins.estimators.rank_one import (
    Fresh,
    RankOneEstimator,
    RankOneOptions,
    balance,
)

from gradflow import VJP_PARAM_SQNORMS, StepRecord

Array = Any


class UOROOptions(RankOneOptions):
    """Options of ``uoro``: ε and the rank r."""


class UORO(RankOneEstimator):
    name = "uoro"
    description = "UORO (Tallec & Ollivier 2017): unbiased rank-one estimate of ∂h/∂θ, O(P)/step"
    #: variance control (docs/architecture.md §9; measured in docs/estimators/README.md): raw
    #: rank-one estimates wreck the recurrent weights unless their norm is clipped
    optimizer_defaults: ClassVar[dict[str, Any]] = {
        "name": "sgd", "lr": 0.01, "schedule": "constant", "clip_rec": 0.1,
    }
    Options = UOROOptions
    replicas = True

    def __init__(self, model: Any, options: UOROOptions) -> None:
        super().__init__(model, options)
        self._cheap_norms = model.has(VJP_PARAM_SQNORMS)

    def fresh(self, record: StepRecord) -> Fresh:
        xp, model = self.xp, self.model
        shape = tuple(record.delta.shape)  # (B, n), (R, B, n) with replicas; B·r with r chains
        n = shape[-1]
        nu = self.rng.signs(shape, self.dtype)
        if self._cheap_norms:
            sq = model.vjp_param_sqnorms(record.theta, record.cache, nu)  # |νᵀ F_t|², (B,)
            rho1 = balance(xp, sq[..., None], float(n), self.eps)
            return Fresh(a=rho1 * nu, cotangent=nu / rho1)
        _, dtheta = model.vjp(record.theta, record.cache, nu)  # νᵀ F_t, (B, P_rec)
        rho1 = balance(xp, xp.vecdot(dtheta, dtheta)[..., None], float(n), self.eps)
        dtheta /= rho1
        return Fresh(a=rho1 * nu, b=dtheta)
