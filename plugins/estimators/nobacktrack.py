"""NoBackTrack (Ollivier, Tallec & Charpiat, "Training recurrent networks online without
backtracking", arXiv 1507.07680).

Like UORO it keeps a rank-one estimate ṽ w̃ᵀ of G_t = ∂h_t/∂θ_rec per stream, but it reduces the
fresh term F_t through its exact per-coordinate decomposition

    F_t = Σ_k e_k F_t[k, :]ᵀ        (k over the n state coordinates),

giving each of the n rank-one pieces its own sign ε_k and its own balancing factor ρ_k, instead of
one global sign vector and one factor. Each step (per stream, ε = 1e-7 by default):

    ṽ' = J_t ṽ,   ε_k ~ uniform {±1},
    ρ̄   = sqrt((|w̃| + ε) / (|ṽ'| + ε)),
    ρ_k = sqrt((|F_t[k, :]| + ε) / (|e_k| + ε)),           |e_k| = 1,
    ṽ ← ρ̄ ṽ' + Σ_k ε_k ρ_k e_k,
    w̃ ← w̃ / ρ̄ + Σ_k ε_k F_t[k, :] / ρ_k = w̃ / ρ̄ + uᵀ F_t,   u_k = ε_k / ρ_k   (one VJP),
    g_t = [Σ_b (δ_t,b · ṽ_b) w̃_b, ∂ℓ_t/∂θ_out].

The row norms |F_t[k, :]| come from the model's ``param_row_sqnorms`` primitive (O(P) for the
built-in models), so no n × P_rec array is formed. The ρ's depend on the past and on F_t, never on
the signs drawn now: every cross term ε_i ε_j (i ≠ j) has zero mean, so E[ṽ w̃ᵀ] = G_t
(see :mod:`gradflow_plugins.estimators.rank_one`). With ρ_k² = |F_t[k, :]| / |e_k| the variance
of the fresh part, Σ_{i≠j} |F_i||F_j| = (Σ_k |F_k|)² − Σ_k |F_k|², is the smallest any choice of
the n factors gives; UORO's single factor cannot adapt to rows of different sizes.

Norms are Euclidean here; :mod:`~gradflow_plugins.estimators.kalman_nobacktrack` takes them in the
metrics of its filter by overriding the metric hooks (:meth:`NoBackTrack.inv_param_metric`,
:meth:`NoBackTrack.unit_sqnorms`, :meth:`NoBackTrack.row_sqnorms`) and the norms of
:class:`RankOneEstimator`.

Option ``rank`` r: r independent chains per stream, averaged (variance ÷ r, cost × r; see
:mod:`~gradflow_plugins.estimators.rank_one`): each chain draws its own n signs ε_k and has its
own ρ̄; the ρ_k, which depend on F_t only, are the same for the r chains.
"""

from __future__ import annotations

from typing import Any, ClassVar

from gradflow_plugins.estimators.rank_one import (
    Fresh,
    RankOneEstimator,
    RankOneOptions,
    balance,
)

from gradflow import JVP_STATE, PARAM_ROW_SQNORMS, VJP, StepRecord

Array = Any


class NoBackTrackOptions(RankOneOptions):
    """Options of ``nobacktrack``: ε and the rank r."""


class NoBackTrack(RankOneEstimator):
    name = "nobacktrack"
    description = ("NoBackTrack (Ollivier, Tallec & Charpiat 2015): rank-one estimate with "
                   "per-unit signs and scales, O(P)/step")
    Options = NoBackTrackOptions
    replicas = True
    requires = frozenset({JVP_STATE, VJP, PARAM_ROW_SQNORMS})
    #: variance control (docs/architecture.md §9; measured in docs/estimators/README.md)
    optimizer_defaults: ClassVar[dict[str, Any]] = {
        "name": "sgd", "lr": 0.01, "schedule": "constant", "clip_rec": 0.1,
    }

    # -- metric hooks (Euclidean here) -------------------------------------------------------
    def inv_param_metric(self) -> Array | None:
        """Diagonal of the inverse metric on θ_rec, (P_rec,), or None for the Euclidean one."""
        return None

    def unit_sqnorms(self) -> Array | float:
        """|e_k|² for each state coordinate: a (B, n) array, or a number shared by all."""
        return 1.0

    def row_sqnorms(self, record: StepRecord) -> Array:
        """|F_t[k, :]|² in the parameter metric for each state coordinate k, (B, n): the model's
        ``param_row_sqnorms`` with :meth:`inv_param_metric`."""
        return self.model.param_row_sqnorms(record.theta, record.cache, self.inv_param_metric())

    # -- the fresh pair ----------------------------------------------------------------------
    def fresh(self, record: StepRecord) -> Fresh:
        row_sq = self.row_sqnorms(record)
        rho = balance(self.xp, row_sq, self.unit_sqnorms(), self.eps)  # ρ_k, (B, n)
        signs = self.rng.signs(tuple(row_sq.shape), self.dtype)
        # b = Σ_k ε_k F_t[k, :] / ρ_k = uᵀ F_t with u = ε / ρ: added into w̃ by the model
        return Fresh(a=signs * rho, cotangent=signs / rho)
