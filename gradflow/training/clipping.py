"""Gradient-norm clipping of a flat direction g = [g_rec | g_out].

``clip_rec`` c_r rescales the recurrent part alone, ``clip`` c the whole direction (after the
recurrent part was clipped):

    g_rec ← g_rec · min(1, c_r / ‖g_rec‖),    g ← g · min(1, c / ‖g‖)

Clipping the recurrent part separately is the variance control that the rank-one estimators (UORO,
NoBackTrack) need (docs/architecture.md §9): their recurrent estimates are noisy, their readout part
is exact. Everything stays on the device: the factors are 0-d arrays, nothing is read back, and the
direction is scaled in place (``g[:n_rec] *= f``: no array of size P is allocated). Norms are dot
products (``vecdot``: one pass, no temporary g ⊙ g).
"""

from __future__ import annotations

from typing import Any

from gradflow.contracts.direction import FactoredDirection

Array = Any
_TINY = 1e-30


def norm(xp: Any, g: Array) -> Array:
    """Euclidean norm of a 1-D array as a 0-d array of the same backend."""
    return xp.sqrt(xp.vecdot(g, g))


#: the constant 0-d arrays of _factor, by (namespace, dtype): made once, not every step
_CONSTANTS: dict[tuple[Any, Any], tuple[Array, Array]] = {}


def _factor(xp: Any, size: Array, limit: float) -> Array:
    """min(1, limit / max(size, 10⁻³⁰)) on the device (the shape of ``size``)."""
    key = (xp, size.dtype)
    constants = _CONSTANTS.get(key)
    if constants is None:
        constants = _CONSTANTS.setdefault(key, (xp.asarray(1.0, dtype=size.dtype),
                                                xp.asarray(_TINY, dtype=size.dtype)))
    one, tiny = constants
    return xp.minimum(one, limit / xp.maximum(size, tiny))


def clip_direction(xp: Any, g: Array | FactoredDirection, n_rec: int, clip: float | None = None,
                   clip_rec: float | None = None) -> tuple[Array | FactoredDirection, Array]:
    """Clip ``g``; return it and the norm ‖g‖ of the direction as it came in.

    With leading axes (the directions of R replicated runs, (R, P)), each direction is clipped
    on its own and the norms have shape (R,).

    ``n_rec`` is the number of recurrent parameters (the first ``n_rec`` entries of g); ``None``
    or 0 switches a clip off. An array is scaled in place (it must be writable and owned by the
    caller, see :meth:`gradflow.Estimator.step`; it is not written when no clip applies). A
    :class:`~gradflow.FactoredDirection` is returned with its coefficients and readout part
    scaled (its rows are the estimator's; nothing of size P is written), its norms taken from
    the estimator when it gave them. ‖g‖² is ‖g_rec‖² + ‖g_out‖², so each part is read once for
    all the norms: ‖g‖ after clipping the recurrent part by f is sqrt(f²‖g_rec‖² + ‖g_out‖²).
    """
    if isinstance(g, FactoredDirection):
        rec_sq, out_sq = g.sqnorms(xp)
        has_rec = not g.zero_rec
    else:
        g_rec, g_out = g[..., :n_rec], g[..., n_rec:]
        rec_sq = xp.vecdot(g_rec, g_rec) if n_rec > 0 else None
        out_sq = xp.vecdot(g_out, g_out)
        has_rec = rec_sq is not None
    raw = xp.sqrt(out_sq if rec_sq is None else rec_sq + out_sq)
    size, rec_factor, factor = raw, None, None
    if clip_rec and has_rec:
        rec_factor = _factor(xp, xp.sqrt(rec_sq), clip_rec)
        if clip:
            size = xp.sqrt(rec_sq * (rec_factor * rec_factor) + out_sq)
    if clip:
        factor = _factor(xp, size, clip)
    if isinstance(g, FactoredDirection):
        return (g if rec_factor is None and factor is None
                else g.scaled(rec_factor, factor)), raw
    if rec_factor is not None:
        g_rec *= rec_factor[..., None]
    if factor is not None:
        g *= factor[..., None]
    return g, raw
