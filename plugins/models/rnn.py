"""The leaky tanh RNN.

    a_t = W_hh h_{t-1} + W_xh x_t + b_h
    h_t = (1 − α) h_{t-1} + α tanh(a_t)
    ŷ_t = W_hy h_t + b_y

With s = tanh(a) and d = α (1 − s²) (elementwise), the primitives are

    J_t V      = (1 − α) V + d ⊙ (W_hh V)
    Uᵀ J_t     = (1 − α) U + (d ⊙ U)ᵀ W_hh
    Uᵀ F_t     = [vec((d ⊙ U) h_{t-1}ᵀ), vec((d ⊙ U) x_tᵀ), d ⊙ U]
    F_t[k, :]  = d_k [e_k ⊗ h_{t-1}, e_k ⊗ x_t, e_k]
    Σ_j F_t[k, j]² / m_j
               = d_k² (Σ_j h_j² / m_{W_hh[k,j]} + Σ_j x_j² / m_{W_xh[k,j]} + 1 / m_{b_h[k]})

α = 1 is the plain Elman network; α < 1 a leaky integrator (a discretised continuous-time RNN).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from gradflow import (
    ALL_CAPABILITIES,
    AffineReadout,
    CounterRNG,
    Model,
    ModelOptions,
    ParamLayout,
)

Array = Any


class RNNOptions(ModelOptions):
    alpha: float = Field(1.0, gt=0.0, le=1.0, description="leak α ∈ (0, 1]; 1 = no leak")
    init: Literal["uniform", "orthogonal"] = Field(
        "uniform",
        description="W_hh initialisation: U(±1/√n) like torch.nn.RNNCell, or a random "
        "orthogonal matrix",
    )


class RNN(Model):
    name = "rnn"
    description = "leaky tanh RNN: h' = (1−α)h + α tanh(W_hh h + W_xh x + b_h), affine readout"
    Options = RNNOptions
    capabilities = ALL_CAPABILITIES

    def __init__(self, options: RNNOptions, backend: Any) -> None:
        super().__init__(options, backend)
        n, m, k = options.n_hidden, options.n_in, options.n_out
        self.n_state = n
        self.alpha = float(options.alpha)
        self._readout = AffineReadout(self.xp, n, n, k)
        self.layout = ParamLayout(
            [("W_hh", (n, n)), ("W_xh", (n, m)), ("b_h", (n,))], self._readout.shapes()
        )

    # -- parameters --------------------------------------------------------------------------
    def init_params(self, seed: int = 0) -> Array:
        xp, dt = self.xp, self.dtype
        n, m = self.options.n_hidden, self.options.n_in
        rng = CounterRNG(xp, seed)
        bound = 1.0 / n ** 0.5
        if self.options.init == "orthogonal":
            q, r = xp.linalg.qr(rng.normal((n, n), xp.float64))
            q = q * xp.sign(xp.linalg.diagonal(r))  # Haar-distributed (Mezzadri 2007)
            w_hh = xp.reshape(xp.astype(q, dt), (-1,))
        else:
            w_hh = rng.uniform((n * n,), dt, -bound, bound)
        pieces = [
            w_hh,
            rng.uniform((n * m,), dt, -bound, bound),
            rng.uniform((n,), dt, -bound, bound),
        ]
        pieces += self._readout.init(rng, dt)
        return xp.concat(pieces)

    # -- one step ----------------------------------------------------------------------------
    def forward(self, theta: Array, h: Array, x: Array) -> tuple[Array, dict[str, Array]]:
        lay = self.layout
        a = h @ lay.view(theta, "W_hh").T + x @ lay.view(theta, "W_xh").T + lay.view(theta, "b_h")
        s = self.xp.tanh(a)
        h_next = s if self.alpha == 1.0 else (1.0 - self.alpha) * h + self.alpha * s
        return h_next, {"h": h, "x": x, "s": s}

    def readout(self, theta: Array, h: Array) -> Array:
        return self._readout.apply(self.layout, theta, h)

    def readout_vjp(self, theta: Array, h: Array, u: Array) -> tuple[Array, Array]:
        return self._readout.vjp(self.layout, theta, h, u)

    # -- derivatives -------------------------------------------------------------------------
    def _d(self, cache: dict[str, Array]) -> Array:
        s = cache["s"]
        return self.alpha * (1.0 - s * s)

    def jvp_state(self, theta: Array, cache: dict[str, Array], v: Array) -> Array:
        w = self.layout.view(theta, "W_hh")
        d = self._d(cache)
        if v.ndim == 2:
            out = d * (v @ w.T)
        else:
            out = d[:, :, None] * (w @ v)
        if self.alpha != 1.0:
            out = out + (1.0 - self.alpha) * v
        return out

    def vjp(self, theta: Array, cache: dict[str, Array], u: Array) -> tuple[Array, Array]:
        xp = self.xp
        w = self.layout.view(theta, "W_hh")
        e = self._d(cache) * u
        u_h = e @ w
        if self.alpha != 1.0:
            u_h = u_h + (1.0 - self.alpha) * u
        B = u.shape[0]
        g_hh = xp.reshape(e[:, :, None] * cache["h"][:, None, :], (B, -1))
        g_xh = xp.reshape(e[:, :, None] * cache["x"][:, None, :], (B, -1))
        return u_h, xp.concat([g_hh, g_xh, e], axis=1)

    def param_jacobian(self, theta: Array, cache: dict[str, Array]) -> Array:
        xp = self.xp
        d = self._d(cache)
        h, x = cache["h"], cache["x"]
        B, n = d.shape
        eye = xp.eye(n, dtype=d.dtype)
        diag = d[:, :, None] * eye[None, :, :]  # (B, n, n): d_k δ_ki
        f_hh = xp.reshape(diag[:, :, :, None] * h[:, None, None, :], (B, n, -1))
        f_xh = xp.reshape(diag[:, :, :, None] * x[:, None, None, :], (B, n, -1))
        return xp.concat([f_hh, f_xh, diag], axis=2)

    def param_row_sqnorms(self, theta: Array, cache: dict[str, Array],
                          inv_metric: Array | None = None) -> Array:
        xp = self.xp
        d = self._d(cache)
        h2, x2 = cache["h"] ** 2, cache["x"] ** 2
        if inv_metric is None:
            rows = xp.sum(h2, axis=1, keepdims=True) + xp.sum(x2, axis=1, keepdims=True) + 1.0
        else:
            lay = self.layout
            rows = (h2 @ lay.view(inv_metric, "W_hh").T + x2 @ lay.view(inv_metric, "W_xh").T
                    + lay.view(inv_metric, "b_h"))
        return d * d * rows
