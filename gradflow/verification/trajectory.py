"""Frozen trajectories: gradient estimates along fixed inputs and targets with θ held fixed.

This is how estimators are compared with each other and with exact references: the same θ, the
same inputs, targets and sequence boundaries, no parameter update, and one row per step. A
:class:`FrozenTrajectory` runs the one online step (:func:`gradflow.training.step.online_step`)
along its steps — with an estimator, or without one for the records an exact reference needs —
so a trajectory is stepped exactly as training steps a stream.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from gradflow.contracts.errors import ShapeError
from gradflow.contracts.estimator import Estimator, StepRecord
from gradflow.contracts.losses import Loss, get_loss
from gradflow.contracts.model import Model
from gradflow.contracts.task import Batch
from gradflow.registry.guard import check_direction
from gradflow.training.step import StepOutcome, online_step

Array = Any


def check_sequence(model: Model, inputs: Array, targets: Array) -> tuple[int, int]:
    """(T, B) of a trajectory, after checking the shapes of its inputs and targets."""
    if inputs.ndim != 3 or inputs.shape[2] != model.n_in:
        raise ShapeError(f"inputs must have shape (T, B, {model.n_in}), got {tuple(inputs.shape)}")
    T, B = int(inputs.shape[0]), int(inputs.shape[1])
    if targets.shape[0] != T or targets.shape[1] != B:
        raise ShapeError(f"targets must have shape (T, B) or (T, B, k) with T={T}, B={B}, "
                         f"got {tuple(targets.shape)}")
    return T, B


def as_targets(model: Model, targets: Any) -> Array:
    """Targets as arrays of the model's backend (integer labels as int64)."""
    arr = np.asarray(targets) if not hasattr(targets, "__array_namespace__") else targets
    if isinstance(arr, np.ndarray) and arr.dtype.kind in "iu":
        return model.backend.asarray(arr.astype(np.int64))
    return model.backend.asarray(arr)


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


@dataclass
class FrozenTrajectory:
    """A model, a fixed θ and T steps of B streams: inputs (T, B, m), targets (T, B) labels or
    (T, B, k) values, and optional sequence boundaries ``resets`` (T, B) (true where step t
    starts a new sequence), all as arrays of the model's backend."""

    model: Model
    theta: Array
    inputs: Array
    targets: Array
    loss: Loss
    resets: Array | None = None
    #: the steps where some stream starts a new sequence (the others pass no reset mask)
    reset_steps: frozenset[int] = frozenset()

    @classmethod
    def of(cls, model: Model, theta: Any, inputs: Any, targets: Any,
           loss: str | Loss = "mse", resets: Any = None) -> FrozenTrajectory:
        """A trajectory from NumPy (or backend) arrays, checked and moved to the backend."""
        backend = model.backend
        cuts = None if resets is None else np.asarray(resets, dtype=bool)
        traj = cls(model, backend.asarray(theta), backend.asarray(inputs),
                   as_targets(model, targets), get_loss(loss),
                   None if cuts is None else backend.asarray(cuts),
                   frozenset() if cuts is None else
                   frozenset(int(t) for t in np.flatnonzero(cuts.reshape(len(cuts), -1).any(1))))
        check_sequence(model, traj.inputs, traj.targets)
        return traj

    @property
    def steps(self) -> int:
        return int(self.inputs.shape[0])

    @property
    def batch(self) -> int:
        return int(self.inputs.shape[1])

    def batch_at(self, t: int) -> Batch:
        """Step t as a task would give it."""
        reset = self.resets[t, ...] if t in self.reset_steps else None
        return Batch(self.inputs[t, ...], self.targets[t, ...], reset)

    def run(self, estimator: Estimator | None = None, first: int = 0,
            h: Array | None = None) -> Iterator[tuple[int, StepOutcome]]:
        """The online steps along the trajectory, as (t, outcome), from step ``first`` with the
        state ``h`` (default: from the start, h_0); an estimator given here has been started by
        the caller."""
        model = self.model
        h0 = model.initial_state(self.batch)
        h = h0 if h is None else h
        for t in range(first, self.steps):
            out = online_step(model, self.loss, self.theta, h, self.batch_at(t), h0, estimator)
            h = out.h
            yield t, out

    def records(self) -> list[StepRecord]:
        """What an estimator sees of each step (forward, loss and readout VJP, once)."""
        return [out.record for _, out in self.run() if out.record is not None]

    def directions(self, estimator: Estimator, seed: int = 0,
                   ) -> tuple[list[tuple[int, Array]], Array | None]:
        """Start ``estimator`` (seed ``seed``) and run it along the trajectory: the directions it
        returned, as (step, direction) with each direction copied to the host, and what
        :meth:`~gradflow.Estimator.flush` returned at the end (``None`` if nothing)."""
        backend, size = self.model.backend, self.model.layout.size
        estimator.start(self.batch, seed=seed)
        out: list[tuple[int, Array]] = []
        for t, step in self.run(estimator):
            if step.direction is not None:
                check_direction(estimator, step.direction, size)
                out.append((t, backend.to_numpy(step.direction)))
        pending = estimator.flush(self.theta)
        if pending is not None:
            check_direction(estimator, pending, size)
            pending = backend.to_numpy(pending)
        return out, pending


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
    traj = FrozenTrajectory.of(model, theta, inputs, targets, loss, resets)
    rows = np.zeros((traj.steps, model.layout.size), dtype=np.float64)
    with preconditioning(estimator, precondition):
        returned, pending = traj.directions(estimator, seed)
    for t, direction in returned:
        rows[t] += direction
    if pending is not None:
        rows[traj.steps - 1] += pending
    return rows
