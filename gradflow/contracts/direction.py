"""A direction for θ given by its factors: g = [cᵀ R, g_out], never formed.

Many estimators' recurrent gradient is a combination of a few long rows they keep anyway: the
rank-one family's Σ_b (δ_t,b · ṽ_b) w̃_b (the rows are w̃, one per stream), a readout-only step's 0
(no rows). Returning it as an array costs a pass that writes P numbers and, later, one that reads
them back: at n = 1024 (P ≈ 10⁶) two of the eight passes over P numbers a UORO step makes. An
estimator may instead return a :class:`FactoredDirection` — the coefficients c (r,), the rows R
(r, P_rec) and the readout part g_out (P_out,) — and its consumers work with the factors:

* the norm ‖cᵀR‖ for clipping comes from the estimator when it knows it (``rec_sqnorm``: for one
  row, c² ‖R_0‖², where ‖R_0‖² is a by-product of the step), else from one pass over R;
* clipping scales c and g_out (:meth:`FactoredDirection.scaled`), not P numbers;
* the optimizer forms each block of g from the rows while it updates that block of θ, in the
  cache (:meth:`FactoredDirection.block`).

The rows are the estimator's own state: a consumer reads them and never writes them, and a
factored direction is valid until the estimator's next ``step``, ``reset`` or ``flush`` (the
trainer uses it at once). Every other consumer — :func:`gradflow.online_step` without
``materialize=False``, hence the checks, the frozen trajectories and user code — receives the
array :meth:`FactoredDirection.materialize` forms, with the same numbers as an estimator that
returned an array (the same products, block by block).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gradflow.contracts.blocking import TEMPORARY_BLOCK, block_size, blocks

Array = Any


@dataclass(frozen=True)
class FactoredDirection:
    """g = [cᵀ R, g_out] (see the module docstring).

    Attributes
    ----------
    coef: c, shape (r,) (r = 0: the recurrent part is zero).
    rows: R, shape (r, P_rec): the estimator's arrays, read-only for the consumer.
    out: g_out, shape (P_out,).
    rec_sqnorm: ‖cᵀR‖² as a 0-d array when the estimator knows it, else ``None``.

    With leading axes (R replicated runs advanced together) every array has them in front:
    coef (R, r), rows (R, r, P_rec), out (R, P_out), rec_sqnorm (R,) — one direction per replica.
    """

    coef: Array
    rows: Array
    out: Array
    rec_sqnorm: Array | None = None

    @property
    def n_rec(self) -> int:
        return int(self.rows.shape[-1])

    @property
    def size(self) -> int:
        return self.n_rec + int(self.out.shape[-1])

    @property
    def zero_rec(self) -> bool:
        """Whether the recurrent part is zero (no rows)."""
        return int(self.coef.shape[-1]) == 0

    def rec_block(self, xp: Any, i: int, j: int, factor: Any = None) -> Array:
        """(cᵀR)[..., i:j] — times ``factor`` (a number, or one per replica (R, 1)) when given —
        as a new array (0 ≤ i ≤ j ≤ P_rec)."""
        r = int(self.coef.shape[-1])
        if r == 0:
            return xp.zeros((*self.out.shape[:-1], j - i), dtype=self.out.dtype)
        if r == 1:
            c = self.coef[..., 0:1]
            return self.rows[..., 0, i:j] * (c if factor is None else c * factor)
        c = self.coef if factor is None else self.coef * factor
        return (c[..., None, :] @ self.rows[..., :, i:j])[..., 0, :]

    def block(self, xp: Any, i: int, j: int) -> Array:
        """g[..., i:j] as a new array (or a view of the readout part), for a block that lies in
        θ_rec or in θ_out (not across)."""
        n_rec = self.n_rec
        if j <= n_rec:
            return self.rec_block(xp, i, j)
        if i >= n_rec:
            return self.out[..., i - n_rec:j - n_rec]
        raise ValueError(f"a block of a factored direction lies in θ_rec or in θ_out, not "
                         f"across them: [{i}, {j}) with P_rec = {n_rec}")

    def _step(self, xp: Any) -> int:
        """Numbers per block of the rows' passes: a cache block, a temporary block in all."""
        return max(1, min(block_size(xp), TEMPORARY_BLOCK // max(1, int(self.coef.shape[-1]))))

    def sqnorms(self, xp: Any) -> tuple[Array, Array]:
        """(‖g_rec‖², ‖g_out‖²) (0-d arrays, or (R,)): ``rec_sqnorm`` when given, else one pass
        over the rows, block by block."""
        out_sq = xp.vecdot(self.out, self.out)
        if self.rec_sqnorm is not None:
            return self.rec_sqnorm, out_sq
        rec_sq = xp.zeros(tuple(out_sq.shape), dtype=self.out.dtype)
        if not self.zero_rec:
            for i, j in blocks(self.n_rec, self._step(xp)):
                part = self.rec_block(xp, i, j)
                rec_sq = rec_sq + xp.vecdot(part, part)
        return rec_sq, out_sq

    def scaled(self, rec_factor: Array | None, factor: Array | None) -> FactoredDirection:
        """The direction [f f_r · cᵀR, f · g_out] (a factor ``None`` is 1; one per replica with
        leading axes): new coefficients and readout part; the rows are shared."""
        coef, out, rec_sq = self.coef, self.out, self.rec_sqnorm
        for f in (rec_factor, factor):
            if f is not None:
                coef = coef * f[..., None]
                if rec_sq is not None:
                    rec_sq = rec_sq * (f * f)
        if factor is not None:
            out = out * factor[..., None]
        return FactoredDirection(coef, self.rows, out, rec_sq)

    def materialize(self, xp: Any, out: Array | None = None) -> Array:
        """g as an array of P numbers (with the leading axes; into ``out`` when given, else a
        new array)."""
        n_rec = self.n_rec
        if out is None:
            out = xp.empty((*self.out.shape[:-1], self.size), dtype=self.out.dtype)
        for i, j in blocks(n_rec, self._step(xp)):
            out[..., i:j] = self.rec_block(xp, i, j)
        out[..., n_rec:] = self.out
        return out
