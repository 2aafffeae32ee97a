"""Exact reference gradients by offline backpropagation through time.

These are the oracles the estimators are tested against. They store the whole trajectory and
backpropagate each step's loss ℓ_t separately to the start:

    ∂ℓ_t/∂θ_rec = Σ_{s ≤ t} u_s^{(t)ᵀ} F_s,   u_t^{(t)} = δ_t,   u_{s−1}^{(t)} = u_s^{(t)ᵀ} J_s,

using only the model's ``forward``, ``readout_vjp`` and ``vjp`` primitives (RTRL uses
``jvp_state`` and ``param_jacobian`` instead, so comparing the two checks one pair of primitives
against the other). Cost O(T²) VJPs: meant for tests and ``gradflow check``, not training.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gradflow.contracts.losses import Loss
from gradflow.contracts.model import Model
from gradflow.verification.trajectory import FrozenTrajectory

Array = Any


def bptt_gradients(model: Model, theta: Array, inputs: Any, targets: Any,
                   loss: str | Loss = "mse", resets: Any = None) -> np.ndarray:
    """Per-step exact gradients: row t is ∂ℓ_t/∂θ (θ fixed), shape (T, P), as NumPy float64.

    ``resets`` (T, B) boolean marks steps that start a new sequence: nothing flows back across
    them (the state before such a step is h_0, which does not depend on θ).
    """
    traj = FrozenTrajectory.of(model, theta, inputs, targets, loss, resets)
    backend, theta, cuts = model.backend, traj.theta, traj.resets
    xp = backend.xp
    records = traj.records()
    rows = np.zeros((traj.steps, model.layout.size))
    zero = xp.zeros((), dtype=backend.dtype)
    for t in range(traj.steps):
        u = records[t].delta
        g = xp.zeros((model.layout.n_rec,), dtype=backend.dtype)
        for s in range(t, -1, -1):
            u, g_theta = model.vjp(theta, records[s].cache, u)
            g = g + xp.sum(g_theta, axis=0)
            if cuts is not None:
                u = xp.where(cuts[s, ...][:, None], zero, u)
        rows[t] = backend.to_numpy(xp.concat([g, records[t].grad_out]))
    return rows
