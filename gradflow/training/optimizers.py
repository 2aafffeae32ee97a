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
from gradflow.runfiles.config import OPTIMIZERS

Array = Any


class Optimizer(ABC):
    """Base class: ``update(θ, g, η) -> θ'``; ``state_dict``/``load_state_dict``."""

    name: str

    def __init__(self, xp: Any, size: int, dtype: Any, n_rec: int = 0,
                 lr_rec_scale: float = 1.0) -> None:
        self.xp, self.size, self.dtype = xp, int(size), dtype
        self.count = 0
        self.scale: Array | None = None
        if lr_rec_scale != 1.0:
            self.scale = xp.concat([xp.full((n_rec,), lr_rec_scale, dtype=dtype),
                                    xp.ones((self.size - n_rec,), dtype=dtype)])

    def update(self, theta: Array, g: Array, lr: float) -> Array:
        """One step along the direction ``g`` with learning rate ``lr``: θ is updated in place
        and returned (``g`` is left as it is)."""
        self.count += 1
        self._begin()
        for i, j in blocks(theta.shape[0], block_size(self.xp)):
            step = self._step(g[i:j], i, j)
            if self.scale is not None:
                step = step * self.scale[i:j]
            theta[i:j] -= lr * step
        return theta

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

    def state_dict(self) -> dict[str, Any]:
        """``count`` and copies of the moment arrays (a snapshot: they are updated in place)."""
        copies = {k: self.xp.asarray(v, copy=True) for k, v in self.state_arrays().items()}
        return {"count": self.count, **copies}

    def load_state_dict(self, state: dict[str, Any], asarray: Any) -> None:
        self.count = int(state["count"])
        for key in self.state_arrays():
            setattr(self, key, self.xp.asarray(asarray(state[key]), copy=True))


class SGD(Optimizer):
    name = "sgd"

    def __init__(self, xp: Any, size: int, dtype: Any, n_rec: int = 0,
                 lr_rec_scale: float = 1.0, momentum: float = 0.0) -> None:
        super().__init__(xp, size, dtype, n_rec, lr_rec_scale)
        self.momentum = float(momentum)
        self.velocity = xp.zeros((self.size,), dtype=dtype) if self.momentum else None

    def _step(self, g: Array, i: int, j: int) -> Array:
        if not self.momentum:
            return g
        velocity = self.velocity[i:j]
        velocity *= self.momentum
        velocity += g
        return velocity

    def state_arrays(self) -> dict[str, Array]:
        return {"velocity": self.velocity} if self.momentum else {}


class Adam(Optimizer):
    name = "adam"

    def __init__(self, xp: Any, size: int, dtype: Any, n_rec: int = 0,
                 lr_rec_scale: float = 1.0, beta1: float = 0.9, beta2: float = 0.999,
                 eps: float = 1e-8) -> None:
        super().__init__(xp, size, dtype, n_rec, lr_rec_scale)
        self.beta1, self.beta2, self.eps = float(beta1), float(beta2), float(eps)
        self.m = xp.zeros((self.size,), dtype=dtype)
        self.v = xp.zeros((self.size,), dtype=dtype)

    def _begin(self) -> None:
        k = self.count
        self._c1 = 1.0 - self.beta1 ** k
        self._c2 = math.sqrt(1.0 - self.beta2 ** k)

    def _step(self, g: Array, i: int, j: int) -> Array:
        b1, b2 = self.beta1, self.beta2
        m, v = self.m[i:j], self.v[i:j]
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
                     lr_rec_scale: float = 1.0, **options: Any) -> Optimizer:
    """``sgd`` (option ``momentum``) or ``adam`` (options ``beta1``, ``beta2``, ``eps``)."""
    if name == "sgd":
        return SGD(xp, size, dtype, n_rec, lr_rec_scale, momentum=options.get("momentum", 0.0))
    if name == "adam":
        return Adam(xp, size, dtype, n_rec, lr_rec_scale,
                    **{k: options[k] for k in ("beta1", "beta2", "eps") if k in options})
    raise ValueError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")
