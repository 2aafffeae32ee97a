"""Optimal Kronecker-sum approximation of RTRL (Benzing, Gauy, Mujika, Martinsson & Steger,
"Optimal Kronecker-Sum Approximation of Real Time Recurrent Learning", ICML 2019, arXiv 1902.03993).

**The form kept.** For a cell whose recurrent parameters form one weight matrix W (n_rows × n_cols)
acting on x̂_t (rows: pre-activations; columns: the inputs [h_{t−1}; x_t; 1]), the immediate
Jacobian is one Kronecker product, given by the model (``param_kron_factors``, ``kron_index``):

    F_t[k, (i, j)] = D_t[k, i] · x̂_t[j],

(i, j) standing for θ_rec's position kron_index[i, j] of W[i, j]. OK keeps G_t = ∂h_t/∂θ_rec as a
sum of r Kronecker products per stream (r = option ``rank``):

    G_t ≈ Σ_{l=1..r} A_l ⊗ u_l,    G[k, (i, j)] = Σ_l A_l[k, i] · u_l[j],

A_l (n_state × n_rows), u_l (n_cols). Read as a matrix with rows (k, i) and columns j, a
Kronecker sum of r terms is Σ_l vec(A_l) u_lᵀ: any (n_state · n_rows) × n_cols matrix of rank at
most r, and nothing else. RTRL's step applied to it gives r + 1 terms,

    M_t = J_t G_{t−1} + F_t = Σ_l (J_t A_l) ⊗ u_l + D_t ⊗ x̂_t        (rank ≤ r + 1),

which is reduced back to r terms by a random matrix Z_t of rank ≤ r with E[Z_t | past] = M_t.

**The reduction** (the paper's, §4 and its Appendix; the authors' code does the same steps).

1. Orthonormal bases of both sides (QR, by Gram–Schmidt: :func:`orthonormalize`):
   [vec(J A_1) … vec(J A_r) vec(D)] = Q_A R_A and [u_1 … u_r x̂] = Q_u R_u, so
   M_t = Q_A C Q_uᵀ with the small core C = R_A R_uᵀ ((r + 1) × (r + 1)).
2. The SVD of the core, C = X diag(σ) Yᵀ, σ_1 ≥ … ≥ σ_{r+1} ≥ 0: the singular values of M_t, and
   M_t = Σ_c σ_c (Q_A X e_c)(Q_u Y e_c)ᵀ.
3. The minimum-variance unbiased rank-r random matrix Z with E[Z] = diag(σ) (below), written
   Z = K Kᵀ with K ((r + 1) × r); the new factors are column c of Q_A X K (reshaped to
   n_state × n_rows) and of Q_u Y K. Each pair has equal norms on both sides by construction
   (Q_A, Q_u, X, Y have orthonormal columns).

**Step 3.** Let m be the smallest index with (r − m) σ_{m+1} ≤ s, s = Σ_{i>m} σ_i (m ≤ r − 1
always: at m = r − 1 the condition reads σ_r ≤ σ_r + σ_{r+1}). The m largest singular values are
kept exactly; the tail T = {m + 1, …, r + 1}, k + 1 values with k = r − m, is replaced by a
matrix of rank k. Every σ_i of the tail is at most s/k, so

    v_i = sqrt(1 − k σ_i / s)   (i ∈ T),    Σ_{i∈T} v_i² = (k + 1) − k = 1:

v is a unit vector. Let P be the orthogonal projection of the tail's coordinates onto v^⊥
(rank k), written with the Householder reflection H = I − 2 w wᵀ/(wᵀw), w = v + e_{r+1} (H maps
e_{r+1} to −v, so the other k columns of H restricted to T are an orthonormal basis of v^⊥; with
the smallest σ_{r+1}, v_{r+1}² ≥ 1/(k + 1), and wᵀw = 2 + 2 v_{r+1} ≥ 2: no cancellation). For
independent random signs ε_i,

    Z = diag(σ_1, …, σ_m) ⊕ (s/k) · diag(ε) P diag(ε).

*Unbiased:* E[ε_i ε_j] = δ_ij, so E[Z_T] = (s/k) diag(P) = (s/k) diag(1 − v_i²) = diag(σ_T); the
kept block is exact. Hence E[Z_t | past] = M_t, and by induction from G_0 = 0 (also after a
sequence boundary) E[Σ_l A_l ⊗ u_l] = G_t: the estimate δ_tᵀ G_t of ∂ℓ_t/∂θ_rec is unbiased
with θ frozen (δ_t does not depend on the signs).

*Minimum variance:* E‖Z − M‖_F² = E‖Z‖_F² − ‖M‖_F², and here ‖Z‖_F² is the same for every
draw, Σ_{i≤m} σ_i² + s²/k, so the added variance is

    V_r(σ) = s²/k − Σ_{i∈T} σ_i².

The paper proves (Theorem 1 and Appendix A there) that no random Z of rank ≤ r with E[Z] = M has
a smaller E‖Z − M‖_F²: V_r is the minimum over all unbiased reductions to r Kronecker terms (the
Frobenius norm of the matrix is that of G). The case m = 0 — always the case at r = 1 — is short:
a matrix of rank ≤ r has ‖Z‖_F² ≥ ‖Z‖_*² / r (Cauchy–Schwarz on its ≤ r singular values), and by
Jensen and the convexity of the nuclear norm E‖Z‖_*² ≥ (E‖Z‖_*)² ≥ ‖E Z‖_*² = (Σ σ_i)², so
E‖Z‖_F² ≥ (Σ σ_i)²/r, which the construction attains. The minimum is over reductions of the
*same* sum M_t, per step and conditional on the past (the paper's sense of "optimal").

*Against KF-RTRL (r = 1):* KF-RTRL (Mujika et al. 2018) reduces a_1 ⊗ b_1 + a_2 ⊗ b_2 to
(c_1 ρ a_1 + c_2 ρ' a_2) ⊗ (c_1 b_1/ρ + c_2 b_2/ρ') with random signs c_1, c_2: an unbiased
reduction to one Kronecker term, so it is one of the Z above, and on the same M_t it adds at
least V_1(σ) = 2 σ_1 σ_2. Explicitly, with its balanced scales, p = ‖a_1‖‖b_1‖, q = ‖a_2‖‖b_2‖
and α, β the angles between a_1, a_2 and between b_1, b_2, it adds
2pq + 2⟨a_1, a_2⟩⟨b_1, b_2⟩ = 2pq (1 + cos α cos β), against 2 σ_1 σ_2 = 2pq sin α sin β: the
difference is 2pq (1 + cos(α + β)) ≥ 0, zero only when α + β = π (both pairs orthogonal, say).
Tested on random sums, and measured over whole trajectories, in tests/test_ok.py.

**Zero norms.** At the start and after a reset A = 0 and u = 0: a term that is zero, or
dependent on the previous ones, gets a zero column of Q and a zero row of R (no division by
zero), the SVD gives σ = 0 there, and a tail with s = 0 gets weight s/k = 0 with v any unit
vector: no NaN, and still Q R = the stacked factors, so unbiased. A sum of rank ≤ r is reproduced
without noise (σ_{r+1} = 0 gives v = e_{r+1}, P = diag(1, …, 1, 0): the signs cancel); so with
r ≥ n_cols (a tiny model) every step is exact and OK is RTRL.

**The gradient** of ℓ_t read off the estimate (δ_t carries the 1/B of the mean loss):

    δ_tᵀ G_t = Σ_b Σ_l (A_{l,b}ᵀ δ_b) ⊗ u_{l,b},  an n_rows × n_cols matrix,

placed into θ_rec by the inverse of ``kron_index`` (computed once); the readout part is the exact
∂ℓ_t/∂θ_out.

**Cost** per step and stream: J_t A_l for the r terms (n_rows tangents each: one product with the
dense J_t when the model has ``state_jacobian``, otherwise one ``jvp_state`` with r · n_rows
tangents), O(r n³) for ``rnn`` and ``lstm``; the Gram–Schmidt of both sides O(r² n²), the
(r + 1) × (r + 1) SVD O(r³), the new factors O(r² n²), the gradient O(r n²). Memory
r (n_state · n_rows + n_cols) per stream, O(r n²).
"""

from __future__ import annotations

from typing import Any

from gradflow_plugins.estimators.kronecker import KroneckerSketch, propagate
from pydantic import Field

from gradflow import EstimatorOptions, Model, PerStream, StepRecord

Array = Any


class OKOptions(EstimatorOptions):
    """Options of ``ok``."""

    rank: int = Field(
        1, ge=1,
        description="r, the number of Kronecker products kept per stream: cost O(r n³) per step, "
        "memory O(r n²) per stream, variance decreasing with r (the paper trains with r = 8-16)",
    )


def optimal_reduction(xp: Any, sigma: Array, signs: Array | None, rank: int) -> Array:
    """The minimum-variance unbiased reduction of diag(σ) to rank ``rank`` (module docstring,
    step 3): K of shape (B, q, rank) with Z = K Kᵀ, E[Z] = diag(σ) over the signs.

    ``sigma`` (B, q): non-negative, in descending order (an SVD's). ``signs`` (B, q): independent
    ±1 (unused, and may be ``None``, when q ≤ rank: then Z = diag(σ) exactly). q ≤ rank + 1.
    """
    q = int(sigma.shape[1])
    if q <= rank:  # nothing to reduce: K = [diag(sqrt σ) | 0]
        return xp.eye(q, rank, dtype=sigma.dtype)[None, :, :] * xp.sqrt(sigma)[:, :, None]
    if q != rank + 1:
        raise ValueError(f"optimal_reduction reduces rank + 1 = {rank + 1} values, got {q}")
    dtype = sigma.dtype
    r = rank
    room = xp.arange(r, -1, -1, dtype=dtype)  # r − m for m = 0 … r (0-based index m)
    tail = xp.flip(xp.cumulative_sum(xp.flip(sigma, axis=1), axis=1), axis=1)  # Σ_{j≥m} σ_j
    ok = (room * sigma <= tail) | (room <= 1.0)  # the last two always (σ_r ≤ σ_r + σ_{r+1})
    kept = xp.cumulative_sum(xp.astype(ok, dtype), axis=1) == 0  # before the first ok index
    k = r - xp.sum(xp.astype(kept, dtype), axis=1, keepdims=True)  # (B, 1), 1 ≤ k ≤ r
    s = xp.sum(xp.where(kept, xp.zeros_like(sigma), sigma), axis=1, keepdims=True)
    live = s > 0.0
    s_safe = xp.where(live, s, xp.ones_like(s))
    share = xp.where(live, s / k, xp.zeros_like(s))  # s/k, the tail's singular value in Z
    v_sq = xp.where(kept, xp.zeros_like(sigma), xp.clip(1.0 - k * sigma / s_safe, 0.0, None))
    v = xp.sqrt(v_sq / xp.sum(v_sq, axis=1, keepdims=True))  # unit (normalised for rounding)
    last = xp.astype(xp.arange(q) == r, dtype)  # e_{r+1}
    w = v + last
    eye = xp.eye(q, dtype=dtype)
    house = eye - (2.0 / xp.sum(w * w, axis=1))[:, None, None] * (w[:, :, None] * w[:, None, :])
    lam = xp.where(kept, sigma, share)  # the singular values of Z, column by column
    return (signs[:, :, None] * house[:, :, :r]) * xp.sqrt(lam[:, None, :r])


def orthonormalize(xp: Any, rows: list[Array]) -> tuple[Array, Array]:
    """Gram–Schmidt of c vectors per stream, ``rows`` (each (B, N), c small): Q (B, c, N) with
    orthonormal rows and upper triangular R (B, c, c) with rows[j] = Σ_{i≤j} R[i, j] Q[:, i]
    (M = Rᵀ Q for M the stacked rows: a QR of Mᵀ). Each projection is removed in turn, and the
    whole applied twice ("twice is enough": orthogonal to rounding; Giraud, Langou & Rozložník
    2005). A vector that is — to 2⁻⁴⁰ of its norm — in the span of the previous ones gets a zero
    row of Q and a zero diagonal entry of R (A = 0 at the start, fewer independent terms than
    vectors): no division by zero, and Rᵀ Q = M to rounding still. Only dot products and updates
    over N: for c ≪ N much cheaper than a Householder QR (of a 65536 × 2 matrix on one core:
    NumPy's ``qr`` 1.45 ms, this 0.79 ms)."""
    batch, c = int(rows[0].shape[0]), len(rows)
    dtype = rows[0].dtype
    zero = xp.zeros((batch, 1), dtype=dtype)
    done: list[Array] = []
    columns: list[Array] = []  # column j of R, (B, c)
    for j, row in enumerate(rows):
        # a copy updated in place: one temporary of size N at a time (two at once, as in
        # a - h * q, cost NumPy a fresh mapping of pages each: 8 times slower at N = 65536)
        a = xp.asarray(row, copy=True)
        size = xp.sqrt(xp.vecdot(a, a)[:, None])
        coef = [zero] * j
        for _ in range(2):  # twice is enough
            for i, q in enumerate(done):
                h = xp.vecdot(q, a)[:, None]
                a -= h * q
                coef[i] = coef[i] + h
        norm = xp.sqrt(xp.vecdot(a, a)[:, None])  # (B, 1)
        live = norm > size * 2.0**-40
        norm = xp.where(live, norm, zero)
        a *= xp.where(live, 1.0 / xp.where(live, norm, zero + 1.0), zero)
        done.append(a)
        columns.append(xp.concat([*coef, norm, *[zero] * (c - j - 1)], axis=1))
    return xp.stack(done, axis=1), xp.stack(columns, axis=2)


class OK(KroneckerSketch):
    name = "ok"
    description = ("OK (Benzing et al. 2019): unbiased minimum-variance sum of r Kronecker "
                   "products for ∂h/∂θ, O(r n³)/step, O(r n²) memory")
    Options = OKOptions

    def __init__(self, model: Model, options: OKOptions) -> None:
        super().__init__(model, options)
        self.rank = int(options.rank)

    def state_fields(self) -> list[PerStream]:
        """A (B, r, n_state, n_rows) and u (B, r, n_cols), zero at the start and when a stream
        starts a new sequence (G_0 = 0)."""
        r = self.rank
        return [PerStream("A", (r, self.model.n_state, self.n_rows)),
                PerStream("u", (r, self.n_cols))]

    def step(self, record: StepRecord) -> Array:
        xp, model, state = self.xp, self.model, self.state
        theta, cache = record.theta, record.cache
        batch, r = self.batch, self.rank
        n, rows = self.model.n_state, self.n_rows
        D, xhat = model.param_kron_factors(theta, cache)  # (B, n, n_rows), (B, n_cols)
        ja = propagate(model, theta, cache, state.A)
        # the r + 1 terms' factors: left vec(J A_l), vec(D); right u_l, x̂ (views, no copy)
        left = [xp.reshape(ja[:, i, ...], (batch, n * rows)) for i in range(r)]
        q_a, r_a = orthonormalize(xp, [*left, xp.reshape(D, (batch, n * rows))])
        q_u, r_u = orthonormalize(xp, [*(state.u[:, i, :] for i in range(r)), xhat])
        x, sigma, yh = xp.linalg.svd(r_a @ r_u.mT)  # the core's SVD, σ descending
        signs = self.rng.signs(tuple(sigma.shape), self.dtype)  # (B, r + 1)
        k = optimal_reduction(xp, sigma, signs, r)  # (B, r + 1, r): Z = K Kᵀ
        # new factors, as rows: (X K)ᵀ Q_A (B, r, n·n_rows) and (Y K)ᵀ Q_u (B, r, n_cols)
        state.A = xp.reshape((x @ k).mT @ q_a, (batch, r, n, rows))
        state.u = (k.mT @ yh) @ q_u
        coef = (record.delta[:, None, None, :] @ state.A)[:, :, 0, :]  # A_lᵀ δ_b, (B, r, n_rows)
        return self.read_out(coef, state.u, record.grad_out)
