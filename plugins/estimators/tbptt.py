"""Truncated backpropagation through time (Williams & Peng, 1990), run online.

Options ``truncation`` k2 and ``interval`` k1 ≤ k2 (default k1 = k2). It keeps the forward
caches of the last k2 steps. Every k1 steps it backpropagates the losses of the last k1 steps
through the last k2 transitions and returns

    g = Σ_{s=t−k2+1}^{t} u_sᵀ F_s,   u_t = δ_t,   u_{s−1} = u_sᵀ J_s + [s−1 > t−k1] δ_{s−1},

plus the exact readout gradients of those k1 steps; nothing flows past the window or across a
sequence boundary. With k2 ≥ the sequence length, the sum over a sequence equals BPTT's.

The backward pass uses θ as it is at the update step (with θ frozen this is exact; during online
training the stored activations come from the θ of their own step, the usual online TBPTT).
Cost per step O(P) amortised (k2 VJPs every k1 steps), memory k2 caches.

Hot path: the parameter gradient is summed over the streams inside the model
(``model.vjp_accumulate`` into one (P_rec,) buffer: for ``rnn`` one matrix product Eᵀ H per
step of the window), so no per-stream (B, P_rec) array exists; the readout gradients are summed
in place. The stored caches are never modified after they are recorded.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from pydantic import Field, model_validator

from gradflow import VJP, Estimator, EstimatorOptions, StepRecord

Array = Any


class TBPTTOptions(EstimatorOptions):
    truncation: int = Field(10, ge=1, description="k2: number of transitions backpropagated")
    interval: int | None = Field(
        None, ge=1, description="k1: steps between updates (≤ truncation); default = truncation"
    )

    @model_validator(mode="after")
    def _interval_fits(self) -> TBPTTOptions:
        if self.interval is not None and self.interval > self.truncation:
            raise ValueError(f"interval ({self.interval}) must not exceed truncation "
                             f"({self.truncation})")
        return self


class WindowBackprop(Estimator):
    """Shared machinery of TBPTT and BPTT: a history of steps and a backward pass over it."""

    requires = frozenset({VJP})
    _maxlen: int | None = None

    def _allocate(self, batch: int) -> None:
        self.history: deque[dict[str, Any]] = deque(maxlen=self._maxlen)
        self.pending_losses = 0
        self.g_out = self.xp.zeros((self.layout.n_out,), dtype=self.dtype)
        self.pending_cut: Array | None = None
        self._g_rec = self.xp.zeros((self.layout.n_rec,), dtype=self.dtype)  # workspace

    def reset(self, mask: Array) -> None:
        cut = mask if self.pending_cut is None else (self.pending_cut | mask)
        self.pending_cut = cut

    def _record(self, record: StepRecord) -> None:
        self.history.append({"cache": record.cache, "delta": record.delta,
                             "cut": self.pending_cut})
        self.pending_cut = None
        self.g_out += record.grad_out
        self.pending_losses += 1

    def _backprop(self, theta: Array) -> Array:
        """Backpropagate the pending losses through the stored window; clear what was used."""
        xp, model = self.xp, self.model
        steps = list(self.history)
        first_loss = len(steps) - self.pending_losses
        u = xp.zeros_like(steps[-1]["delta"])
        g = self._g_rec
        g[...] = 0.0
        zero = xp.zeros((), dtype=self.dtype)
        for i in range(len(steps) - 1, -1, -1):
            entry = steps[i]
            if i >= first_loss:
                u = u + entry["delta"]
            u = model.vjp_accumulate(theta, entry["cache"], u, g)  # g += Σ_b u_bᵀ F_b
            if entry["cut"] is not None:
                u = xp.where(entry["cut"][:, None], zero, u)
        direction = self.fill_direction(g, self.g_out)
        self.g_out[...] = 0.0
        self.pending_losses = 0
        return direction

    def flush(self, theta: Array) -> Array | None:
        if self.pending_losses == 0:
            return None
        return self._backprop(theta)

    # -- state -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["pending_losses"] = self.pending_losses
        state["history_len"] = len(self.history)
        state["array.g_out"] = self.copy_array(self.g_out)  # summed in place: a snapshot
        if self.pending_cut is not None:
            state["array.pending_cut"] = self.pending_cut
        for i, entry in enumerate(self.history):
            state[f"array.hist.{i}.delta"] = entry["delta"]
            if entry["cut"] is not None:
                state[f"array.hist.{i}.cut"] = entry["cut"]
            for key, value in entry["cache"].items():
                state[f"array.hist.{i}.cache.{key}"] = value
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self._allocate(self.batch)
        self.pending_losses = int(state["pending_losses"])
        asarray = self.backend.asarray
        self.g_out = self.load_array(state["array.g_out"])
        if "array.pending_cut" in state:
            self.pending_cut = asarray(state["array.pending_cut"])
        for i in range(int(state["history_len"])):
            prefix = f"array.hist.{i}.cache."
            cache = {k[len(prefix):]: asarray(v) for k, v in state.items()
                     if k.startswith(prefix)}
            cut = state.get(f"array.hist.{i}.cut")
            self.history.append({"cache": cache, "delta": asarray(state[f"array.hist.{i}.delta"]),
                                 "cut": None if cut is None else asarray(cut)})

    def load_state_arrays(self, arrays: dict[str, Array]) -> None:
        """History is restored by :meth:`load_state_dict` itself."""


class TBPTT(WindowBackprop):
    name = "tbptt"
    description = "truncated BPTT: every k1 steps, backprop the last k1 losses through k2 steps"
    Options = TBPTTOptions

    def __init__(self, model: Any, options: TBPTTOptions) -> None:
        super().__init__(model, options)
        self.truncation = options.truncation
        self.interval = options.interval or options.truncation
        self._maxlen = self.truncation

    def step(self, record: StepRecord) -> Array | None:
        self._record(record)
        if self.pending_losses == self.interval:
            return self._backprop(record.theta)
        return None
