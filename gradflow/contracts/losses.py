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
    """A loss of outputs ŷ (B, k) against targets; with leading axes (a replicated run: ŷ of
    shape (R, B, k)) the mean is over each replica's B streams."""

    name: str

    def __call__(self, yhat: Array, target: Array) -> tuple[Array, Array]:
        """(mean loss over the streams: a 0-d array, or (R,) with replicas; ∂loss/∂ŷ, the shape
        of ŷ)."""
        ...

    def per_stream(self, yhat: Array, target: Array) -> Array:
        """The loss of each stream, shape (B,) ((R, B) with replicas)."""
        ...


class CrossEntropy:
    name = "ce"

    def _probs_target(self, xp: Any, yhat: Array, target: Array) -> Array:
        if target.ndim == yhat.ndim - 1:
            if xp.isdtype(target.dtype, "real floating"):
                raise ShapeError("ce: targets with one number per stream must be integer class "
                                 "labels")
            classes = xp.arange(yhat.shape[-1], dtype=target.dtype)
            return xp.astype(target[..., None] == classes, yhat.dtype)
        if tuple(target.shape) != tuple(yhat.shape):
            raise ShapeError(f"ce: targets of shape {tuple(target.shape)} do not match "
                             f"outputs of shape {tuple(yhat.shape)}")
        return target

    def _log_softmax(self, xp: Any, yhat: Array) -> tuple[Array, Array]:
        """(log softmax(ŷ), softmax(ŷ)) per stream, from ŷ shifted by its maximum."""
        z = yhat - xp.max(yhat, axis=-1, keepdims=True)
        e = xp.exp(z)
        total = xp.sum(e, axis=-1, keepdims=True)
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
        batch = yhat.shape[-2]
        loss = -xp.sum(xp.vecdot(y, logp), axis=-1) / batch
        p *= xp.sum(y, axis=-1, keepdims=True)  # softmax · Σ_k y_k (1 for a distribution)
        p -= y
        if batch != 1:
            p /= batch
        return loss, p


class MeanSquaredError:
    name = "mse"

    def per_stream(self, yhat: Array, target: Array) -> Array:
        xp = namespace_of(yhat)
        diff = yhat - self._target(yhat, target)
        return 0.5 * xp.sum(diff * diff, axis=-1)

    def _target(self, yhat: Array, target: Array) -> Array:
        if target.ndim == yhat.ndim - 1 and yhat.shape[-1] == 1:
            target = target[..., None]
        if tuple(target.shape) != tuple(yhat.shape):
            raise ShapeError(f"mse: targets of shape {tuple(target.shape)} do not match "
                             f"outputs of shape {tuple(yhat.shape)}")
        return target

    def __call__(self, yhat: Array, target: Array) -> tuple[Array, Array]:
        xp = namespace_of(yhat)
        diff = yhat - self._target(yhat, target)
        batch = yhat.shape[-2]
        loss = 0.5 * xp.sum(diff * diff, axis=(-2, -1)) / batch
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
