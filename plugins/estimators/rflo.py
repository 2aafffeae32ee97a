"""Random-feedback local online learning (RFLO; Murray, eLife 2019).

For a leaky-integrator network h_t = λ ⊙ h_{t−1} + (1 − λ) ⊙ φ(W x̂_t), x̂_t = [h_{t−1}; x_t; 1]
(Murray's model with λ = 1 − 1/τ; the built-in ``rnn`` with λ = 1 − α), RFLO keeps of the
influence matrix ∂h_t/∂W only what is local to each synapse: the derivative of unit k through
its own leak, never through the recurrent weights. Per stream, one trace per recurrent parameter
(Murray's p_ij and q_ij, with the bias as the weight of the constant input):

    e_t[j] = λ_u(j) e_{t−1}[j] + F_t[u(j), j]          e_0 = 0
           = (1 − α) e_{t−1}[j] + α φ'(a_t,k) x̂_t,l    (``rnn``: θ_j = W_kl, W = [W_hh W_xh b_h])
    g_t,rec[j] = Σ_b L_t,b[u(j)] e_t,b[j]
    g_t = [g_t,rec, ∂ℓ_t/∂θ_out]                        (the exact readout gradient)

with u(j) the unit of θ_j (:meth:`gradflow.Model.units`), λ from the model's ``leak`` primitive
gathered to the units, and the learning signal L_t = δ_t (option ``feedback = "readout"``,
default) or the output error through a fixed random matrix B (``feedback = "random"``, Murray's
rule proper; B's entries N(0, 1/k) as in the code published with the paper, seeded by
``feedback_seed``): see
:mod:`.eligibility`. The trace is RTRL's recursion G_t = J_t G_{t−1} + F_t with J_t replaced by
its constant part diag(λ), so with W_hh = 0 (J_t = diag(λ) exactly) and readout feedback RFLO is
RTRL.

**Cost.** State e (B, 1, P_rec): P_rec numbers per stream (an O(P) memory, like UORO's w̃). A
step is O(P) time: the decay e *= λ (one in-place pass, λ broadcast over each unit's
parameters), F_t added by the model's ``param_jacobian_units_accumulate`` (its P_rec non-zero
entries; for the ``rnn`` rank-one updates into e), and the contraction with L_t into the
returned buffer, in cache-sized bands of units. No dense J_t or F_t is formed, nothing of size
P is allocated per step.

A model provides ``leak`` only if it is a leaky integrator with one coordinate per unit (the
``rnn``); ``gru`` and ``lstm`` do not, and asking for ``rflo`` with them is a
:class:`gradflow.CapabilityError` naming ``leak``.
"""

from __future__ import annotations

from typing import Any

from gradflow_plugins.estimators.eligibility import UnitTraceEstimator

from gradflow import LEAK, PARAM_JACOBIAN_UNITS_ACCUMULATE, StepRecord

Array = Any


class RFLO(UnitTraceEstimator):
    name = "rflo"
    description = ("random-feedback local online learning (Murray 2019): leak-filtered local "
                   "traces, readout or random feedback, O(P) per step")
    requires = frozenset({LEAK, PARAM_JACOBIAN_UNITS_ACCUMULATE})

    def decay(self, record: StepRecord, views: list[Array]) -> None:
        """e ← λ ⊙ e: λ (n_state,) gathered to (s, n_units) and broadcast over each block."""
        xp, units = self.xp, self.units
        lam = xp.take(self.model.leak(record.theta), self._coords, axis=0)
        lam = xp.reshape(lam, (units.size, units.n_units))[None, :, None, :, None]
        for view in views:
            view *= lam
