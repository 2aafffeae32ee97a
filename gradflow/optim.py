"""Optimizers on the flat parameter vector θ (written once against the array API).

For a direction g_k (the k-th update, an estimate of ∇ℓ) and a learning rate η (from the
schedule), with s the per-coordinate scale (``lr_rec_scale`` on θ_rec, 1 on θ_out):

* ``sgd`` (momentum μ, default 0):  v_k = μ v_{k−1} + g_k,  θ ← θ − η s ⊙ v_k;
* ``adam`` (Kingma & Ba 2015):       m_k = β₁ m_{k−1} + (1 − β₁) g_k,
  v_k = β₂ v_{k−1} + (1 − β₂) g_k²,  θ ← θ − η s ⊙ m̂_k / (√v̂_k + ε),
  with m̂_k = m_k / (1 − β₁ᵏ), v̂_k = v_k / (1 − β₂ᵏ).

The state (moments and the update count k) is a flat dict of arrays and scalars, stored in
checkpoints.

Hot path: θ and the moments are updated in place (``θ -= ...``, ``m *= β₁``, ``m += ...``), so
one update allocates at most two arrays of size P (Adam) or one (SGD) instead of a new θ and new
moments every step; the arithmetic, and so every bit of the result, is that of the formulas
above. :meth:`Optimizer.state_dict` therefore returns copies.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any

Array = Any
OPTIMIZERS = ("sgd", "adam")


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
        step, owned = self._step(g)
        if self.scale is not None:
            step, owned = step * self.scale, True
        if owned:  # a temporary of ours: scale it in place
            step *= lr
            theta -= step
        else:
            theta -= lr * step
        return theta

    @abstractmethod
    def _step(self, g: Array) -> tuple[Array, bool]:
        """The update direction (before η and the scale) for the ``self.count``-th update, and
        whether it is a temporary that :meth:`update` may overwrite (False for ``g`` itself or
        for the optimizer's state)."""

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

    def _step(self, g: Array) -> tuple[Array, bool]:
        if not self.momentum:
            return g, False
        self.velocity *= self.momentum
        self.velocity += g
        return self.velocity, False

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

    def _step(self, g: Array) -> tuple[Array, bool]:
        b1, b2, k = self.beta1, self.beta2, self.count
        m, v = self.m, self.v
        m *= b1
        m += (1.0 - b1) * g
        v *= b2
        g2 = g * g
        g2 *= 1.0 - b2
        v += g2
        del g2
        c1 = 1.0 - b1 ** k
        c2 = math.sqrt(1.0 - b2 ** k)
        denom = self.xp.sqrt(v)
        denom /= c2
        denom += self.eps
        step = m / c1
        step /= denom
        return step, True

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
