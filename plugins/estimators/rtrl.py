"""Real-time recurrent learning (Williams & Zipser, 1989): the exact online gradient.

Forward-mode sensitivity of the state to the recurrent parameters, per stream:

    G_t = J_t G_{t−1} + F_t,    G_0 = 0,    G_t = ∂h_t/∂θ_rec  (n × P_rec)
    g_t = [δ_tᵀ G_t summed over streams, ∂ℓ_t/∂θ_out]

With θ frozen, g_t equals ∂ℓ_t/∂θ exactly (what BPTT computes backwards). Cost O(n² P) time and
O(n P) memory per stream and step — the reason the rank-one estimators exist.
"""

from __future__ import annotations

from typing import Any

from gradflow import JVP_STATE, PARAM_JACOBIAN, Estimator, PerStream, StepRecord

Array = Any


class RTRL(Estimator):
    name = "rtrl"
    description = "real-time recurrent learning: exact online gradient, O(n²P) per step"
    requires = frozenset({JVP_STATE, PARAM_JACOBIAN})
    kind = "exact"

    def state_fields(self) -> list[PerStream]:
        """G (B, n, P_rec), zero at the start and when a stream starts a new sequence (h_0 does
        not depend on θ)."""
        return [PerStream("G", (self.model.n_state, self.layout.n_rec))]

    def step(self, record: StepRecord) -> Array:
        xp, model, state = self.xp, self.model, self.state
        G = model.jvp_state(record.theta, record.cache, state.G)  # J_t G_{t−1}, a new array
        G += model.param_jacobian(record.theta, record.cache)
        state.G = G
        batch, n, p = G.shape
        # Σ_b δ_b G_b: one matrix-vector product over the B·n rows of G
        buf = self.direction_buffer()
        buf[:p] = xp.reshape(record.delta, (-1,)) @ xp.reshape(G, (batch * n, p))
        buf[p:] = record.grad_out
        return buf
