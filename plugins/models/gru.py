"""The gated recurrent unit (Cho et al. 2014), with PyTorch's gate conventions.

    gi = W_ih x_t + b_ih,   gh = W_hh h_{t-1} + b_hh          (3n each: blocks r, z, n)
    r  = σ(gi_r + gh_r)
    z  = σ(gi_z + gh_z)
    c  = tanh(gi_n + r ⊙ gh_n)
    h_t = (1 − z) ⊙ c + z ⊙ h_{t-1}
    ŷ_t = W_hy h_t + b_y

``torch.nn.GRUCell`` with weight_ih = W_ih, weight_hh = W_hh, bias_ih = b_ih, bias_hh = b_hh gives
the same h_t (the reset gate multiplies W_hn h + b_hn, not h).

Derivatives. A parameter of block b ∈ {r, z, n} and row k only moves unit k, through the
pre-activation gi_{b,k} (input side) or gh_{b,k} (hidden side). With

    κ_r = (1 − z)(1 − c²) gh_n r(1 − r)     (∂h_t/∂gi_r = ∂h_t/∂gh_r)
    κ_z = (h_{t-1} − c) z(1 − z)            (∂h_t/∂gi_z = ∂h_t/∂gh_z)
    κ_n = (1 − z)(1 − c²)                   (∂h_t/∂gi_n)
    κ_n' = κ_n ⊙ r                          (∂h_t/∂gh_n)

and D_i = [κ_r, κ_z, κ_n], D_h = [κ_r, κ_z, κ_n'] (3n each), the primitives are

    J_t V     = Σ_b D_h,b ⊙ (W_hh V)_b + z ⊙ V
    Uᵀ J_t    = (D_h ⊙ [U; U; U])ᵀ W_hh + z ⊙ U
    Uᵀ F_t    = [vec(e_i x_tᵀ), vec(e_h h_{t-1}ᵀ), e_i, e_h],
                e_i = D_i ⊙ [U; U; U], e_h = D_h ⊙ [U; U; U]
    F_t[k, :] = the same with U = e_k (one nonzero row block per parameter)
    J_t       = Σ_b diag(D_h,b) W_hh,b + diag(z)          (dense, n × n; W_hh,b the block b rows)
    Σ_j F_t[k, j]² / m_j
              = Σ_b D_i,bk² (Σ_j x_j² / m_{W_ih[bk, j]} + 1 / m_{b_ih[bk]})
              + D_h,bk² (Σ_j h_j² / m_{W_hh[bk, j]} + 1 / m_{b_hh[bk]})

Cost O(n(n + m)) per step for forward, JVP (one tangent), VJP and the row norms.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gradflow import (
    AffineReadoutModel,
    CounterRNG,
    ModelOptions,
    Units,
    add_block_diagonal,
    add_row_outer,
    sigmoid,
)

Array = Any


class GRU(AffineReadoutModel):
    name = "gru"
    description = "GRU cell (PyTorch gate conventions r, z, n), affine readout"
    Options = ModelOptions

    def __init__(self, options: ModelOptions, backend: Any) -> None:
        super().__init__(options, backend)
        n, m, k = options.n_hidden, options.n_in, options.n_out
        self.lay_out(
            [("W_ih", (3 * n, m)), ("W_hh", (3 * n, n)), ("b_ih", (3 * n,)), ("b_hh", (3 * n,))],
            n_visible=n, n_state=n, n_out=k,
        )

    # -- parameters --------------------------------------------------------------------------
    def init_params(self, seed: int = 0) -> Array:
        """Every recurrent weight and bias ~ U(±1/√n) (as torch.nn.GRUCell); readout as rnn."""
        xp, dt = self.xp, self.dtype
        rng = CounterRNG(xp, seed)
        bound = 1.0 / self.n_state ** 0.5
        rec = rng.uniform((self.layout.n_rec,), dt, -bound, bound)
        return xp.concat([rec, *self.init_readout(rng)])

    # -- one step ----------------------------------------------------------------------------
    def forward(self, theta: Array, h: Array, x: Array) -> tuple[Array, dict[str, Array]]:
        xp, lay, n = self.xp, self.layout, self.n_state
        gi = x @ lay.view(theta, "W_ih").T + lay.view(theta, "b_ih")
        gh = h @ lay.view(theta, "W_hh").T + lay.view(theta, "b_hh")
        r = sigmoid(xp, gi[:, :n] + gh[:, :n])
        z = sigmoid(xp, gi[:, n:2 * n] + gh[:, n:2 * n])
        gh_n = gh[:, 2 * n:]
        c = xp.tanh(gi[:, 2 * n:] + r * gh_n)
        h_next = (1.0 - z) * c + z * h
        kn = (1.0 - z) * (1.0 - c * c)
        kr = kn * gh_n * r * (1.0 - r)
        kz = (h - c) * z * (1.0 - z)
        d_i = xp.concat([kr, kz, kn], axis=1)
        d_h = xp.concat([kr, kz, kn * r], axis=1)
        return h_next, {"h": h, "x": x, "z": z, "d_i": d_i, "d_h": d_h}

    # -- derivatives -------------------------------------------------------------------------
    def _sum_blocks(self, a: Array) -> Array:
        """(B, 3n, ...) -> (B, n, ...): the sum of the r, z, n blocks."""
        n = self.n_state
        return a[:, :n, ...] + a[:, n:2 * n, ...] + a[:, 2 * n:, ...]

    def jvp_state(self, theta: Array, cache: dict[str, Array], v: Array) -> Array:
        w = self.layout.view(theta, "W_hh")
        z, d_h = cache["z"], cache["d_h"]
        if v.ndim == 2:
            return self._sum_blocks(d_h * (v @ w.T)) + z * v
        return self._sum_blocks(d_h[:, :, None] * (w @ v)) + z[:, :, None] * v

    def vjp(self, theta: Array, cache: dict[str, Array], u: Array) -> tuple[Array, Array]:
        xp = self.xp
        u3 = xp.concat([u, u, u], axis=1)
        e_i, e_h = cache["d_i"] * u3, cache["d_h"] * u3
        u_h = e_h @ self.layout.view(theta, "W_hh") + cache["z"] * u
        B = u.shape[0]
        g_ih = xp.reshape(e_i[:, :, None] * cache["x"][:, None, :], (B, -1))
        g_hh = xp.reshape(e_h[:, :, None] * cache["h"][:, None, :], (B, -1))
        return u_h, xp.concat([g_ih, g_hh, e_i, e_h], axis=1)

    def vjp_accumulate(self, theta: Array, cache: dict[str, Array], u: Array, acc: Array,
                       state: bool = True, scale: Array | None = None) -> Array | None:
        """acc (· scale) += Uᵀ F_t without forming it: e_i xᵀ, e_h hᵀ, e_i, e_h added into the
        views of acc (per stream), or the matrix products over the streams (summed)."""
        xp = self.xp
        u3 = xp.concat([u, u, u], axis=1)
        e_i, e_h = cache["d_i"] * u3, cache["d_h"] * u3
        if scale is not None:
            acc *= scale
        views = self.layout.views(acc)
        if views["b_ih"].ndim == 1:
            views["W_ih"] += e_i.T @ cache["x"]
            views["W_hh"] += e_h.T @ cache["h"]
            views["b_ih"] += xp.sum(e_i, axis=0)
            views["b_hh"] += xp.sum(e_h, axis=0)
        else:
            views["W_ih"] += e_i[:, :, None] * cache["x"][:, None, :]
            views["W_hh"] += e_h[:, :, None] * cache["h"][:, None, :]
            views["b_ih"] += e_i
            views["b_hh"] += e_h
        if not state:
            return None
        return e_h @ self.layout.view(theta, "W_hh") + cache["z"] * u

    def param_jacobian(self, theta: Array, cache: dict[str, Array]) -> Array:
        xp = self.xp
        d_i, d_h, h, x = cache["d_i"], cache["d_h"], cache["h"], cache["x"]
        B, n = h.shape
        eye3 = xp.concat([xp.eye(n, dtype=h.dtype)] * 3, axis=1)  # (n, 3n): δ_{k, row mod n}
        sel_i = d_i[:, None, :] * eye3[None, :, :]  # (B, n, 3n): D_i[row] if row ≡ k
        sel_h = d_h[:, None, :] * eye3[None, :, :]
        f_ih = xp.reshape(sel_i[:, :, :, None] * x[:, None, None, :], (B, n, -1))
        f_hh = xp.reshape(sel_h[:, :, :, None] * h[:, None, None, :], (B, n, -1))
        return xp.concat([f_ih, f_hh, sel_i, sel_h], axis=2)

    def state_jacobian(self, theta: Array, cache: dict[str, Array]) -> Array:
        """J_t = Σ_b diag(D_h,b) W_hh,b + diag(z), shape (B, n, n)."""
        w = self.layout.view(theta, "W_hh")
        jac = self._sum_blocks(cache["d_h"][:, :, None] * w[None, :, :])
        add_block_diagonal(self.xp, jac, 0, cache["z"][:, :, None])
        return jac

    def param_jacobian_accumulate(self, theta: Array, cache: dict[str, Array],
                                  acc: Array) -> None:
        """acc += F_t touching only its non-zero entries: row k gets, for each block b,
        D_i,bk x_t on W_ih[bn + k, :], D_h,bk h_{t-1} on W_hh[bn + k, :], D_i,bk on b_ih[bn + k]
        and D_h,bk on b_hh[bn + k] (P_rec numbers in all; the dense F_t has n · P_rec)."""
        xp, specs = self.xp, self.layout.specs
        d_i, d_h = cache["d_i"], cache["d_h"]
        add_row_outer(xp, acc, specs["W_ih"].offset, d_i, cache["x"])
        add_row_outer(xp, acc, specs["W_hh"].offset, d_h, cache["h"])
        add_row_outer(xp, acc, specs["b_ih"].offset, d_i)
        add_row_outer(xp, acc, specs["b_hh"].offset, d_h)

    # -- structured primitives (docs/architecture.md §4) --------------------------------------
    def units(self) -> Units:
        """Unit k: state coordinate h_k and row k of each gate block of W_ih, W_hh, b_ih, b_hh.
        (No Kronecker factors: the candidate's recurrent input W_hn h + b_hn is multiplied by
        the reset gate, so the W_ih and W_hh parts of F_t have different row factors.)"""
        n, m = self.n_state, self.options.n_in
        return Units.rows(np.arange(n)[:, None], [(3, m), (3, n), (3, 1), (3, 1)])

    def state_jacobian_blocks(self, theta: Array, cache: dict[str, Array]) -> Array:
        """J_t[k, k] = Σ_b D_h,bk W_hh[bn + k, k] + z_k, shape (B, n, 1, 1): O(n)."""
        xp, n = self.xp, self.n_state
        diag = xp.linalg.diagonal(xp.reshape(self.layout.view(theta, "W_hh"), (3, n, n)))
        jac = xp.sum(xp.reshape(cache["d_h"], (-1, 3, n)) * diag[None, :, :], axis=1)
        return (jac + cache["z"])[:, :, None, None]

    def internal_jacobian_blocks(self, theta: Array, cache: dict[str, Array]) -> Array:
        """z: h_t = (1 − z) c + z h_{t−1} with the gates' recurrent inputs held fixed."""
        return cache["z"][:, :, None, None]

    def param_row_sqnorms(self, theta: Array, cache: dict[str, Array],
                          inv_metric: Array | None = None) -> Array:
        xp = self.xp
        d_i, d_h = cache["d_i"], cache["d_h"]
        h2, x2 = cache["h"] ** 2, cache["x"] ** 2
        if inv_metric is None:
            s_i = xp.sum(x2, axis=1, keepdims=True) + 1.0
            s_h = xp.sum(h2, axis=1, keepdims=True) + 1.0
        else:
            lay = self.layout
            s_i = x2 @ lay.view(inv_metric, "W_ih").T + lay.view(inv_metric, "b_ih")
            s_h = h2 @ lay.view(inv_metric, "W_hh").T + lay.view(inv_metric, "b_hh")
        return self._sum_blocks(d_i * d_i * s_i + d_h * d_h * s_h)
