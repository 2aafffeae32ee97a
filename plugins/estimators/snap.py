"""SnAp-n (Menick, Elsen, Evci, Osindero, Simonyan & Graves, "Practical real time recurrent learning
with a sparse approximation", ICLR 2021): RTRL with the influence matrix kept on a fixed pattern.

RTRL carries G_t = ∂h_t/∂θ_rec (n × P_rec per stream): G_t = J_t G_{t−1} + F_t. SnAp-n keeps only
the entries of G_t that a parameter reaches within n steps of the recurrent core, and drops the
rest after every step:

    G_t = (J_t G_{t−1} + F_t) ⊙ Ω_n,        g_t = [Σ_b δ_t,bᵀ G_t,b, ∂ℓ_t/∂θ_out].

**The pattern**, from the model's units (:meth:`gradflow.Model.units`: parameter θ_j belongs to unit
u(j) and moves only that unit's s coordinates in one step) and the structural pattern of J_t
(:meth:`gradflow.Model.jacobian_pattern`, all True unless the model says otherwise):

* n = 1: θ_j reaches the coordinates of its unit, rows[u] = coords[u] (K = s rows) — the
  non-zeros of F_t and possibly a few more (the ``lstm``'s output gate moves h_k, not c_k, and
  is kept on both);
* n = 2: also every coordinate k with J_t[k, c] structurally non-zero for a c of its unit,
  rows[u] = coords[u] followed by those k in increasing order (K = the largest such set; shorter
  ones are padded with rows that stay 0).

Every parameter of a unit has the same rows, so G is stored per stream as (B, K, P_rec): entry
(r, j) is G_t[rows[u(j), r], j]. The unit's own coordinates come first, so F_t on the pattern is
what :meth:`~gradflow.Model.param_jacobian_units_accumulate` adds into rows [:s]. With
Jsub_u = J_t[rows[u], rows[u]] (K × K):

    G_t[r, j] = Σ_{r'} Jsub_{u(j)}[r, r'] G_{t−1}[r', j] + F_t[rows[u(j), r], j]
    g_t,j = Σ_b Σ_r δ_t,b[rows[u(j), r]] G_t,b[r, j]

exactly the masked product above: G_{t−1}[:, j] is zero outside rows[u(j)], so only those columns
of J_t meet it, and only those rows are kept.

**How a step is computed.** Jsub comes from :meth:`~gradflow.Model.state_jacobian_blocks` when the
rows are the units' coordinates (always for n = 1; O(n) for the built-in cells), else it is
gathered from the dense J_t (``state_jacobian``, or ``jvp_state`` on the identity). The
parameters' units are blocks (:meth:`gradflow.Units.views`: each block of θ_rec seen as
(groups, n_units, width)), so a per-unit number multiplies every parameter of its unit by
broadcasting, never by a gather of P indices:

* K = 1 (n = 1 on ``rnn`` and ``gru``): Jsub is one number per unit. G is kept as
  G = σ ⊙ Ĝ with a scale σ per stream and unit (state ``scale``; ``G`` holds Ĝ), so that the
  step is σ ← Jsub σ (n numbers) and Ĝ ← Ĝ + F_t / σ: F_t on the units divided by σ is one VJP
  with the cotangent 1/σ on the units' coordinates (what the derived
  ``param_jacobian_units_accumulate`` computes with the cotangent 1), one pass over Ĝ where
  G ← Jsub ⊙ G + F_t would take two. A unit whose σ leaves [2⁻ᴿ, 2ᴿ] (R = 300 in float64, 40 in
  float32) or is 0 is folded into Ĝ (Ĝ ← σ Ĝ on that unit's parameters, σ ← 1). Without the
  lazy scale (a model that implements ``param_jacobian_units_accumulate`` itself, or
  ``lazy_scale = False``): G ← Jsub ⊙ G in place, one operation a block;
* K = 2 (n = 1 on ``lstm``): the 2 × 2 product written out elementwise into a second buffer;
* K > 2 (n = 2 on a sparse network): one batched matrix product a block, (K × K) times
  (K × width) for every unit, into a second buffer;
* every unit reaching every coordinate (n = 2 on a dense network; a model with one unit, like
  ``influence``): SnAp-n is RTRL, and with RTRL's structured primitives (``state_jacobian``,
  ``param_jacobian_accumulate``) the step is RTRL's, G_t = J_t G_{t−1} + F_t as one product per
  stream, G in the coordinates' order (not the units' own first).

Then F_t is added in place on the unit rows, and the gradient is formed block by block into the
returned direction (the elementwise products of the per-unit δ with the rows; for K > 2 a (1 × K)
product a unit). The buffers are allocated once; ``state.G`` is the one written last (nothing of
size P is allocated per step by the estimator).

Cost per step: O(K² · P_rec) time and K · P_rec numbers per stream — O(P) for n = 1 on the
built-in cells (one number per parameter and touched coordinate), far less than RTRL's O(n² P)
for n = 2 on a sparse network (K ≈ density · n). **Exact** (equal to RTRL) when J_t never moves
influence out of the pattern: n = 1 with J_t block-diagonal over the units (an ``rnn`` with a
diagonal W_hh; ``gru``/``lstm`` with diagonal W_hh gate blocks), n = 2 with a dense J_t (then
K = n and SnAp-2 is RTRL), a model whose units are one unit (the default), and always at the
first step after a reset (G = F). Otherwise a deterministic, biased approximation.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from array_api_compat import is_numpy_array
from pydantic import Field

from gradflow import (
    JVP_STATE,
    PARAM_JACOBIAN_ACCUMULATE,
    PARAM_JACOBIAN_UNITS_ACCUMULATE,
    STATE_JACOBIAN,
    STATE_JACOBIAN_BLOCKS,
    CapabilityError,
    Estimator,
    EstimatorOptions,
    PerStream,
    StepRecord,
    matmul_into,
)

Array = Any

#: the largest K whose update is written out elementwise (K² operations a block); beyond it, a
#: batched matrix product a block
ELEMENTWISE_K = 2
#: R of the lazy scale's range [2⁻ᴿ, 2ᴿ] by dtype (outside it a unit is folded into Ĝ): F_t / σ
#: and δ σ stay far inside the dtype's range
FOLD_RANGE = {"float64": 300, "float32": 40}
#: a fold takes one pass over Ĝ, instead of the folded units' rows, when more than one unit in
#: FULL_FOLD folds at once
FULL_FOLD = 8


class SnApOptions(EstimatorOptions):
    n: Literal[1, 2] = Field(
        1, description="reach kept: 1 (SnAp-1, the units' own coordinates: O(P) a step) or 2 "
        "(SnAp-2: also the coordinates J_t moves them to)")


def pattern_rows(coords: np.ndarray, pattern: np.ndarray, order: int,
                 ) -> tuple[np.ndarray, np.ndarray]:
    """The rows each unit's parameters keep, (rows (n_units, K), valid (n_units, K)).

    n = 1: the unit's coordinates. n = 2: its coordinates, then every other coordinate k with
    ``pattern[k, c]`` for one of them, increasing. Rows past a unit's own count are padding
    (``valid`` False; they repeat its first coordinate and stay 0)."""
    coords = np.asarray(coords, dtype=np.int64)
    if order == 1:
        return coords.copy(), np.ones(coords.shape, dtype=bool)
    reach = np.asarray(pattern, dtype=bool)
    lists = []
    for own in coords:
        hit = np.flatnonzero(reach[:, own].any(axis=1))
        lists.append(np.concatenate([own, np.setdiff1d(hit, own)]))
    width = max(len(r) for r in lists)
    rows = np.empty((len(lists), width), dtype=np.int64)
    valid = np.zeros((len(lists), width), dtype=bool)
    for u, r in enumerate(lists):
        rows[u, :len(r)] = r
        rows[u, len(r):] = r[0]
        valid[u, :len(r)] = True
    return rows, valid


class SnAp(Estimator):
    name = "snap"
    description = ("SnAp-n (Menick et al. 2021): RTRL kept on the entries of ∂h/∂θ reachable "
                   "within n steps; n = 1: O(P) a step")
    Options = SnApOptions
    requires = frozenset({PARAM_JACOBIAN_UNITS_ACCUMULATE, STATE_JACOBIAN_BLOCKS})
    kind = "biased"  # deterministic; exact where J_t keeps the influence in the pattern
    #: K = 1: keep G = σ ⊙ Ĝ (module docstring) when the model's units-accumulate is the derived
    #: one (set to False on the class or an instance before ``start`` for the direct update)
    lazy_scale: bool = True

    def __init__(self, model: Any, options: SnApOptions) -> None:
        super().__init__(model, options)
        self.order = int(options.n)
        units = model.units()
        problems = units.problems(model.n_state, self.layout.n_rec)
        if problems:
            raise ValueError(f"model {model.name!r}: units(): {'; '.join(problems)}")
        self.units = units
        self.rows, self.valid = pattern_rows(units.coords, model.jacobian_pattern(), self.order)
        K, n = self.n_rows, model.n_state
        #: every unit reaches every coordinate: SnAp-n is RTRL, and with RTRL's structured
        #: primitives the step is RTRL's, one product per stream (G in the coordinates' order)
        self.full = (K == n and bool(self.valid.all()) and model.has(STATE_JACOBIAN)
                     and model.has(PARAM_JACOBIAN_ACCUMULATE))
        if self.full:
            self.rows = np.broadcast_to(np.arange(n), (units.n_units, n)).copy()
        #: the rows are the units' coordinates: Jsub is state_jacobian_blocks (n = 1 always)
        self.from_blocks = K == units.size and bool(np.array_equal(self.rows, units.coords))
        self.dense_j = not (self.from_blocks or self.full)
        if self.dense_j and not (model.has(STATE_JACOBIAN) or model.has(JVP_STATE)):
            raise CapabilityError(f"estimator 'snap' with n = 2 needs the dense J_t of model "
                                  f"{model.name!r}: it provides neither 'state_jacobian' nor "
                                  "'jvp_state'")
        backend = self.backend
        self._row_index = backend.asarray(self.rows.reshape(-1))
        self._row_valid = backend.asarray(self.valid.astype(np.float64))
        coords = units.coords[:, 0]
        #: the unit of each coordinate (s = 1): where the lazy scale's cotangent takes 1/σ
        self._unit_of_coord = (None if np.array_equal(coords, np.arange(len(coords))) else
                               backend.asarray(np.argsort(coords)))
        if self.dense_j:
            pairs = self.rows[:, :, None] * n + self.rows[:, None, :]
            self._pair_index = backend.asarray(pairs.reshape(-1))
            self._pair_valid = backend.asarray(
                (self.valid[:, :, None] & self.valid[:, None, :]).astype(np.float64))

    @property
    def n_rows(self) -> int:
        """K: the rows of G kept per parameter."""
        return int(self.rows.shape[1])

    @property
    def lazy(self) -> bool:
        """Whether G is kept as σ ⊙ Ĝ: K = 1, ``lazy_scale``, and the model's
        ``param_jacobian_units_accumulate`` derived from its VJP (so that F_t / σ is one VJP)."""
        return (self.lazy_scale and self.n_rows == 1 and self.units.size == 1
                and PARAM_JACOBIAN_UNITS_ACCUMULATE not in self.model.implemented)

    @property
    def mode(self) -> str:
        """How the step applies Jsub: ``"full"`` (RTRL's product, :attr:`full`), ``"scale"``
        (K = 1), ``"elementwise"`` (K ≤ :data:`ELEMENTWISE_K`) or ``"matmul"``."""
        K = self.n_rows
        if self.full and K > 1:
            return "full"
        return "scale" if K == 1 else "elementwise" if K <= ELEMENTWISE_K else "matmul"

    # -- state -------------------------------------------------------------------------------
    def state_fields(self) -> list[PerStream]:
        """G on the pattern, (B, K, P_rec): zero at the start and when a stream starts a new
        sequence (h_0 does not depend on θ); with the lazy scale, Ĝ there and σ (B, n_units),
        one at the start and at a reset."""
        fields = [PerStream("G", (self.n_rows, self.layout.n_rec))]
        if self.lazy:
            fields.append(PerStream("scale", (self.units.n_units,), fill=1.0))
        return fields

    def setup_workspace(self) -> None:
        """The buffers G is written into (one for K = 1, two otherwise: ``state.G`` is the one
        written last), their per-block views, a scratch of one (B, P_rec) and the views of the
        direction buffer."""
        xp, units = self.xp, self.units
        batch, K, p = (int(s) for s in self.state.G.shape)
        count = 1 if K == 1 else 2
        self._buffers = [xp.zeros((batch, K, p), dtype=self.dtype) for _ in range(count)]
        self._cur = 0
        self._adopt()
        self._views = [list(units.views(xp, buf)) for buf in self._buffers]
        self._scratch = xp.zeros((batch, p), dtype=self.dtype)
        self._scratch_views = list(units.views(xp, self._scratch))
        self._g_views = list(units.views(xp, self.direction_buffer()[:p]))
        self._numpy = is_numpy_array(self._scratch)
        self._lazy = self.lazy
        bound = 2.0 ** FOLD_RANGE.get(self.backend.dtype_name, 40)
        self._fold_range = (1.0 / bound, bound)
        if self.mode == "matmul":
            order = (0, 2, 3, 1, 4)  # (B, K, groups, units, width) -> (B, groups, units, K, w)
            self._perm = [[xp.permute_dims(v, order) for v in views] for views in self._views]
            # the gradient's (1 × K) products: into the direction for B = 1, else the scratch
            self._g_out = ([xp.reshape(v, (1, v.shape[0], v.shape[1], 1, v.shape[2]))
                            for v in self._g_views] if batch == 1 else
                           [xp.reshape(v, (batch, v.shape[1], v.shape[2], 1, v.shape[3]))
                            for v in self._scratch_views])
        if self.dense_j and not self.model.has(STATE_JACOBIAN):
            n = self.model.n_state
            eye = xp.eye(n, dtype=self.dtype)
            self._identity = xp.broadcast_to(eye[None, :, :], (batch, n, n))

    def _adopt(self) -> None:
        """Copy ``state.G`` (new after a reset or a load) into the current buffer, and make
        ``state.G`` that buffer."""
        buf = self._buffers[self._cur]
        if self.state.G is not buf:
            buf[...] = self.state.G
            self.state.G = buf

    def on_reset(self, mask: Array) -> None:
        self._adopt()

    # -- one step ----------------------------------------------------------------------------
    def step(self, record: StepRecord) -> Array:
        xp, model = self.xp, self.model
        theta, cache = record.theta, record.cache
        mode = self.mode
        if mode == "full":
            return self._full_step(record)
        jsub = self._jacobian(theta, cache)  # (B, n_units, K, K)
        batch, n_units, K = (int(s) for s in jsub.shape[:3])
        if self._lazy:  # σ ← Jsub σ; Ĝ ← Ĝ + F_t / σ
            return self._lazy_step(record, jsub)
        old = self._views[self._cur]
        if mode == "scale":  # G ← Jsub ⊙ G in place
            coef = xp.reshape(jsub, (batch, 1, 1, n_units, 1))
            for view in old:
                view *= coef
        else:
            new_index = 1 - self._cur
            new = self._views[new_index]
            if mode == "elementwise":
                for r in range(K):
                    for l_ in range(K):
                        coef = xp.reshape(jsub[:, :, r, l_], (batch, 1, n_units, 1))
                        for src, dst, tmp in zip(old, new, self._scratch_views, strict=True):
                            if l_ == 0:
                                self._mul_into(src[:, 0, ...], coef, dst[:, r, ...])
                            else:
                                self._mul_into(src[:, l_, ...], coef, tmp)
                                part = dst[:, r, ...]
                                part += tmp
            else:
                jx = jsub[:, None, ...]  # (B, 1, n_units, K, K): the same for every group
                for src, dst in zip(self._perm[self._cur], self._perm[new_index], strict=True):
                    matmul_into(xp, jx, src, dst)
            self._cur = new_index
            self.state.G = self._buffers[new_index]
        G = self.state.G
        model.param_jacobian_units_accumulate(theta, cache, G[:, :self.units.size, :])
        return self._direction_from(record, G)

    def _full_step(self, record: StepRecord) -> Array:
        """G_t = J_t G_{t−1} + F_t (one product per stream into the free buffer, F_t added where
        it is non-zero), g_t,rec = Σ_b δ_bᵀ G_t,b (one product over the B·n rows): RTRL."""
        xp, model = self.xp, self.model
        theta, cache = record.theta, record.cache
        new_index = 1 - self._cur
        G = self._buffers[new_index]
        matmul_into(xp, model.state_jacobian(theta, cache), self.state.G, G)
        model.param_jacobian_accumulate(theta, cache, G)
        self._cur, self.state.G = new_index, G
        batch, n, p = (int(s) for s in G.shape)
        buf = self.direction_buffer()
        matmul_into(xp, xp.reshape(record.delta, (1, batch * n)), xp.reshape(G, (batch * n, p)),
                    xp.reshape(buf[:p], (1, p)))
        buf[p:] = record.grad_out
        return buf

    def _lazy_step(self, record: StepRecord, jsub: Array) -> Array:
        """K = 1 with G = σ ⊙ Ĝ (module docstring)."""
        xp, state = self.xp, self.state
        batch, n_units = int(jsub.shape[0]), int(jsub.shape[1])
        scale = state.scale * xp.reshape(jsub, (batch, n_units))
        low, high = self._fold_range
        size = xp.abs(scale)
        fold = ~((size >= low) & (size <= high))  # out of range, 0 or NaN
        if bool(xp.any(fold)):  # Ĝ ← σ Ĝ for those units, their σ ← 1
            self._fold(fold, scale)
            scale = xp.where(fold, xp.ones_like(scale), scale)
        state.scale = scale
        inverse = 1.0 / scale  # the cotangent: 1/σ_u on unit u's coordinate
        if self._unit_of_coord is not None:
            inverse = xp.take(inverse, self._unit_of_coord, axis=1)
        G = state.G
        self.model.vjp_accumulate(record.theta, record.cache, inverse, G[:, 0, :], state=False)
        return self._direction_from(record, G, scale[:, :, None])

    def _fold(self, fold: Array, scale: Array) -> None:
        """Ĝ ← σ Ĝ on the units where ``fold`` (B, n_units) is set: those units' parameters
        only, stream by stream (usually a few units a step: σ leaves its range after tens to
        hundreds of steps); one pass over Ĝ when more than one unit in :data:`FULL_FOLD` folds
        (a unit whose J_t is 0 folds at every step: a sparse W_hh without its diagonal) and on
        array-api-strict (no integer-array assignment)."""
        xp = self.xp
        views = self._views[self._cur]
        count = int(xp.sum(xp.astype(fold, xp.int64)))
        if self.backend.name == "array_api_strict" or count * FULL_FOLD > int(fold.size):
            coef = xp.where(fold, scale, xp.ones_like(scale))
            coef = xp.reshape(coef, (int(scale.shape[0]), 1, 1, int(scale.shape[1]), 1))
            for view in views:
                view *= coef
            return
        for b in range(int(scale.shape[0])):
            units = xp.nonzero(fold[b, :])[0]
            if int(units.shape[0]) == 0:
                continue
            coef = xp.reshape(xp.take(scale[b, :], units), (1, -1, 1))
            for view in views:
                view[b, 0][:, units, :] *= coef

    def _jacobian(self, theta: Array, cache: Any) -> Array:
        """Jsub (B, n_units, K, K): J_t on each unit's rows (padding rows and columns 0)."""
        model, xp = self.model, self.xp
        if self.from_blocks:
            return model.state_jacobian_blocks(theta, cache)
        if model.has(STATE_JACOBIAN):
            J = model.state_jacobian(theta, cache)
        else:
            J = model.jvp_state(theta, cache, self._identity)
        batch, n = int(J.shape[0]), int(J.shape[1])
        n_units, K = self.rows.shape
        picked = xp.take(xp.reshape(J, (batch, n * n)), self._pair_index, axis=1)
        return xp.reshape(picked, (batch, n_units, K, K)) * self._pair_valid

    def _direction_from(self, record: StepRecord, G: Array, scale: Array = None) -> Array:
        """[Σ_b Σ_r δ_b[rows[u(j), r]] G_b[r, j], ∂ℓ/∂θ_out] into the direction buffer (G's
        rows times ``scale`` (B, n_units, K) when given: the lazy scale σ)."""
        xp = self.xp
        batch, K, p = (int(s) for s in G.shape)
        n_units = self.units.n_units
        delta = xp.take(record.delta, self._row_index, axis=1)  # (B, n_units · K): δ on the rows
        delta = xp.reshape(delta, (batch, n_units, K)) * self._row_valid
        if scale is not None:
            delta = delta * scale
        buf = self.direction_buffer()
        if self.mode == "matmul":
            d = xp.reshape(delta, (batch, 1, n_units, 1, K))
            for src, out in zip(self._perm[self._cur], self._g_out, strict=True):
                matmul_into(xp, d, src, out)
            if batch > 1:
                for g, tmp in zip(self._g_views, self._scratch_views, strict=True):
                    g[...] = tmp[0, ...]
                    for b in range(1, batch):
                        g += tmp[b, ...]
        else:
            views = self._views[self._cur]
            tmp_all = self._scratch_views
            for b in range(batch):
                for r in range(K):
                    coef = xp.reshape(delta[b, :, r], (1, n_units, 1))
                    for src, g, tmp in zip(views, self._g_views, tmp_all, strict=True):
                        if b == 0 and r == 0:
                            self._mul_into(src[0, 0, ...], coef, g)
                        else:
                            self._mul_into(src[b, r, ...], coef, tmp[0, ...])
                            g += tmp[0, ...]
        buf[p:] = record.grad_out
        return buf

    def _mul_into(self, a: Array, b: Array, out: Array) -> None:
        """out[...] = a * b (NumPy: written straight into ``out``)."""
        if self._numpy:
            np.multiply(a, b, out=out)
        else:
            out[...] = a * b
