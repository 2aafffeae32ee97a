"""Real-time recurrent learning (Williams & Zipser, 1989): the exact online gradient.

Forward-mode sensitivity of the state to the recurrent parameters, per stream:

    G_t = J_t G_{t−1} + F_t,    G_0 = 0,    G_t = ∂h_t/∂θ_rec  (n × P_rec)
    g_t = [δ_tᵀ G_t summed over streams, ∂ℓ_t/∂θ_out]

With θ frozen, g_t equals ∂ℓ_t/∂θ exactly (what BPTT computes backwards). Cost O(n² P) time and
O(n P) memory per stream and step — the reason the rank-one estimators exist.

**Two ways to take a step**, the same numbers up to rounding (docs/estimators/rtrl.md, "Cost"):

* *Structured*, when the model provides ``state_jacobian``, ``param_jacobian_accumulate`` and
  ``vjp``. The step is one matrix product per stream into a preallocated buffer, plus O(P) work:

      [X_t ; r_t] = [J_t ; δ_tᵀ J_t] G_{t−1}         ((n + 1) × n times n × P_rec)
      G_t = X_t + F_t                                 (F_t added in place, its non-zeros only)
      g_t,rec = Σ_b (r_t,b + δ_t,bᵀ F_t,b)            (δᵀ F_t: the VJP, added in place)

  since δ_tᵀ G_t = (δ_tᵀ J_t) G_{t−1} + δ_tᵀ F_t: the extra row of the product gives the
  gradient, where a separate δ_tᵀ G_t would read all of G_t again from memory (a GEMV over the
  product's output: 7–9 % of the product at n = 64–128, against 2–4 % for the extra row;
  measured on the whole online step, 4 % faster at n = 64 and 7 % at n = 128, 8 % slower at
  n = 32, where the fixed cost of the VJP dominates). G_t is written into the other of two
  (B, n + 1, P_rec) buffers allocated once (the declared state ``G`` is the view of its first
  n rows; the second buffer is a workspace, never checkpointed), so that no array of size n·P
  is allocated per step: the step is the product (BLAS's DGEMM on NumPy, cuBLAS on CuPy, both
  with ``out=``) and nothing of its size besides, and it causes no page faults.
* *Generic*, for any model with ``jvp_state`` and ``param_jacobian`` (what ``requires`` lists):
  G_t = jvp_state(G_{t−1}) + param_jacobian, both new arrays, then g_t,rec = Σ_b δ_t,bᵀ G_t,b.
"""

from __future__ import annotations

from typing import Any

from gradflow import (
    JVP_STATE,
    PARAM_JACOBIAN,
    PARAM_JACOBIAN_ACCUMULATE,
    STATE_JACOBIAN,
    VJP,
    Estimator,
    PerStream,
    StepRecord,
    matmul_into,
)

Array = Any

#: the model primitives of the structured step (RTRL takes it when the model has all three)
STRUCTURED = frozenset({STATE_JACOBIAN, PARAM_JACOBIAN_ACCUMULATE, VJP})


class RTRL(Estimator):
    name = "rtrl"
    description = "real-time recurrent learning: exact online gradient, O(n²P) per step"
    requires = frozenset({JVP_STATE, PARAM_JACOBIAN})
    kind = "exact"

    def state_fields(self) -> list[PerStream]:
        """G (B, n, P_rec), zero at the start and when a stream starts a new sequence (h_0 does
        not depend on θ)."""
        return [PerStream("G", (self.model.n_state, self.layout.n_rec))]

    @property
    def structured(self) -> bool:
        """Whether :meth:`step` takes the structured step (the model has :data:`STRUCTURED`)."""
        return all(self.model.has(name) for name in STRUCTURED)

    def setup_workspace(self) -> None:
        """For the structured step: the extended Jacobian [J_t; δ_tᵀ J_t] (B, n + 1, n) and the
        two (B, n + 1, P_rec) buffers of [G_t; r_t], the state's G copied into the first (and
        ``state.G`` made the view of its first n rows)."""
        self._buffers: list[Array] = []
        if not self.structured:
            return
        xp, G = self.xp, self.state.G
        batch, n, p = (int(s) for s in G.shape)
        self._extended = xp.zeros((batch, n + 1, n), dtype=self.dtype)
        self._buffers = [xp.zeros((batch, n + 1, p), dtype=self.dtype) for _ in range(2)]
        self._buffers[0][:, :n, :] = G
        self.state.G = self._buffers[0][:, :n, :]
        #: the buffer the next step writes: never the one ``state.G`` is a view of (after a
        #: reset ``state.G`` is a new array, and both buffers are free)
        self._next = 1

    def step(self, record: StepRecord) -> Array:
        if self._buffers:
            return self._structured_step(record)
        return self._generic_step(record)

    def _structured_step(self, record: StepRecord) -> Array:
        """[X_t; r_t] = [J_t; δ_tᵀ J_t] G_{t−1}, G_t = X_t + F_t, g = Σ_b r_t,b + δ_tᵀ F_t."""
        xp, model, state = self.xp, self.model, self.state
        theta, cache = record.theta, record.cache
        batch, n, p = state.G.shape
        ext = self._extended
        ext[:, :n, :] = model.state_jacobian(theta, cache)
        matmul_into(xp, record.delta[:, None, :], ext[:, :n, :], ext[:, n:, :])  # δ_bᵀ J_b
        out = self._buffers[self._next]
        matmul_into(xp, ext, state.G, out)  # the one O(n²P) product, into the free buffer
        G = out[:, :n, :]
        model.param_jacobian_accumulate(theta, cache, G)  # G_t = J_t G_{t−1} + F_t
        state.G = G
        self._next = 1 - self._next
        buf = self.direction_buffer()
        g = buf[:p]
        g[...] = out[0, n, :]  # Σ_b (δ_bᵀ J_b) G_{t−1,b}: row by row, no temporary
        for b in range(1, batch):
            g += out[b, n, :]
        model.vjp_accumulate(theta, cache, record.delta, g, state=False)  # + Σ_b δ_bᵀ F_t,b
        buf[p:] = record.grad_out
        return buf

    def _generic_step(self, record: StepRecord) -> Array:
        """G_t = jvp_state(G_{t−1}) + param_jacobian (new arrays), g = Σ_b δ_bᵀ G_t,b."""
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
