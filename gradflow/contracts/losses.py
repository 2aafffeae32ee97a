"""Losses, chosen by the task. Each returns the mean over the B streams and its gradient in ŷ.

* ``ce``: softmax cross-entropy in nats, ℓ_b = −Σ_k y_bk log softmax(ŷ_b)_k, with y_b either an
  integer class label (one-hot) or a probability vector; ∂ℓ/∂ŷ_b = (softmax(ŷ_b) − y_b) / B.
  Bits per step = loss / ln 2.
* ``mse``: ℓ_b = ½ Σ_k (ŷ_bk − y_bk)²; ∂ℓ/∂ŷ_b = (ŷ_b − y_b) / B.

The loss value stays an array of the backend (0-d) so that nothing is copied to the host unless it
is logged.
"""

from __future__ import annotations

import math
from typing import Any, Protocol

from gradflow.contracts.backend import namespace_of
from gradflow.contracts.errors import GradflowError, ShapeError

Array = Any
LN2 = math.log(2.0)


class Loss(Protocol):
    name: str

    def __call__(self, yhat: Array, target: Array) -> tuple[Array, Array]:
        """(mean loss over streams as a 0-d array, ∂loss/∂ŷ of shape (B, k))."""
        ...

    def per_stream(self, yhat: Array, target: Array) -> Array:
        """The loss of each stream, shape (B,)."""
        ...


class CrossEntropy:
    name = "ce"

    def _probs_target(self, xp: Any, yhat: Array, target: Array) -> Array:
        if target.ndim == 1:
            if xp.isdtype(target.dtype, "real floating"):
                raise ShapeError("ce: 1-D targets must be integer class labels")
            classes = xp.arange(yhat.shape[1], dtype=target.dtype)
            return xp.astype(target[:, None] == classes[None, :], yhat.dtype)
        if tuple(target.shape) != tuple(yhat.shape):
            raise ShapeError(f"ce: targets of shape {tuple(target.shape)} do not match "
                             f"outputs of shape {tuple(yhat.shape)}")
        return target

    def _log_softmax(self, xp: Any, yhat: Array) -> tuple[Array, Array]:
        """(log softmax(ŷ), softmax(ŷ)) per stream, from ŷ shifted by its maximum."""
        z = yhat - xp.max(yhat, axis=1, keepdims=True)
        e = xp.exp(z)
        total = xp.sum(e, axis=1, keepdims=True)
        z -= xp.log(total)
        e /= total
        return z, e

    def per_stream(self, yhat: Array, target: Array) -> Array:
        xp = namespace_of(yhat)
        y = self._probs_target(xp, yhat, target)
        return -xp.vecdot(y, self._log_softmax(xp, yhat)[0])

    def __call__(self, yhat: Array, target: Array) -> tuple[Array, Array]:
        xp = namespace_of(yhat)
        y = self._probs_target(xp, yhat, target)
        logp, p = self._log_softmax(xp, yhat)
        batch = yhat.shape[0]
        loss = -xp.sum(xp.vecdot(y, logp)) / batch
        p *= xp.sum(y, axis=1, keepdims=True)  # softmax · Σ_k y_k (1 for a distribution)
        p -= y
        if batch != 1:
            p /= batch
        return loss, p


class MeanSquaredError:
    name = "mse"

    def per_stream(self, yhat: Array, target: Array) -> Array:
        xp = namespace_of(yhat)
        diff = yhat - self._target(yhat, target)
        return 0.5 * xp.sum(diff * diff, axis=1)

    def _target(self, yhat: Array, target: Array) -> Array:
        if target.ndim == 1 and yhat.shape[1] == 1:
            target = namespace_of(yhat).reshape(target, (-1, 1))
        if tuple(target.shape) != tuple(yhat.shape):
            raise ShapeError(f"mse: targets of shape {tuple(target.shape)} do not match "
                             f"outputs of shape {tuple(yhat.shape)}")
        return target

    def __call__(self, yhat: Array, target: Array) -> tuple[Array, Array]:
        xp = namespace_of(yhat)
        diff = yhat - self._target(yhat, target)
        batch = yhat.shape[0]
        loss = 0.5 * xp.sum(diff * diff) / batch
        if batch != 1:
            diff /= batch
        return loss, diff


LOSSES: dict[str, Loss] = {"ce": CrossEntropy(), "mse": MeanSquaredError()}


def get_loss(name: str | Loss) -> Loss:
    """The loss called ``name`` (``"ce"`` or ``"mse"``), or ``name`` itself if it is a loss."""
    if not isinstance(name, str):
        return name
    try:
        return LOSSES[name]
    except KeyError:
        raise GradflowError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}") from None
