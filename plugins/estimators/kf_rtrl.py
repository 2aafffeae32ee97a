"""Kronecker-factored RTRL (Mujika, Meier & Steger, "Approximating real-time recurrent learning
with random Kronecker factors", NeurIPS 2018; arXiv 1805.10842).

For a cell whose recurrent parameters form one weight matrix W (n_rows × n_cols) acting on
x̂_t = [h_{t−1}; x_t; 1] (rows: pre-activations), the immediate Jacobian is one Kronecker product,
given by the model (``param_kron_factors``, ``kron_index``):

    F_t[k, (i, j)] = D_t[k, i] · x̂_t[j]

with (i, j) the position kron_index[i, j] of W[i, j] in θ_rec (F_t = x̂_t ⊗ D_t in the paper's
notation). KF-RTRL keeps G_t = ∂h_t/∂θ_rec in the same form, per stream:

    G_t ≈ u_t ⊗ A_t,    G[k, (i, j)] = A[k, i] · u[j],    A (n_state × n_rows), u (n_cols).

RTRL's recursion G_t = J_t G_{t−1} + F_t applied to it gives a sum of two Kronecker products,

    J_t G_{t−1} + F_t = u_{t−1} ⊗ (J_t A_{t−1}) + x̂_t ⊗ D_t,

which is reduced to one by the paper's unbiased rank reduction (Lemma 1 there): for independent
random signs c1, c2 ∈ {±1} (per stream) and scales ρ0, ρ1 > 0,

    A_t = c1 ρ0 J_t A_{t−1} + c2 ρ1 D_t,
    u_t = c1 u_{t−1} / ρ0 + c2 x̂_t / ρ1.

Expanding, u_t ⊗ A_t = u_{t−1} ⊗ J_t A_{t−1} + x̂_t ⊗ D_t + c1 c2 (cross terms), and E[c1 c2] = 0,
so E[u_t ⊗ A_t | past] = J_t (u_{t−1} ⊗ A_{t−1}) + F_t, and by induction E[u_t ⊗ A_t] = G_t
(G_0 = 0: A_0 = 0, u_0 = 0, also after a sequence boundary). The scales split each pair so that
its two factors have equal norms (Frobenius norm for the matrices),

    ρ0 = sqrt(‖u_{t−1}‖ / ‖J_t A_{t−1}‖),    ρ1 = sqrt(‖x̂_t‖ / ‖D_t‖),

which is the paper's variance-minimising choice: the cross terms' squared size,
(ρ0/ρ1)² ‖J A‖² ‖x̂‖² + (ρ1/ρ0)² ‖D‖² ‖u‖² + const, is smallest there. A pair whose product is
zero (u_{t−1} = 0 at the start and after a reset, J_t A_{t−1} = 0 or D_t = 0 with saturated units)
is dropped — scales 0, which changes no expectation and adds no variance — instead of dividing
by zero: no NaN, and the estimate stays unbiased.

The gradient of ℓ_t read off the estimate (δ_t carries the 1/B of the mean loss):

    δ_tᵀ G_t = Σ_b (A_bᵀ δ_b) ⊗ u_b,    i.e.  W-shaped M = Σ_b (A_bᵀ δ_b) u_bᵀ  (n_rows × n_cols),

placed into θ_rec by the inverse of ``kron_index`` (computed once; O(P) per step); the readout
part is the exact ∂ℓ_t/∂θ_out. Unbiased: E[g_t] = ∂ℓ_t/∂θ with θ frozen.

Cost per step and stream: J_t A_{t−1}, n_rows tangents through J_t (one product with the dense
J_t when the model has ``state_jacobian``, else one ``jvp_state`` with n_rows tangents), O(n³)
for ``rnn`` and ``lstm``; everything else O(n² + P). Memory n_state · n_rows + n_cols per stream,
O(n²) — against RTRL's n · P = O(n³) and UORO's n + P.
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


class KFRTRL(KroneckerSketch):
    name = "kf-rtrl"
    description = ("KF-RTRL (Mujika et al. 2018): unbiased Kronecker-factored estimate u ⊗ A of "
                   "∂h/∂θ, O(n³)/step, O(n²) memory")

    def state_fields(self) -> list[PerStream]:
        """A (B, n_state, n_rows) and u (B, n_cols), zero at the start and when a stream starts
        a new sequence (G_0 = 0)."""
        return [PerStream("A", (self.model.n_state, self.n_rows)),
                PerStream("u", (self.n_cols,))]

    def step(self, record: StepRecord) -> Any:
        xp, model, state = self.xp, self.model, self.state
        theta, cache = record.theta, record.cache
        D, xhat = model.param_kron_factors(theta, cache)  # (B, n, n_rows), (B, n_cols)
        JA = propagate(model, theta, cache, state.A)  # J_t A_{t−1}, a new array
        u = state.u
        c = self.rng.signs((self.batch, 2), self.dtype)  # c1, c2 per stream
        rho0, inv0 = pair_scales(xp, sqnorm(xp, JA), sqnorm(xp, u))
        rho1, inv1 = pair_scales(xp, sqnorm(xp, D), sqnorm(xp, xhat))
        c1, c2 = c[:, 0:1], c[:, 1:2]
        JA *= (c1 * rho0)[:, :, None]
        JA += (c2 * rho1)[:, :, None] * D
        state.A = JA  # A_t = c1 ρ0 J_t A_{t−1} + c2 ρ1 D_t
        state.u = (c1 * inv0) * u + (c2 * inv1) * xhat  # u_t = c1 u_{t−1}/ρ0 + c2 x̂_t/ρ1
        q = (record.delta[:, None, :] @ state.A)[:, 0, :]  # A_bᵀ δ_b, (B, n_rows)
        return self.read_out(q[:, None, :], state.u[:, None, :], record.grad_out)
