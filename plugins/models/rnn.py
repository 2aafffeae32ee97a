"""The leaky tanh RNN.

    a_t = W_hh h_{t-1} + W_xh x_t + b_h
    h_t = (1 − α) h_{t-1} + α tanh(a_t)
    ŷ_t = W_hy h_t + b_y

With s = tanh(a) and d = α (1 − s²) (elementwise), the primitives are

    J_t V      = (1 − α) V + d ⊙ (W_hh V)
    Uᵀ J_t     = (1 − α) U + (d ⊙ U)ᵀ W_hh
    Uᵀ F_t     = [vec((d ⊙ U) h_{t-1}ᵀ), vec((d ⊙ U) x_tᵀ), d ⊙ U]
    F_t[k, :]  = d_k [e_k ⊗ h_{t-1}, e_k ⊗ x_t, e_k]
    J_t        = (1 − α) I + diag(d) W_hh                 (dense, n × n)
    Σ_j F_t[k, j]² / m_j
               = d_k² (Σ_j h_j² / m_{W_hh[k,j]} + Σ_j x_j² / m_{W_xh[k,j]} + 1 / m_{b_h[k]})

    ‖Uᵀ F_t‖² = Σ_k e_k² (|h_{t-1}|² + |x_t|² + 1),   e = d ⊙ U   (rows of F_t have disjoint
               supports: row k touches W_hh[k, :], W_xh[k, :] and b_h[k] only)

α = 1 is the plain Elman network; α < 1 a leaky integrator (a discretised continuous-time RNN).

**A fixed sparse W_hh** (option ``density`` < 1, the setting of SnAp-2, Menick et al. 2021): a
mask M (n × n) of round(density · n²) entries drawn uniformly at random from ``mask_seed`` when the
model is built — a property of the model, so every run seed, every replica and a resumed run see
the same mask; the diagonal is not treated specially. The recurrent weight is M ⊙ W_hh: every
formula above with W_hh replaced by it, and the W_hh part of every parameter derivative multiplied
by M (F_t[k, W_hh[i, j]] = d_k δ_ki h_j M_ij), so an entry outside the mask has no effect and a
gradient of exactly zero, and init_params sets it to 0. J_t's structural pattern is M, plus the
diagonal when α < 1 (:meth:`RNN.jacobian_pattern`). F_t is then no Kronecker product: the sparse
model lacks ``param_kron_factors``. The masked paths form each stream's n × n outer product before
masking it (a temporary of n² numbers per stream); density = 1 runs the dense code, unchanged.

Hot paths (:meth:`RNN.vjp_accumulate`): the parameter part of a VJP is a sum of outer products
e hᵀ, e xᵀ added straight into the caller's accumulator. Summed over the B streams it is a matrix
product Eᵀ H (n × B times B × n), in bands of rows of at most 2¹⁸ numbers. Per stream, for a small
network, one operation per weight on its view of the accumulator; for a large one, bands of rows
of a cache-sized block (2¹⁵ numbers on a CPU), each scaled by the rank-one estimators' 1/ρ and
added to while it is in the cache: one pass over the accumulator, and no temporary larger than a
band (no page faults per step).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import Field

from gradflow import (
    PARAM_KRON_FACTORS,
    TEMPORARY_BLOCK,
    AffineReadoutModel,
    CounterRNG,
    ModelOptions,
    Units,
    add_block_diagonal,
    add_outer,
    add_row_outer,
    blocks,
)

Array = Any


class RNNOptions(ModelOptions):
    alpha: float = Field(1.0, gt=0.0, le=1.0, description="leak α ∈ (0, 1]; 1 = no leak")
    init: Literal["uniform", "orthogonal"] = Field(
        "uniform",
        description="W_hh initialisation: U(±1/√n) like torch.nn.RNNCell, or a random "
        "orthogonal matrix",
    )
    density: float = Field(
        1.0, gt=0.0, le=1.0,
        description="fraction of W_hh's entries that exist: a fixed random mask keeps "
        "round(density · n²) of them, the others are 0 and stay 0 (1 = dense)",
    )
    mask_seed: int = Field(
        0, ge=0,
        description="seed of W_hh's mask when density < 1: part of the model, so every run "
        "seed, replica and resumed run sees the same mask",
    )


def recurrent_mask(n: int, density: float, seed: int) -> np.ndarray:
    """W_hh's mask, a bool array (n, n): round(density · n²) entries (at least one) drawn
    uniformly at random without replacement by a NumPy generator seeded with ``seed`` (the same
    mask on every backend)."""
    count = max(1, round(density * n * n))
    flat = np.zeros(n * n, dtype=bool)
    flat[np.random.default_rng(seed).choice(n * n, size=count, replace=False)] = True
    return flat.reshape(n, n)


class RNN(AffineReadoutModel):
    name = "rnn"
    description = "leaky tanh RNN: h' = (1−α)h + α tanh(W_hh h + W_xh x + b_h), affine readout"
    Options = RNNOptions
    replicas = True

    def __init__(self, options: RNNOptions, backend: Any) -> None:
        super().__init__(options, backend)
        n, m, k = options.n_hidden, options.n_in, options.n_out
        self.alpha = float(options.alpha)
        #: W_hh's mask (n, n): a bool NumPy array and the backend's 0/1 array; None when dense
        self.mask_np: np.ndarray | None = None
        self._mask: Array = None
        if float(getattr(options, "density", 1.0)) < 1.0:
            self.mask_np = recurrent_mask(n, float(options.density), int(options.mask_seed))
            self._mask = backend.asarray(self.mask_np.astype(np.float64))
            # F_t's W_hh part is then d_k (h ⊙ M[k, :]), not d_k h: no Kronecker factors
            self.capabilities = self.capabilities - {PARAM_KRON_FACTORS}
        self.lay_out([("W_hh", (n, n)), ("W_xh", (n, m)), ("b_h", (n,))],
                      n_visible=n, n_state=n, n_out=k)

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
        if self._mask is not None:  # the entries outside the mask are 0 (+0.0)
            w_hh = xp.where(xp.reshape(self._mask, (-1,)) != 0.0, w_hh, xp.zeros_like(w_hh))
        pieces = [
            w_hh,
            rng.uniform((n * m,), dt, -bound, bound),
            rng.uniform((n,), dt, -bound, bound),
        ]
        pieces += self.init_readout(rng)
        return xp.concat(pieces)

    # -- one step ----------------------------------------------------------------------------
    def _weights(self, theta: Array) -> tuple[Array, Array, Array]:
        lay = self.layout
        return self._w_hh(theta), lay.view(theta, "W_xh"), lay.view(theta, "b_h")

    def _w_hh(self, theta: Array) -> Array:
        """The recurrent weight the model uses: W_hh's view, or M ⊙ W_hh (a new array) when
        sparse."""
        w = self.layout.view(theta, "W_hh")
        return w if self._mask is None else w * self._mask

    def forward(self, theta: Array, h: Array, x: Array) -> tuple[Array, dict[str, Array]]:
        """h_t and the cache {h_{t−1}, x_t, d = α (1 − tanh(a_t)²)}."""
        w_hh, w_xh, b_h = self._weights(theta)
        a = h @ w_hh.mT
        a += x @ w_xh.mT
        a += b_h[..., None, :]
        s = self.xp.tanh(a)
        d = 1.0 - s * s  # d = α (1 − s²): every derivative needs it, so it is made once here
        if self.alpha == 1.0:
            return s, {"h": h, "x": x, "d": d}
        d *= self.alpha
        return (1.0 - self.alpha) * h + self.alpha * s, {"h": h, "x": x, "d": d}

    # -- derivatives -------------------------------------------------------------------------
    def _d(self, cache: dict[str, Array]) -> Array:
        return cache["d"]

    def jvp_state(self, theta: Array, cache: dict[str, Array], v: Array) -> Array:
        w = self._w_hh(theta)
        d = self._d(cache)
        if v.ndim == d.ndim:  # one tangent per stream, (..., B, n)
            out = v @ w.mT
            out *= d
        else:  # K tangents per stream, (..., B, n, K)
            out = w[..., None, :, :] @ v
            out *= d[..., None]
        if self.alpha != 1.0:
            out += (1.0 - self.alpha) * v
        return out

    def _vjp_state(self, theta: Array, e: Array, u: Array) -> Array:
        u_h = e @ self._w_hh(theta)
        if self.alpha != 1.0:
            u_h += (1.0 - self.alpha) * u
        return u_h

    def vjp(self, theta: Array, cache: dict[str, Array], u: Array) -> tuple[Array, Array]:
        xp = self.xp
        e = self._d(cache) * u
        lead = tuple(u.shape[:-1])
        g_hh = e[..., :, None] * cache["h"][..., None, :]
        if self._mask is not None:
            g_hh *= self._mask
        g_hh = xp.reshape(g_hh, (*lead, -1))
        g_xh = xp.reshape(e[..., :, None] * cache["x"][..., None, :], (*lead, -1))
        return self._vjp_state(theta, e, u), xp.concat([g_hh, g_xh, e], axis=-1)

    def vjp_accumulate(self, theta: Array, cache: dict[str, Array], u: Array, acc: Array,
                       state: bool = True, scale: Array | None = None) -> Array | None:
        """acc (· scale) += Uᵀ F_t without forming Uᵀ F_t: outer products added into acc.

        Small (B·P_rec ≤ ``TEMPORARY_BLOCK``): one operation per weight on its view of acc.
        Large: per stream, acc scaled (when asked) and one in-place rank-one update e zᵀ per
        weight (:func:`gradflow.add_outer`: a BLAS ``ger`` on NumPy, one pass over the weight).
        """
        xp = self.xp
        e = self._d(cache) * u
        h, x = cache["h"], cache["x"]
        n, m = self.n_state, self.options.n_in
        pieces = ((0, h, n), (n * n, x, m))
        if self._mask is not None:  # sparse W_hh: every case on views of acc, W_hh's masked
            views = self.layout.views(acc)
            if scale is not None:
                acc *= scale
            if acc.ndim == theta.ndim:  # summed over the (each replica's) streams
                views["W_hh"] += (e.mT @ h) * self._mask
                views["W_xh"] += e.mT @ x
                views["b_h"] += xp.sum(e, axis=-2)
            else:
                outer = e[..., :, None] * h[..., None, :]
                outer *= self._mask
                views["W_hh"] += outer
                views["W_xh"] += e[..., :, None] * x[..., None, :]
                views["b_h"] += e
        elif theta.ndim > 1:  # replicated runs: one operation a weight on views of acc
            views = self.layout.views(acc)
            if scale is not None:
                acc *= scale
            if acc.ndim == theta.ndim:  # summed over each replica's streams
                views["W_hh"] += e.mT @ h
                views["W_xh"] += e.mT @ x
                views["b_h"] += xp.sum(e, axis=-2)
            else:
                views["W_hh"] += e[..., :, None] * h[..., None, :]
                views["W_xh"] += e[..., :, None] * x[..., None, :]
                views["b_h"] += e
        elif acc.ndim == 1:  # Σ_b e_b ⊗ h_b: one matrix product over the streams
            if scale is not None:
                acc *= scale
            for start, z, width in pieces:
                _add_outer_sum(xp, acc, start, e, z, width)
            bias = acc[n * (n + m):]
            bias += xp.sum(e, axis=0)
        elif acc.shape[0] * n * (n + m) <= TEMPORARY_BLOCK:  # small: one operation a weight
            if scale is not None:
                acc *= scale
            views = self.layout.views(acc)  # (B, n, n), (B, n, m), (B, n): views of acc
            views["W_hh"] += e[:, :, None] * h[:, None, :]
            views["W_xh"] += e[:, :, None] * x[:, None, :]
            views["b_h"] += e
        else:  # per stream: one in-place rank-one update per weight (BLAS ger on NumPy)
            for b in range(acc.shape[0]):
                row = acc[b, ...]
                if scale is not None:
                    row *= scale[b, 0]
                for start, z, width in pieces:
                    if width:
                        rows = xp.reshape(row[start:start + n * width], (n, width), copy=False)
                        add_outer(xp, rows, e[b, ...], z[b, ...])
                bias = row[n * (n + m):]
                bias += e[b, ...]
        return self._vjp_state(theta, e, u) if state else None

    def vjp_param_sqnorms(self, theta: Array, cache: dict[str, Array], u: Array) -> Array:
        xp = self.xp
        e = self._d(cache) * u
        h, x = cache["h"], cache["x"]
        if self._mask is not None:  # Σ_k e_k² (Σ_j M_kj h_j² + |x|² + 1)
            ee = e * e
            return (xp.vecdot(ee, (h * h) @ self._mask.mT)
                    + xp.sum(ee, axis=-1) * (xp.vecdot(x, x) + 1.0))
        return xp.vecdot(e, e) * (xp.vecdot(h, h) + xp.vecdot(x, x) + 1.0)

    def param_jacobian(self, theta: Array, cache: dict[str, Array]) -> Array:
        if theta.ndim > 1:
            return self.xp.stack(_each_replica(self.param_jacobian, theta, cache))
        xp = self.xp
        d = self._d(cache)
        h, x = cache["h"], cache["x"]
        B, n = d.shape
        eye = xp.eye(n, dtype=d.dtype)
        diag = d[:, :, None] * eye[None, :, :]  # (B, n, n): d_k δ_ki
        f_hh = diag[:, :, :, None] * h[:, None, None, :]
        if self._mask is not None:  # F[k, W_hh[i, j]] = d_k δ_ki h_j M_ij
            f_hh *= self._mask
        f_hh = xp.reshape(f_hh, (B, n, -1))
        f_xh = xp.reshape(diag[:, :, :, None] * x[:, None, None, :], (B, n, -1))
        return xp.concat([f_hh, f_xh, diag], axis=2)

    def state_jacobian(self, theta: Array, cache: dict[str, Array]) -> Array:
        """J_t = (1 − α) I + diag(d) W_hh, shape (B, n, n)."""
        if theta.ndim > 1:
            return self.xp.stack(_each_replica(self.state_jacobian, theta, cache))
        jac = self._d(cache)[:, :, None] * self._w_hh(theta)[None, :, :]
        if self.alpha != 1.0:
            add_block_diagonal(self.xp, jac, 0, self.xp.full((1, self.n_state, 1),
                                                              1.0 - self.alpha, dtype=jac.dtype))
        return jac

    def param_jacobian_accumulate(self, theta: Array, cache: dict[str, Array],
                                  acc: Array) -> None:
        """acc += F_t touching only its non-zero entries: row k gets d_k h_{t-1} on W_hh[k, :],
        d_k x_t on W_xh[k, :] and d_k on b_h[k]: n + m + 1 numbers per row, P_rec in all
        (the dense F_t has n · P_rec)."""
        if theta.ndim > 1:
            _each_replica(self.param_jacobian_accumulate, theta, cache, acc)
            return
        xp, lay = self.xp, self.layout
        d = self._d(cache)
        if self._mask is None:
            add_row_outer(xp, acc, lay.specs["W_hh"].offset, d, cache["h"])
        else:  # row k: d_k h_{t-1} ⊙ M[k, :] on W_hh[k, :]
            add_block_diagonal(xp, acc, lay.specs["W_hh"].offset,
                               d[:, :, None] * cache["h"][:, None, :] * self._mask)
        add_row_outer(xp, acc, lay.specs["W_xh"].offset, d, cache["x"])
        add_row_outer(xp, acc, lay.specs["b_h"].offset, d)

    # -- structured primitives (docs/architecture.md §4) --------------------------------------
    def units(self) -> Units:
        """Unit k: state coordinate h_k and row k of W_hh, W_xh and b_h."""
        n, m = self.n_state, self.options.n_in
        return Units.rows(np.arange(n)[:, None], [(1, n), (1, m), (1, 1)])

    def jacobian_pattern(self) -> np.ndarray:
        """J_t = (1 − α) I + diag(d) (M ⊙ W_hh): the mask M, plus the diagonal when α < 1 (all
        True when dense)."""
        n = self.n_state
        if self.mask_np is None:
            return np.ones((n, n), dtype=bool)
        return self.mask_np | np.eye(n, dtype=bool) if self.alpha != 1.0 else self.mask_np.copy()

    def state_jacobian_blocks(self, theta: Array, cache: dict[str, Array]) -> Array:
        """J_t[k, k] = (1 − α) + d_k W_hh[k, k], shape (B, n, 1, 1): O(n)."""
        xp = self.xp
        diag = self._d(cache) * xp.linalg.diagonal(self._w_hh(theta))
        if self.alpha != 1.0:
            diag += 1.0 - self.alpha
        return diag[:, :, None, None]

    def internal_jacobian_blocks(self, theta: Array, cache: dict[str, Array]) -> Array:
        """1 − α: the leak, the unit's only path to its own past besides W_hh."""
        B = int(cache["d"].shape[0])
        return self.xp.full((B, self.n_state, 1, 1), 1.0 - self.alpha, dtype=self.dtype)

    def leak(self, theta: Array) -> Array:
        """λ = 1 − α for every unit."""
        return self.xp.full((self.n_state,), 1.0 - self.alpha, dtype=self.dtype)

    def param_kron_factors(self, theta: Array,
                           cache: dict[str, Array]) -> tuple[Array, Array]:
        """F_t = x̂_t ⊗ diag(d): D = diag(d) (B, n, n), x̂ = [h_{t−1}; x_t; 1] (dense W_hh only)."""
        if self._mask is not None:
            raise self._lacks(PARAM_KRON_FACTORS)
        xp = self.xp
        d = self._d(cache)
        eye = xp.eye(self.n_state, dtype=d.dtype)
        ones = xp.ones((int(d.shape[0]), 1), dtype=d.dtype)
        return d[:, :, None] * eye[None, :, :], xp.concat([cache["h"], cache["x"], ones], axis=1)

    def kron_index(self) -> np.ndarray:
        """W = [W_hh | W_xh | b_h] (n × (n + m + 1)) in θ_rec's order W_hh, W_xh, b_h."""
        if self._mask is not None:
            raise self._lacks(PARAM_KRON_FACTORS)
        n, m = self.n_state, self.options.n_in
        i = np.arange(n)[:, None]
        return np.concatenate([i * n + np.arange(n), n * n + i * m + np.arange(m),
                               n * (n + m) + i], axis=1)

    def param_row_sqnorms(self, theta: Array, cache: dict[str, Array],
                          inv_metric: Array | None = None) -> Array:
        xp = self.xp
        d = self._d(cache)
        h2, x2 = cache["h"] ** 2, cache["x"] ** 2
        mask = self._mask
        if inv_metric is None:
            hh = (xp.sum(h2, axis=-1, keepdims=True) if mask is None else h2 @ mask.mT)
            rows = hh + xp.sum(x2, axis=-1, keepdims=True) + 1.0
        else:
            lay = self.layout
            m_hh = lay.view(inv_metric, "W_hh")
            if mask is not None:
                m_hh = m_hh * mask
            rows = (h2 @ m_hh.mT + x2 @ lay.view(inv_metric, "W_xh").mT
                    + lay.view(inv_metric, "b_h")[..., None, :])
        return d * d * rows


def _each_replica(primitive: Any, theta: Array, cache: dict[str, Array],
                  *arrays: Array) -> list[Any]:
    """``primitive`` called replica by replica on (R, …) arguments: the dense Jacobians, which no
    replicated estimator calls in a hot loop, take a replicated θ this way."""
    return [primitive(theta[r, ...], {k: v[r, ...] for k, v in cache.items()},
                      *(a[r, ...] for a in arrays)) for r in range(theta.shape[0])]


def _add_outer_sum(xp: Any, acc: Array, start: int, e: Array, z: Array, width: int) -> None:
    """acc[start:start + n·width] += vec(Σ_b e_b z_bᵀ) = vec(Eᵀ Z): a matrix product over the
    streams (for B = 1 an outer product, each number one product: the numbers of the replicated
    path, e.mT @ h) in bands of rows of at most ``TEMPORARY_BLOCK`` numbers; for one stream and
    at least that many numbers, one in-place rank-one update (:func:`gradflow.add_outer`, BLAS ger
    on NumPy: one pass instead of two, rounded once where the product-then-sum rounds twice)."""
    B, n = e.shape
    if n * width == 0:
        return
    if B == 1 and n * width >= TEMPORARY_BLOCK:  # one in-place rank-one update (BLAS ger)
        add_outer(xp, xp.reshape(acc[start:start + n * width], (n, width), copy=False), e[0, ...],
                  z[0, ...])
        return
    rows = max(1, TEMPORARY_BLOCK // width)
    for r0, r1 in blocks(n, rows):
        band = acc[start + r0 * width:start + r1 * width]
        band += xp.reshape(e[0, r0:r1, None] * z[0, None, :] if B == 1 else e[:, r0:r1].T @ z,
                           (-1,))
