"""Eligibility propagation (e-prop; Bellec, Scherr, Subramoney, Hajek, Salaj, Legenstein & Maass,
"A solution to the learning dilemma for recurrent networks of spiking neurons", Nat. Commun. 2020).

E-prop factorises the gradient into a learning signal per unit and an eligibility trace per
parameter that follows the unit's *internal* state only: the recurrent inputs W_hh h_{t−1} are
held fixed, so a trace never leaves the unit whose parameter it belongs to. Per stream, for θ_j
of unit u = u(j) with s coordinates (:meth:`gradflow.Model.units`):

    ε_t[c, j] = Σ_c' I_t[u, c, c'] ε_{t−1}[c', j] + F_t[coords[u, c], j]        ε_0 = 0
    g_t,rec[j] = Σ_b Σ_c L_t,b[coords[u, c]] ε_t,b[c, j]
    g_t = [g_t,rec, ∂ℓ_t/∂θ_out]

with I_t the model's ``internal_jacobian_blocks`` (B, n_units, s, s): the diagonal blocks of
J_t = ∂h_t/∂h_{t−1} with the recurrent weights' input held fixed (the paper's ∂h_t/∂h_{t−1} of a
neuron's hidden state). The learning signal L_t is δ_t = ∂ℓ_t/∂h_t (option ``feedback =
"readout"``, the paper's symmetric e-prop) or the output error through a fixed random matrix
(``feedback = "random"``, the paper's random e-prop), see :mod:`.eligibility`.

**The built-in models.**

* ``rnn`` (s = 1): I_t = 1 − α = λ, so ε is RFLO's trace and, with the same learning signal,
  e-prop returns RFLO's numbers (the same operations: bit for bit).
* ``gru`` (s = 1): I_t = z_t, the update gate (h_t = (1 − z) ⊙ c + z ⊙ h_{t−1}).
* ``lstm`` (s = 2, coordinates (h_u, c_u)): I_t = [[0, q f], [0, f]] with q = o (1 − tanh² c_t)
  = ∂h_t/∂c_t. Row c gives ε^c_t = f_t ε^c_{t−1} + ∂c_t/∂θ — the paper's eligibility vector of
  the LSTM (Bellec et al. 2020, Methods, LSTM: ε^t_ji = f^t_j ε^{t−1}_ji + ∂c^t_j/∂W_ji, the
  memory cell c being the neuron's hidden state); row h gives
  ε^h_t = q f ε^c_{t−1} + ∂h_t/∂θ = q ε^c_t + (∂h_t/∂θ with c_t fixed), since ∂h_t/∂θ = q ∂c_t/∂θ
  + the output gate's direct part — the paper's eligibility trace e^t_ji = (∂h^t_j/∂c^t_j)
  ε^t_ji + ∂h^t_j/∂W_ji. The readout sees h only, so L_t is zero on c and
  g_t,rec = Σ_b L_t,b[h_u] ε^h_t,b: the paper's Σ_j L^t_j e^t_ji. The trace runs through the
  cell state and its forget gate — what RFLO (no leak for the LSTM) cannot express and where
  SnAp-1 differs (it also keeps the unit's own recurrent weight W_hh[u, u]'s path).

With W_hh = 0, J_t is block-diagonal and equal to I_t, and e-prop with readout feedback is RTRL.

**Cost.** State ε (B, s, P_rec): s numbers per recurrent parameter and stream (1 for ``rnn`` and
``gru``, 2 for ``lstm``). A step: ε ← I_t ε in place (for s = 1 one pass, I_t broadcast over each
unit's parameters; for s > 1 s² multiply-adds per trace entry, in cache-sized bands of
units), F_t added by the model's
``param_jacobian_units_accumulate`` (s · P_rec numbers), and the contraction with L_t: O(s² · P)
time, no dense J_t or F_t, nothing of size P allocated per step.
"""

from __future__ import annotations

from typing import Any

from gradflow_plugins.estimators.eligibility import UnitTraceEstimator, unit_bands

from gradflow import INTERNAL_JACOBIAN_BLOCKS, PARAM_JACOBIAN_UNITS_ACCUMULATE, StepRecord

Array = Any


class EProp(UnitTraceEstimator):
    name = "e-prop"
    description = ("eligibility propagation (Bellec et al. 2020): per-unit traces through the "
                   "unit's internal state, readout or random feedback, O(P) per step")
    requires = frozenset({INTERNAL_JACOBIAN_BLOCKS, PARAM_JACOBIAN_UNITS_ACCUMULATE})

    def decay(self, record: StepRecord, views: list[Array]) -> None:
        """ε ← I_t ε on each unit's coordinates, in place."""
        xp, s = self.xp, self.units.size
        blocks = self.model.internal_jacobian_blocks(record.theta, record.cache)  # (B, U, s, s)
        if s == 1:
            scale = xp.reshape(blocks, tuple(blocks.shape[:2]))[:, None, None, :, None]
            for view in views:
                view *= scale
            return
        # coefficient (c, c') of every unit, shaped to broadcast over (B, groups, band, width)
        coeff = [[blocks[:, None, :, c, k, None] for k in range(s)] for c in range(s)]
        for view in views:
            for u0, u1 in unit_bands(xp, view, rows=int(view.shape[0]) * s):
                old = [view[:, k, :, u0:u1, :] for k in range(s)]
                new = []
                for c in range(s):
                    row = coeff[c][0][:, :, u0:u1, :] * old[0]
                    for k in range(1, s):
                        row += coeff[c][k][:, :, u0:u1, :] * old[k]
                    new.append(row)
                for c in range(s):
                    view[:, c, :, u0:u1, :] = new[c]
