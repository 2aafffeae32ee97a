"""Optimizers on the flat parameter vector θ (written once against the array API).

For a direction g_k (the k-th update, an estimate of ∇ℓ) and a learning rate η (from the
schedule), with s the per-coordinate scale (``lr_rec_scale`` on θ_rec, 1 on θ_out):

* ``sgd`` (momentum μ, default 0):  v_k = μ v_{k−1} + g_k,  θ ← θ − η s ⊙ v_k;
* ``adam`` (Kingma & Ba 2015):       m_k = β₁ m_{k−1} + (1 − β₁) g_k,
  v_k = β₂ v_{k−1} + (1 − β₂) g_k²,  θ ← θ − η s ⊙ m̂_k / (√v̂_k + ε),
  with m̂_k = m_k / (1 − β₁ᵏ), v̂_k = v_k / (1 − β₂ᵏ).

The state (moments and the update count k) is a flat dict of arrays and scalars, stored in
checkpoints.

Hot path: θ and the moments are updated in place, block by block
(:mod:`gradflow.contracts.blocking`): for each block of 2¹⁵ numbers the optimizer computes its step
(``m *= β₁``, ``m += ...``) and ``θ -= η s ⊙ step`` while the block is in the cache, so one update
allocates only block-sized temporaries and reads and writes each array once. The arithmetic on every
element, and so every bit of the result, is that of the formulas above. :meth:`Optimizer.state_dict`
therefore returns copies.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any

from gradflow.contracts.blocking import block_size, blocks
from gradflow.contracts.direction import FactoredDirection
from gradflow.contracts.inplace import add_scaled
from gradflow.runfiles.config import OPTIMIZERS

Array = Any


class Optimizer(ABC):
    """Base class: ``update(θ, g, η) -> θ'``; ``state_dict``/``load_state_dict``."""

    name: str

    def __init__(self, xp: Any, size: int, dtype: Any, n_rec: int = 0,
                 lr_rec_scale: float = 1.0, replicas: int | None = None) -> None:
        self.xp, self.size, self.dtype = xp, int(size), dtype
        #: the shape of the moment arrays: (P,), or (R, P) for R replicated runs
        self.shape = (self.size,) if replicas is None else (int(replicas), self.size)
        self.count = 0
        self.scale: Array | None = None
        if lr_rec_scale != 1.0:
            self.scale = xp.concat([xp.full((n_rec,), lr_rec_scale, dtype=dtype),
                                    xp.ones((self.size - n_rec,), dtype=dtype)])

    #: whether a zero direction leaves θ and the state exactly as they are (plain SGD), so that
    #: the zero recurrent part of a factored direction (readout-only) need not be streamed
    zero_is_no_op = False

    def update(self, theta: Array, g: Array | FactoredDirection, lr: float | Array) -> Array:
        """One step along the direction ``g`` with learning rate ``lr``: θ is updated in place
        and returned (``g`` is left as it is). A factored direction is formed block by block,
        each block while that block of θ is updated (:mod:`gradflow.contracts.direction`).

        For R replicated runs θ and g are (R, P) and ``lr`` an array (R,) of their rates (or one
        number for all)."""
        self.count += 1
        self._begin()
        if not isinstance(lr, int | float):
            lr = lr[..., None]
        if isinstance(g, FactoredDirection):
            return self._update_factored(theta, g, lr)
        size = theta.shape[-1]
        if size <= block_size(self.xp):  # one block: the whole arrays, no slices
            step = self._step(g, 0, size)
            if self.scale is not None:
                step = step * self.scale
            theta -= lr * step
            return theta
        for i, j in blocks(size, block_size(self.xp)):
            self._apply(theta, self._step(g[..., i:j], i, j), lr, i, j)
        return theta

    def _update_factored(self, theta: Array, g: FactoredDirection, lr: Any) -> Array:
        """The update with g formed block by block from its factors. Plain SGD (θ ← θ − η g)
        folds η into the coefficients: each block of θ_rec is one product and one subtraction
        (for one row of more than a block, one in-place axpy: :func:`gradflow.add_scaled`), and
        a zero recurrent part is not streamed at all."""
        xp, n_rec, size = self.xp, g.n_rec, theta.shape[-1]
        plain = self.zero_is_no_op and self.scale is None
        rec = () if g.zero_rec and self.zero_is_no_op else blocks(n_rec, block_size(xp))
        out = ((n_rec + i, n_rec + j) for i, j in blocks(size - n_rec, block_size(xp)))
        if plain and rec and theta.ndim == 1 and int(g.coef.shape[-1]) == 1 \
                and n_rec > block_size(xp):  # one stream, large: θ_rec −= (η c) R_0, one axpy
            add_scaled(xp, theta[:n_rec], -lr * g.coef[0], g.rows[0, :])
            rec = ()
        for i, j in rec:
            if plain:
                part = theta[..., i:j]  # a view: ``theta[...] -= x`` would copy it back too
                part -= g.rec_block(xp, i, j, lr)
            else:
                self._apply(theta, self._step(g.rec_block(xp, i, j), i, j), lr, i, j)
        for i, j in out:
            self._apply(theta, self._step(g.block(xp, i, j), i, j), lr, i, j)
        return theta

    def _apply(self, theta: Array, step: Array, lr: Any, i: int, j: int) -> None:
        """θ[..., i:j] ← θ[..., i:j] − η s ⊙ step."""
        if self.scale is not None:
            step = step * self.scale[i:j]
        part = theta[..., i:j]  # a view: ``theta[...] -= x`` would copy it back too
        part -= lr * step

    def _part(self, array: Array, i: int, j: int) -> Array:
        """``array[..., i:j]``, or ``array`` itself when [i, j) is all of it."""
        return array if i == 0 and j == self.size else array[..., i:j]

    def _begin(self) -> None:  # noqa: B027 - an optional hook: most optimizers need none
        """Called once per update, after ``count`` is incremented, before the blocks."""

    @abstractmethod
    def _step(self, g: Array, i: int, j: int) -> Array:
        """The update direction (before η and the scale) of the ``self.count``-th update on the
        block ``[i, j)`` of θ, given that block ``g`` of the direction; the optimizer's state on
        the block is updated in place. The result may be ``g`` itself or a view of the state:
        :meth:`update` does not modify it."""

    def state_arrays(self) -> dict[str, Array]:
        return {}

    def state_dict(self, replica: int | None = None) -> dict[str, Any]:
        """``count`` and copies of the moment arrays (a snapshot: they are updated in place);
        of replica ``replica`` only — the state of that run made alone — when given."""
        arrays = self.state_arrays()
        if replica is not None:
            arrays = {k: v[replica, ...] for k, v in arrays.items()}
        copies = {k: self.xp.asarray(v, copy=True) for k, v in arrays.items()}
        return {"count": self.count, **copies}

    def load_state_dict(self, state: dict[str, Any], asarray: Any,
                        replica: int | None = None) -> None:
        """Restore a :meth:`state_dict` (into replica ``replica``'s rows when given)."""
        self.count = int(state["count"])
        for key, current in self.state_arrays().items():
            if replica is None:
                setattr(self, key, self.xp.asarray(asarray(state[key]), copy=True))
            else:
                current[replica, ...] = asarray(state[key])


class SGD(Optimizer):
    name = "sgd"

    def __init__(self, xp: Any, size: int, dtype: Any, n_rec: int = 0,
                 lr_rec_scale: float = 1.0, momentum: float = 0.0,
                 replicas: int | None = None) -> None:
        super().__init__(xp, size, dtype, n_rec, lr_rec_scale, replicas)
        self.momentum = float(momentum)
        self.velocity = xp.zeros(self.shape, dtype=dtype) if self.momentum else None
        self.zero_is_no_op = not self.momentum

    def _step(self, g: Array, i: int, j: int) -> Array:
        if not self.momentum:
            return g
        velocity = self._part(self.velocity, i, j)
        velocity *= self.momentum
        velocity += g
        return velocity

    def state_arrays(self) -> dict[str, Array]:
        return {"velocity": self.velocity} if self.momentum else {}


class Adam(Optimizer):
    name = "adam"

    def __init__(self, xp: Any, size: int, dtype: Any, n_rec: int = 0,
                 lr_rec_scale: float = 1.0, beta1: float = 0.9, beta2: float = 0.999,
                 eps: float = 1e-8, replicas: int | None = None) -> None:
        super().__init__(xp, size, dtype, n_rec, lr_rec_scale, replicas)
        self.beta1, self.beta2, self.eps = float(beta1), float(beta2), float(eps)
        self.m = xp.zeros(self.shape, dtype=dtype)
        self.v = xp.zeros(self.shape, dtype=dtype)

    def _begin(self) -> None:
        k = self.count
        self._c1 = 1.0 - self.beta1 ** k
        self._c2 = math.sqrt(1.0 - self.beta2 ** k)

    def _step(self, g: Array, i: int, j: int) -> Array:
        b1, b2 = self.beta1, self.beta2
        m, v = self._part(self.m, i, j), self._part(self.v, i, j)
        m *= b1
        m += (1.0 - b1) * g
        v *= b2
        g2 = g * g
        g2 *= 1.0 - b2
        v += g2
        denom = self.xp.sqrt(v)
        denom /= self._c2
        denom += self.eps
        step = m / self._c1
        step /= denom
        return step

    def state_arrays(self) -> dict[str, Array]:
        return {"m": self.m, "v": self.v}


def create_optimizer(name: str, xp: Any, size: int, dtype: Any, n_rec: int = 0,
                     lr_rec_scale: float = 1.0, replicas: int | None = None,
                     **options: Any) -> Optimizer:
    """``sgd`` (option ``momentum``) or ``adam`` (options ``beta1``, ``beta2``, ``eps``); for
    ``replicas`` = R runs advanced together, with moments of shape (R, P)."""
    if name == "sgd":
        return SGD(xp, size, dtype, n_rec, lr_rec_scale, momentum=options.get("momentum", 0.0),
                   replicas=replicas)
    if name == "adam":
        return Adam(xp, size, dtype, n_rec, lr_rec_scale, replicas=replicas,
                    **{k: options[k] for k in ("beta1", "beta2", "eps") if k in options})
    raise ValueError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")
