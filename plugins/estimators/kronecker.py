"""What the Kronecker-factored estimators share: KF-RTRL, R-KF-RTRL and OK.

The model gives F_t = ∂h_t/∂θ_rec as one Kronecker product (``param_kron_factors``,
``kron_index``; docs/architecture.md §4): θ_rec is a weight matrix W (n_rows × n_cols) up to a
permutation, and F_t[k, kron_index[i, j]] = D_t[k, i] · x̂_t[j]. Each of these estimators keeps,
per stream, G_t = ∂h_t/∂θ_rec as a sum of r Kronecker products — W-shaped pieces whose row
factor L_l (n_rows) and column factor R_l (n_cols) give the gradient of ℓ_t read off the estimate,

    δ_tᵀ G_t = Σ_b Σ_l L_{l,b} R_{l,b}ᵀ    (an n_rows × n_cols matrix, placed into θ_rec),

with L_l = A_lᵀ δ for KF-RTRL and OK (A_l: n_state × n_rows) and L = b, R = A ᵀ δ for R-KF-RTRL.
This module holds that read-out, the permutation, the product J_t A that propagates a factor
(O(n³) per stream for the built-in cells) and the balancing of a rank-one pair.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gradflow import JVP_STATE, PARAM_KRON_FACTORS, STATE_JACOBIAN, Estimator, Model

Array = Any


def param_order(model: Model) -> Array:
    """The inverse of ``model.kron_index()`` as an index array of the model's backend: for the
    row-major flattening m of an n_rows × n_cols matrix M, ``take(m, order)`` is θ_rec with
    θ_rec[kron_index[i, j]] = M[i, j]. Checks that kron_index holds every recurrent parameter
    once."""
    index = np.asarray(model.kron_index())
    p = model.layout.n_rec
    flat = index.reshape(-1)
    if index.ndim != 2 or flat.size != p or not np.array_equal(np.sort(flat), np.arange(p)):
        raise ValueError(f"model {model.name!r}: kron_index() must hold each of the {p} recurrent "
                         f"parameters once, got an array of shape {index.shape}")
    return model.backend.asarray(np.argsort(flat).astype(np.int64))


def pair_scales(xp: Any, left_sq: Array, right_sq: Array) -> tuple[Array, Array]:
    """The scales (ρ, 1/ρ) of a rank-one pair L ⊗ R with squared norms ``left_sq``, ``right_sq``
    (per stream): ρ = sqrt(‖R‖ / ‖L‖), so that ‖ρ L‖ = ‖R / ρ‖ (the variance-minimising split of
    Mujika et al. 2018). Where either norm is 0 the product is 0 and both scales are 0: the pair
    is dropped instead of divided by zero. Computed as fourth roots of the squared norms, so
    that no ratio of them can overflow."""
    live = (left_sq > 0.0) & (right_sq > 0.0)
    one = xp.ones_like(left_sq)
    zero = xp.zeros_like(left_sq)
    rho = (xp.sqrt(xp.sqrt(xp.where(live, right_sq, one)))
           / xp.sqrt(xp.sqrt(xp.where(live, left_sq, one))))
    return xp.where(live, rho, zero), xp.where(live, 1.0 / rho, zero)


def sqnorm(xp: Any, x: Array) -> Array:
    """Σ x² over every axis but the first (per stream), shape (B, 1)."""
    flat = xp.reshape(x, (int(x.shape[0]), -1))
    return xp.sum(flat * flat, axis=1, keepdims=True)


def propagate(model: Model, theta: Array, cache: dict[str, Array], v: Array) -> Array:
    """J_t V for V (B, n_state, K), or for each l of V (B, r, n_state, K), a new array: the dense
    J_t times V when the model has ``state_jacobian``, else one ``jvp_state`` with K (r · K)
    tangents (both O(n² K) per stream and l)."""
    xp = model.xp
    if model.has(STATE_JACOBIAN):
        J = model.state_jacobian(theta, cache)
        return (J if v.ndim == 3 else J[:, None, :, :]) @ v
    if v.ndim == 3:
        return model.jvp_state(theta, cache, v)
    batch, r, n, k = (int(s) for s in v.shape)
    flat = xp.reshape(xp.permute_dims(v, (0, 2, 1, 3)), (batch, n, r * k))
    out = xp.reshape(model.jvp_state(theta, cache, flat), (batch, n, r, k))
    return xp.permute_dims(out, (0, 2, 1, 3))


class KroneckerSketch(Estimator):
    """Base of the estimators that keep G_t as a sum of Kronecker products (module docstring):
    the shape of W, the permutation into θ_rec, the read-out of the gradient and the per-stream
    estimates. A subclass declares its state and writes ``step``, ending with :meth:`read_out`."""

    requires = frozenset({PARAM_KRON_FACTORS, JVP_STATE})
    kind = "unbiased"
    stochastic = True

    def __init__(self, model: Model, options: Any) -> None:
        super().__init__(model, options)
        self.n_rows, self.n_cols = (int(s) for s in np.shape(model.kron_index()))
        #: θ_rec = take(vec(M), order) for a W-shaped M (the inverse of kron_index)
        self._order = param_order(model)

    def setup_workspace(self) -> None:
        #: the factors (L (B, r, n_rows), R (B, r, n_cols)) of the last step's estimate
        self._last: tuple[Array, Array] | None = None

    def read_out(self, left: Array, right: Array, grad_out: Array) -> Array:
        """The direction [Σ_b Σ_l L_{l,b} R_{l,b}ᵀ placed into θ_rec, grad_out] for the factors
        ``left`` (B, r, n_rows) and ``right`` (B, r, n_cols): one product over the B·r pieces,
        one O(P) permutation."""
        xp = self.xp
        self._last = (left, right)
        pieces = int(left.shape[0]) * int(left.shape[1])
        grad = (xp.reshape(left, (pieces, self.n_rows)).mT
                @ xp.reshape(right, (pieces, self.n_cols)))
        return self.fill_direction(xp.take(xp.reshape(grad, (-1,)), self._order, axis=0),
                                   grad_out)

    def stream_estimates(self) -> Array | None:
        """Σ_l L_{l,b} R_{l,b}ᵀ for each stream b, placed into θ_rec, (B, P_rec): every stream
        draws its own signs, so the streams are independent."""
        if self._last is None:
            return None
        xp = self.xp
        left, right = self._last
        per_stream = left.mT @ right  # (B, n_rows, n_cols)
        return xp.take(xp.reshape(per_stream, (int(left.shape[0]), -1)), self._order, axis=1)
