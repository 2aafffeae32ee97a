"""The long short-term memory cell (Hochreiter & Schmidhuber 1997), PyTorch's gate conventions.

    a   = W_ih x_t + b_ih + W_hh h_{t-1} + b_hh                   (4n: blocks i, f, g, o)
    i = σ(a_i),  f = σ(a_f),  g = tanh(a_g),  o = σ(a_o)
    c_t = f ⊙ c_{t-1} + i ⊙ g
    h_t = o ⊙ tanh(c_t)
    ŷ_t = W_hy h_t + b_y                                           (the readout sees h, not c)

The recurrent state is s_t = [h_t; c_t] (2n); ``torch.nn.LSTMCell`` with the same weights gives
the same (h_t, c_t).

Derivatives. Every parameter of block b and row k moves only a_{b,k}, hence only h_k and c_k.
With τ = tanh(c_t), q = o(1 − τ²) = ∂h_t/∂c_t and the per-block sensitivities of c_t and h_t to a

    D_c = [g i(1 − i), c_{t-1} f(1 − f), i(1 − g²), 0]
    D_h = q ⊙ D_c + [0, 0, 0, τ o(1 − o)]

the primitives are, for V = [V_h; V_c] and U = [U_h; U_c],

    J_t V     = [Σ_b D_h,b ⊙ (W_hh V_h)_b + q f ⊙ V_c ;  Σ_b D_c,b ⊙ (W_hh V_h)_b + f ⊙ V_c]
    Uᵀ J_t    = [eᵀ W_hh ;  f ⊙ (U_c + q ⊙ U_h)],   e = D_h ⊙ [U_h]×4 + D_c ⊙ [U_c]×4
    Uᵀ F_t    = [vec(e x_tᵀ), vec(e h_{t-1}ᵀ), e, e]
    J_t       = [Σ_b diag(D_h,b) W_hh,b   diag(q f) ;  Σ_b diag(D_c,b) W_hh,b   diag(f)]   (2n × 2n)
    F_t[h_k, :] = the same as Uᵀ F_t with e = D_h ⊙ [e_k]×4,  F_t[c_k, :] with e = D_c ⊙ [e_k]×4
    Σ_j F_t[h_k, j]² / m_j = Σ_b D_h,bk² S_bk,   Σ_j F_t[c_k, j]² / m_j = Σ_b D_c,bk² S_bk,
              S_bk = Σ_j x_j² / m_{W_ih[bk, j]} + Σ_j h_j² / m_{W_hh[bk, j]}
                     + 1 / m_{b_ih[bk]} + 1 / m_{b_hh[bk]}

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


class LSTM(AffineReadoutModel):
    name = "lstm"
    description = "LSTM cell (PyTorch gate conventions i, f, g, o), state [h; c], readout on h"
    Options = ModelOptions

    def __init__(self, options: ModelOptions, backend: Any) -> None:
        super().__init__(options, backend)
        n, m, k = options.n_hidden, options.n_in, options.n_out
        self.n_hidden = n
        self.lay_out(
            [("W_ih", (4 * n, m)), ("W_hh", (4 * n, n)), ("b_ih", (4 * n,)), ("b_hh", (4 * n,))],
            n_visible=n, n_state=2 * n, n_out=k,
        )

    # -- parameters --------------------------------------------------------------------------
    def init_params(self, seed: int = 0) -> Array:
        """Every recurrent weight and bias ~ U(±1/√n) (as torch.nn.LSTMCell); readout as rnn."""
        xp, dt = self.xp, self.dtype
        rng = CounterRNG(xp, seed)
        bound = 1.0 / self.n_hidden ** 0.5
        rec = rng.uniform((self.layout.n_rec,), dt, -bound, bound)
        return xp.concat([rec, *self.init_readout(rng)])

    # -- one step ----------------------------------------------------------------------------
    def forward(self, theta: Array, h: Array, x: Array) -> tuple[Array, dict[str, Array]]:
        xp, lay, n = self.xp, self.layout, self.n_hidden
        h_prev, c_prev = h[:, :n], h[:, n:]
        a = (x @ lay.view(theta, "W_ih").T + lay.view(theta, "b_ih")
             + h_prev @ lay.view(theta, "W_hh").T + lay.view(theta, "b_hh"))
        i = sigmoid(xp, a[:, :n])
        f = sigmoid(xp, a[:, n:2 * n])
        g = xp.tanh(a[:, 2 * n:3 * n])
        o = sigmoid(xp, a[:, 3 * n:])
        c = f * c_prev + i * g
        tc = xp.tanh(c)
        h_next = o * tc
        q = o * (1.0 - tc * tc)
        zero = xp.zeros_like(o)
        d_c = xp.concat([g * i * (1.0 - i), c_prev * f * (1.0 - f), i * (1.0 - g * g), zero],
                        axis=1)
        d_h = q[:, None, :] * xp.reshape(d_c, (-1, 4, n))
        d_h = xp.reshape(d_h, (-1, 4 * n)) + xp.concat([zero, zero, zero, tc * o * (1.0 - o)],
                                                       axis=1)
        cache = {"h": h_prev, "x": x, "f": f, "q": q, "d_c": d_c, "d_h": d_h}
        return xp.concat([h_next, c], axis=1), cache

    # -- derivatives -------------------------------------------------------------------------
    def _sum_blocks(self, a: Array) -> Array:
        """(B, 4n, ...) -> (B, n, ...): the sum of the i, f, g, o blocks."""
        n = self.n_hidden
        return a[:, :n, ...] + a[:, n:2 * n, ...] + a[:, 2 * n:3 * n, ...] + a[:, 3 * n:, ...]

    def _cotangent(self, cache: dict[str, Array], u: Array) -> Array:
        """e = D_h ⊙ [U_h]×4 + D_c ⊙ [U_c]×4, the cotangent of the pre-activation a (B, 4n)."""
        xp, n = self.xp, self.n_hidden
        u_h, u_c = u[:, :n], u[:, n:]
        return cache["d_h"] * xp.concat([u_h] * 4, axis=1) + cache["d_c"] * xp.concat(
            [u_c] * 4, axis=1)

    def jvp_state(self, theta: Array, cache: dict[str, Array], v: Array) -> Array:
        xp, n = self.xp, self.n_hidden
        w = self.layout.view(theta, "W_hh")
        f, q, d_h, d_c = cache["f"], cache["q"], cache["d_h"], cache["d_c"]
        if v.ndim == 2:
            da = v[:, :n] @ w.T
            fv = f * v[:, n:]
            out_h = self._sum_blocks(d_h * da) + q * fv
            out_c = self._sum_blocks(d_c * da) + fv
        else:
            da = w @ v[:, :n, :]
            fv = f[:, :, None] * v[:, n:, :]
            out_h = self._sum_blocks(d_h[:, :, None] * da) + q[:, :, None] * fv
            out_c = self._sum_blocks(d_c[:, :, None] * da) + fv
        return xp.concat([out_h, out_c], axis=1)

    def vjp(self, theta: Array, cache: dict[str, Array], u: Array) -> tuple[Array, Array]:
        xp, n = self.xp, self.n_hidden
        e = self._cotangent(cache, u)
        u_prev = xp.concat([e @ self.layout.view(theta, "W_hh"),
                            cache["f"] * (u[:, n:] + cache["q"] * u[:, :n])], axis=1)
        B = u.shape[0]
        g_ih = xp.reshape(e[:, :, None] * cache["x"][:, None, :], (B, -1))
        g_hh = xp.reshape(e[:, :, None] * cache["h"][:, None, :], (B, -1))
        return u_prev, xp.concat([g_ih, g_hh, e, e], axis=1)

    def vjp_accumulate(self, theta: Array, cache: dict[str, Array], u: Array, acc: Array,
                       state: bool = True, scale: Array | None = None) -> Array | None:
        """acc (· scale) += Uᵀ F_t without forming it: e xᵀ, e hᵀ, e, e added into the views
        of acc (per stream), or Eᵀ X, Eᵀ H, Σ_b e_b, Σ_b e_b (summed over the streams)."""
        xp, n = self.xp, self.n_hidden
        e = self._cotangent(cache, u)
        if scale is not None:
            acc *= scale
        _add_rows(xp, self.layout.views(acc), e, cache["x"], cache["h"])
        if not state:
            return None
        return xp.concat([e @ self.layout.view(theta, "W_hh"),
                          cache["f"] * (u[:, n:] + cache["q"] * u[:, :n])], axis=1)

    def param_jacobian(self, theta: Array, cache: dict[str, Array]) -> Array:
        xp = self.xp
        h, x = cache["h"], cache["x"]
        B, n = h.shape
        eye4 = xp.concat([xp.eye(n, dtype=h.dtype)] * 4, axis=1)  # (n, 4n): δ_{k, row mod n}
        sel = xp.concat([cache["d_h"][:, None, :] * eye4[None, :, :],
                         cache["d_c"][:, None, :] * eye4[None, :, :]], axis=1)  # (B, 2n, 4n)
        f_ih = xp.reshape(sel[:, :, :, None] * x[:, None, None, :], (B, 2 * n, -1))
        f_hh = xp.reshape(sel[:, :, :, None] * h[:, None, None, :], (B, 2 * n, -1))
        return xp.concat([f_ih, f_hh, sel, sel], axis=2)

    def state_jacobian(self, theta: Array, cache: dict[str, Array]) -> Array:
        """J_t = [Σ_b diag(D_h,b) W_hh,b, diag(q f); Σ_b diag(D_c,b) W_hh,b, diag(f)], shape
        (B, 2n, 2n) (rows and columns [h; c])."""
        xp, n = self.xp, self.n_hidden
        w = self.layout.view(theta, "W_hh")[None, :, :]
        f, q = cache["f"], cache["q"]
        jac = xp.zeros((f.shape[0], 2 * n, 2 * n), dtype=f.dtype)
        jac[:, :n, :n] = self._sum_blocks(cache["d_h"][:, :, None] * w)
        jac[:, n:, :n] = self._sum_blocks(cache["d_c"][:, :, None] * w)
        add_block_diagonal(xp, jac[:, :n, :], n, (q * f)[:, :, None])
        add_block_diagonal(xp, jac[:, n:, :], n, f[:, :, None])
        return jac

    def param_jacobian_accumulate(self, theta: Array, cache: dict[str, Array],
                                  acc: Array) -> None:
        """acc += F_t touching only its non-zero entries: row h_k (row c_k) gets, for each block
        b, D_h,bk (D_c,bk) times x_t on W_ih[bn + k, :], times h_{t-1} on W_hh[bn + k, :], and
        itself on b_ih[bn + k] and b_hh[bn + k] (2 P_rec numbers in all; the dense F_t has
        2n · P_rec)."""
        xp, n, specs = self.xp, self.n_hidden, self.layout.specs
        h, x = cache["h"], cache["x"]
        for rows, coeff in ((acc[:, :n, :], cache["d_h"]), (acc[:, n:, :], cache["d_c"])):
            add_row_outer(xp, rows, specs["W_ih"].offset, coeff, x)
            add_row_outer(xp, rows, specs["W_hh"].offset, coeff, h)
            add_row_outer(xp, rows, specs["b_ih"].offset, coeff)
            add_row_outer(xp, rows, specs["b_hh"].offset, coeff)

    # -- structured primitives (docs/architecture.md §4) --------------------------------------
    def units(self) -> Units:
        """Unit k: the coordinates (h_k, c_k) and row k of each gate block of W_ih, W_hh, b_ih
        and b_hh."""
        n, m = self.n_hidden, self.options.n_in
        coords = np.stack([np.arange(n), n + np.arange(n)], axis=1)
        return Units.rows(coords, [(4, m), (4, n), (4, 1), (4, 1)])

    def _unit_diagonal(self, theta: Array, coeff: Array) -> Array:
        """Σ_b coeff_bk W_hh[bn + k, k] (B, n): the diagonal of Σ_b diag(coeff_b) W_hh,b."""
        xp, n = self.xp, self.n_hidden
        w = xp.reshape(self.layout.view(theta, "W_hh"), (4, n, n))
        diag = xp.linalg.diagonal(w)  # (4, n)
        return xp.sum(xp.reshape(coeff, (-1, 4, n)) * diag[None, :, :], axis=1)

    def state_jacobian_blocks(self, theta: Array, cache: dict[str, Array]) -> Array:
        """Unit k's 2 × 2 block [[J_hh,kk, q_k f_k], [J_ch,kk, f_k]] (B, n, 2, 2): O(n)."""
        xp = self.xp
        f, q = cache["f"], cache["q"]
        top = xp.stack([self._unit_diagonal(theta, cache["d_h"]), q * f], axis=-1)
        bottom = xp.stack([self._unit_diagonal(theta, cache["d_c"]), f], axis=-1)
        return xp.stack([top, bottom], axis=-2)

    def internal_jacobian_blocks(self, theta: Array, cache: dict[str, Array]) -> Array:
        """[[0, q f], [0, f]]: through the cell state only (∂c_t/∂c_{t−1} = f, ∂h_t/∂c_{t−1} =
        q f); h_{t−1} reaches unit k only through W_hh, which e-prop holds fixed."""
        xp = self.xp
        f, q = cache["f"], cache["q"]
        zero = xp.zeros_like(f)
        return xp.stack([xp.stack([zero, q * f], axis=-1), xp.stack([zero, f], axis=-1)],
                        axis=-2)

    def param_kron_factors(self, theta: Array,
                           cache: dict[str, Array]) -> tuple[Array, Array]:
        """F_t = x̂_t ⊗ D_t: D (B, 2n, 4n) with D[h_k, bn + k] = D_h,bk, D[c_k, bn + k] = D_c,bk,
        x̂ = [x_t; h_{t−1}; 1; 1] (the columns of [W_ih | W_hh | b_ih | b_hh])."""
        xp, n = self.xp, self.n_hidden
        h, x = cache["h"], cache["x"]
        eye4 = xp.concat([xp.eye(n, dtype=h.dtype)] * 4, axis=1)  # (n, 4n): δ_{k, row mod n}
        D = xp.concat([cache["d_h"][:, None, :] * eye4[None, :, :],
                       cache["d_c"][:, None, :] * eye4[None, :, :]], axis=1)
        ones = xp.ones((int(h.shape[0]), 1), dtype=h.dtype)
        return D, xp.concat([x, h, ones, ones], axis=1)

    def kron_index(self) -> np.ndarray:
        """W = [W_ih | W_hh | b_ih | b_hh] (4n × (m + n + 2)) in θ_rec's order."""
        n, m = self.n_hidden, self.options.n_in
        i = np.arange(4 * n)[:, None]
        return np.concatenate([i * m + np.arange(m), 4 * n * m + i * n + np.arange(n),
                               4 * n * (m + n) + i, 4 * n * (m + n + 1) + i], axis=1)

    def param_row_sqnorms(self, theta: Array, cache: dict[str, Array],
                          inv_metric: Array | None = None) -> Array:
        xp = self.xp
        h2, x2 = cache["h"] ** 2, cache["x"] ** 2
        if inv_metric is None:
            s = xp.sum(x2, axis=1, keepdims=True) + xp.sum(h2, axis=1, keepdims=True) + 2.0
        else:
            lay = self.layout
            s = (x2 @ lay.view(inv_metric, "W_ih").T + h2 @ lay.view(inv_metric, "W_hh").T
                 + lay.view(inv_metric, "b_ih") + lay.view(inv_metric, "b_hh"))
        d_h, d_c = cache["d_h"], cache["d_c"]
        return xp.concat([self._sum_blocks(d_h * d_h * s), self._sum_blocks(d_c * d_c * s)],
                         axis=1)


def _add_rows(xp: Any, views: dict[str, Array], e: Array, x: Array, h: Array) -> None:
    """The parameter part of a VJP added into the views of an accumulator: per stream when the
    views have the batch axis (B, rows, ·), summed over the streams (one matrix product per
    weight) when they do not."""
    if views["b_ih"].ndim == 1:
        views["W_ih"] += e.T @ x
        views["W_hh"] += e.T @ h
        total = xp.sum(e, axis=0)
        views["b_ih"] += total
        views["b_hh"] += total
        return
    views["W_ih"] += e[:, :, None] * x[:, None, :]
    views["W_hh"] += e[:, :, None] * h[:, None, :]
    views["b_ih"] += e
    views["b_hh"] += e
