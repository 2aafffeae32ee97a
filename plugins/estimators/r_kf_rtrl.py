"""Reverse Kronecker-factored RTRL (R-KF-RTRL; Marschall, Cho & Savin, "A unified framework of
online learning algorithms for training recurrent neural networks", JMLR 21 (2020) 1–34).

KF-RTRL (:mod:`gradflow_plugins.estimators.kf_rtrl`) keeps the state-side factor as a matrix
over the rows of W and the input side as a vector; R-KF-RTRL swaps the roles. With the model's
Kronecker form of F_t (``param_kron_factors``, ``kron_index``: W is n_rows × n_cols, θ_rec holds
W[i, j] at kron_index[i, j]),

    F_t[k, (i, j)] = D_t[k, i] · x̂_t[j],

it keeps per stream

    G_t ≈ b_t ⊗ A_t,    G[k, (i, j)] = b[i] · A[k, j],    b (n_rows), A (n_state × n_cols):

one number per row of W (per pre-activation) and a matrix over the state and the columns of W
(the inputs x̂ = [h_{t−1}; x_t; 1]). Then J_t G_{t−1} = b_{t−1} ⊗ (J_t A_{t−1}) is again of that
form, but F_t is not: it is Σ_i e_i ⊗ (D_t[:, i] x̂_tᵀ), a sum of n_rows such products. It is
replaced by an unbiased rank-one projection: for random signs ν ∈ {±1}^{n_rows} (per stream),
E[ν νᵀ] = I gives

    F_t = E[ν ⊗ ((D_t ν) x̂_tᵀ)],    (ν ⊗ (D_t ν) x̂ᵀ)[k, (i, j)] = ν_i (D_t ν)_k x̂_j.

The two products are merged as UORO merges its two pairs, with the same signs ν making the cross
terms vanish (the authors' ``Reverse_KF_RTRL`` draws nothing else):

    b_t = ρ0 b_{t−1} + ρ1 ν,
    A_t = J_t A_{t−1} / ρ0 + (D_t ν) x̂_tᵀ / ρ1,
    ρ0 = sqrt(‖J_t A_{t−1}‖ / ‖b_{t−1}‖),    ρ1 = sqrt(‖D_t ν‖ ‖x̂_t‖ / ‖ν‖),   ‖ν‖ = sqrt(n_rows).

Expanding b_t ⊗ A_t: b ⊗ J A (the propagated past), ν ⊗ (D ν) x̂ᵀ (mean F_t), and two cross
terms, each linear in ν once ρ1 is fixed. ρ0 depends only on the past and ρ1 depends on ν only
through ‖D_t ν‖, which is the same for −ν, so both cross terms are odd in ν and have mean 0:
E[b_t ⊗ A_t | past] = J_t (b_{t−1} ⊗ A_{t−1}) + F_t, and by induction E[b_t ⊗ A_t] = G_t
(b_0 = 0, A_0 = 0, also after a sequence boundary). Two further signs c1, c2 multiplying the
pairs, as in KF-RTRL, would change nothing: they multiply the cross terms by c1 c2, which has the
same effect on the estimate's law as replacing ν by c1 c2 ν, and ν is symmetric. The scales
balance each pair's factors' norms (Frobenius for matrices), the variance-minimising split; a
pair whose product is zero (b_{t−1} = 0 at the start and after a reset, J_t A_{t−1} = 0, or
D_t ν = 0 with saturated units) is dropped — scales 0, no division by zero, no NaN, still
unbiased.

The gradient of ℓ_t (δ_t carries the 1/B of the mean loss):

    δ_tᵀ G_t = Σ_b b_b ⊗ (A_bᵀ δ_b),    i.e.  W-shaped M = Σ_b b_b (A_bᵀ δ_b)ᵀ  (n_rows × n_cols),

placed into θ_rec by the inverse of ``kron_index``; the readout part is the exact ∂ℓ_t/∂θ_out.
Unbiased: E[g_t] = ∂ℓ_t/∂θ with θ frozen.

Cost per step and stream: J_t A_{t−1} with n_cols tangents (the dense J_t times A when the model
has ``state_jacobian``, else one ``jvp_state``), O(n³) for ``rnn`` and ``lstm``; D_t ν and the rest
O(n² + P). Memory n_rows + n_state · n_cols per stream, O(n²).
"""

from __future__ import annotations

from typing import Any

from gradflow_plugins.estimators.kronecker import (
    KroneckerSketch,
    pair_scales,
    propagate,
    sqnorm,
)

from gradflow import PerStream, StepRecord


class ReverseKFRTRL(KroneckerSketch):
    name = "r-kf-rtrl"
    description = ("R-KF-RTRL (Marschall et al. 2020): unbiased reverse Kronecker-factored "
                   "estimate b ⊗ A of ∂h/∂θ, O(n³)/step, O(n²) memory")

    def state_fields(self) -> list[PerStream]:
        """b (B, n_rows) and A (B, n_state, n_cols), zero at the start and when a stream starts
        a new sequence (G_0 = 0)."""
        return [PerStream("b", (self.n_rows,)),
                PerStream("A", (self.model.n_state, self.n_cols))]

    def step(self, record: StepRecord) -> Any:
        xp, model, state = self.xp, self.model, self.state
        theta, cache = record.theta, record.cache
        D, xhat = model.param_kron_factors(theta, cache)  # (B, n, n_rows), (B, n_cols)
        JA = propagate(model, theta, cache, state.A)  # J_t A_{t−1}, a new array
        nu = self.rng.signs((self.batch, self.n_rows), self.dtype)
        Dnu = (D @ nu[:, :, None])[:, :, 0]  # D_t ν, (B, n_state)
        rho0, inv0 = pair_scales(xp, sqnorm(xp, state.b), sqnorm(xp, JA))
        rho1, inv1 = pair_scales(xp, xp.full_like(rho0, float(self.n_rows)),
                                 sqnorm(xp, Dnu) * sqnorm(xp, xhat))
        JA *= inv0[:, :, None]
        JA += (inv1 * Dnu)[:, :, None] * xhat[:, None, :]
        state.A = JA  # A_t = J_t A_{t−1}/ρ0 + (D_t ν) x̂_tᵀ/ρ1
        state.b = rho0 * state.b + rho1 * nu  # b_t = ρ0 b_{t−1} + ρ1 ν
        q = (record.delta[:, None, :] @ state.A)[:, 0, :]  # A_bᵀ δ_b, (B, n_cols)
        return self.read_out(state.b[:, None, :], q[:, None, :], record.grad_out)
