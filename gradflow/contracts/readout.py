"""The affine readout shared by most models: ŷ = W_hy h + b_y.

A building block for model plugins (public API): the readout sees the first ``n_visible``
coordinates of the state (an LSTM's h, not its c). Parameter names ``W_hy`` (k, n) and ``b_y`` (k).
"""

from __future__ import annotations

from typing import Any

from gradflow.contracts.layout import ParamLayout
from gradflow.contracts.model import Model

Array = Any


class AffineReadout:
    """ŷ = h_vis W_hyᵀ + b_y with h_vis = h[:, :n_visible].

    VJP: for a cotangent u (B, k), ∂/∂h_vis = u W_hy, ∂/∂W_hy = Σ_b u_b h_bᵀ, ∂/∂b_y = Σ_b u_b.

    With a replicated θ (R, P) — R runs advanced together — the arrays carry a leading replica
    axis, (R, B, ...), and the parameter gradient is summed over each replica's streams, (R, P_out).
    """

    params: tuple[str, str] = ("W_hy", "b_y")

    def __init__(self, xp: Any, n_visible: int, n_state: int, n_out: int) -> None:
        self.xp = xp
        self.n_visible = n_visible
        self.n_state = n_state
        self.n_out = n_out

    def shapes(self) -> list[tuple[str, tuple[int, ...]]]:
        return [("W_hy", (self.n_out, self.n_visible)), ("b_y", (self.n_out,))]

    def _visible(self, h: Array) -> Array:
        return h if self.n_visible == self.n_state else h[..., : self.n_visible]

    def apply(self, layout: ParamLayout, theta: Array, h: Array) -> Array:
        w = layout.view(theta, "W_hy")
        b = layout.view(theta, "b_y")
        return self._visible(h) @ w.mT + b[..., None, :]

    def vjp(self, layout: ParamLayout, theta: Array, h: Array, u: Array) -> tuple[Array, Array]:
        xp = self.xp
        w = layout.view(theta, "W_hy")
        hv = self._visible(h)
        gh = u @ w
        if self.n_visible != self.n_state:
            pad = xp.zeros((*h.shape[:-1], self.n_state - self.n_visible), dtype=h.dtype)
            gh = xp.concat([gh, pad], axis=-1)
        gw = u.mT @ hv  # Σ_b u_b h_bᵀ, (k, n) (per replica with leading axes)
        gb = xp.sum(u, axis=-2)
        return gh, xp.concat([xp.reshape(gw, (*gw.shape[:-2], -1)), gb], axis=-1)

    def init(self, rng: Any, dtype: Any) -> list[Array]:
        """W_hy ~ U(±1/√n_visible), b_y = 0."""
        bound = 1.0 / self.n_visible ** 0.5
        w = rng.uniform((self.n_out * self.n_visible,), dtype, -bound, bound)
        return [w, self.xp.zeros((self.n_out,), dtype=dtype)]


class AffineReadoutModel(Model):
    """Base for models whose readout is :class:`AffineReadout`: it lays out θ as the recurrent
    parameters followed by ``W_hy`` and ``b_y`` and provides ``readout`` and ``readout_vjp``.

    A subclass calls :meth:`lay_out` in its ``__init__``, implements the recurrent core, and
    ends ``init_params`` with :meth:`init_readout`.
    """

    #: the readout (set by :meth:`lay_out`)
    affine_readout: AffineReadout

    def lay_out(self, recurrent: list[tuple[str, tuple[int, ...]]], n_visible: int,
                n_state: int, n_out: int) -> None:
        """Set ``n_state``, the readout on the first ``n_visible`` state coordinates, and
        ``layout`` = [recurrent | W_hy, b_y]."""
        self.n_state = n_state
        self.affine_readout = AffineReadout(self.xp, n_visible, n_state, n_out)
        self.layout = ParamLayout(recurrent, self.affine_readout.shapes())

    def init_readout(self, rng: Any) -> list[Array]:
        """The readout's part of a fresh θ: [W_hy, b_y] flattened (:meth:`AffineReadout.init`)."""
        return self.affine_readout.init(rng, self.dtype)

    def readout(self, theta: Array, h: Array) -> Array:
        return self.affine_readout.apply(self.layout, theta, h)

    def readout_vjp(self, theta: Array, h: Array, u: Array) -> tuple[Array, Array]:
        return self.affine_readout.vjp(self.layout, theta, h, u)


def sigmoid(xp: Any, a: Array) -> Array:
    """σ(a) = 1 / (1 + e^{−a}), elementwise (the gates of GRU and LSTM cells)."""
    return 1.0 / (1.0 + xp.exp(-a))
