"""Gradient estimates along a fixed trajectory with θ held fixed.

This is how estimators are compared with each other and with exact references: the same θ, the
same inputs and targets, no parameter update, and one row per step.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from gradflow.contracts.errors import ShapeError
from gradflow.contracts.estimator import Estimator, StepRecord
from gradflow.contracts.losses import Loss, get_loss
from gradflow.contracts.model import Model
from gradflow.registry.guard import check_direction

Array = Any


def check_sequence(model: Model, inputs: Array, targets: Array) -> tuple[int, int]:
    if inputs.ndim != 3 or inputs.shape[2] != model.n_in:
        raise ShapeError(f"inputs must have shape (T, B, {model.n_in}), got {tuple(inputs.shape)}")
    T, B = int(inputs.shape[0]), int(inputs.shape[1])
    if targets.shape[0] != T or targets.shape[1] != B:
        raise ShapeError(f"targets must have shape (T, B) or (T, B, k) with T={T}, B={B}, "
                         f"got {tuple(targets.shape)}")
    return T, B


def frozen_step(model: Model, theta: Array, h: Array, x: Array, y: Array,
                loss_fn: Loss) -> tuple[Array, StepRecord]:
    """One step of a trajectory with θ fixed: h_t = f(h_{t−1}, x_t), ŷ_t = g(h_t), the loss's
    gradient and the readout VJP. Returns h_t and what an estimator sees of the step."""
    h, cache = model.forward(theta, h, x)
    _, dy = loss_fn(model.readout(theta, h), y)
    delta, g_out = model.readout_vjp(theta, h, dy)
    return h, StepRecord(theta=theta, cache=cache, delta=delta, grad_out=g_out)


@contextmanager
def preconditioning(estimator: Estimator, on: bool) -> Iterator[Estimator]:
    """Run ``estimator`` with its preconditioner (:attr:`Estimator.precondition`) on or off,
    restoring the previous setting afterwards. An object without the attribute is left as is."""
    if not hasattr(estimator, "precondition"):
        yield estimator
        return
    previous = estimator.precondition
    estimator.precondition = on
    try:
        yield estimator
    finally:
        estimator.precondition = previous


def as_targets(model: Model, targets: Any) -> Array:
    arr = np.asarray(targets) if not hasattr(targets, "__array_namespace__") else targets
    if isinstance(arr, np.ndarray) and arr.dtype.kind in "iu":
        return model.backend.asarray(arr.astype(np.int64))
    return model.backend.asarray(arr)


def frozen_gradients(model: Model, estimator: Estimator, theta: Array, inputs: Any,
                     targets: Any, loss: str | Loss = "mse", seed: int = 0,
                     resets: Any = None, precondition: bool = False) -> np.ndarray:
    """Run ``estimator`` along a fixed trajectory and return its estimates, shape (T, P).

    Row t is the estimator's estimate of ∂ℓ_t/∂θ with θ fixed, where ℓ_t is the loss at step t
    (mean over the B streams): for RTRL and the unbiased estimators one row per step; for TBPTT the
    window's sum at its update steps and zero elsewhere; for BPTT the whole sum at the last step
    (what is pending at the end is flushed into the last row).

    Parameters
    ----------
    inputs: (T, B, m) array.
    targets: (T, B) integer labels (``ce``) or (T, B, k) values.
    loss: ``"mse"`` or ``"ce"``.
    seed: seeds the estimator's generator (its state is reinitialised).
    resets: optional (T, B) boolean array; true where step t starts a new sequence.
    precondition: whether an estimator with a preconditioner applies it (see
        :attr:`Estimator.precondition`); off by default, so that the rows are the raw gradient
        estimates that can be compared with exact references. The estimator's flag is restored
        on return.
    """
    backend = model.backend
    xp = backend.xp
    theta = backend.asarray(theta)
    inputs = backend.asarray(inputs)
    targets = as_targets(model, targets)
    T, B = check_sequence(model, inputs, targets)
    loss_fn = get_loss(loss)
    reset_masks = None if resets is None else backend.asarray(np.asarray(resets, dtype=bool))

    with preconditioning(estimator, precondition):
        estimator.start(B, seed=seed)
        h = model.initial_state(B)
        h0 = model.initial_state(B)
        rows = np.zeros((T, model.layout.size), dtype=np.float64)
        for t in range(T):
            if reset_masks is not None:
                mask = reset_masks[t, ...]
                h = xp.where(mask[:, None], h0, h)
                estimator.reset(mask)
            h, record = frozen_step(model, theta, h, inputs[t, ...], targets[t, ...], loss_fn)
            direction = estimator.step(record)
            if direction is not None:
                check_direction(estimator, direction, model.layout.size)
                rows[t] += backend.to_numpy(direction)
        pending = estimator.flush(theta)
        if pending is not None:
            check_direction(estimator, pending, model.layout.size)
            rows[T - 1] += backend.to_numpy(pending)
    return rows
