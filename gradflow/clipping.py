"""Gradient-norm clipping of a flat direction g = [g_rec | g_out].

``clip_rec`` c_r rescales the recurrent part alone, ``clip`` c the whole direction (after the
recurrent part was clipped):

    g_rec ← g_rec · min(1, c_r / ‖g_rec‖),    g ← g · min(1, c / ‖g‖)

Clipping the recurrent part separately is the variance control that the rank-one estimators
(UORO, NoBackTrack) need (DESIGN §9): their recurrent estimates are noisy, their readout part is
exact. Everything stays on the device: the factors are 0-d arrays, nothing is read back.
"""

from __future__ import annotations

from typing import Any

Array = Any
_TINY = 1e-30


def norm(xp: Any, g: Array) -> Array:
    """Euclidean norm of a 1-D array as a 0-d array of the same backend."""
    return xp.sqrt(xp.sum(g * g))


def _factor(xp: Any, size: Array, limit: float) -> Array:
    return xp.minimum(xp.ones_like(size), limit / xp.maximum(size, xp.full_like(size, _TINY)))


def clip_direction(xp: Any, g: Array, n_rec: int, clip: float | None = None,
                   clip_rec: float | None = None) -> tuple[Array, Array]:
    """Return the clipped direction and the norm ‖g‖ of the direction as it came in.

    ``n_rec`` is the number of recurrent parameters (the first ``n_rec`` entries of g); ``None``
    or 0 switches a clip off.
    """
    raw = norm(xp, g)
    if clip_rec and n_rec > 0:
        g_rec = g[:n_rec]
        g = xp.concat([g_rec * _factor(xp, norm(xp, g_rec), clip_rec), g[n_rec:]])
    if clip:
        g = g * _factor(xp, raw if not clip_rec else norm(xp, g), clip)
    return g, raw
