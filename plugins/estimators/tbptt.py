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

State (declared once, :meth:`WindowBackprop.state_fields`): the window ``hist`` of the last k2
steps (each entry the step's δ_t, its forward cache and, after a sequence
boundary, the mask ``cut`` of the streams whose backward pass stops there), the pending readout
gradient ``g_out``, the number of pending losses, and the boundary seen since the last step.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from gradflow import (
    VJP,
    Estimator,
    EstimatorOptions,
    PerStream,
    Scalar,
    Shared,
    StepRecord,
    Window,
)

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
    """Shared machinery of TBPTT and BPTT: a window of steps and a backward pass over it."""

    requires = frozenset({VJP})
    #: steps the window keeps (``None``: every step since the last update)
    window_length: int | None = None

    def state_fields(self) -> list[Any]:
        return [
            Window("hist", self.window_length),
            Shared("g_out", (self.layout.n_out,)),
            Scalar("pending", 0),
            # streams that started a new sequence since the last recorded step
            PerStream("cut", (), fill=False, reset=False, dtype="bool"),
            Scalar("cut_pending", False),
        ]

    def setup_workspace(self) -> None:
        self._g_rec = self.xp.zeros((*self.lead, self.layout.n_rec), dtype=self.dtype)

    def on_reset(self, mask: Array) -> None:
        """Nothing flows back across the boundary: the next recorded step carries the mask."""
        state = self.state
        state.cut = (state.cut | mask) if state.cut_pending else self.xp.asarray(mask, copy=True)
        state.cut_pending = True

    def record(self, record: StepRecord) -> None:
        """Append the step to the window and add its readout gradient to the pending one."""
        state = self.state
        entry = {"delta": record.delta, "cache": record.cache}
        if state.cut_pending:
            entry["cut"] = state.cut
            state.cut_pending = False
        state.hist.append(entry)
        state.g_out += record.grad_out
        state.pending += 1

    def backprop(self, theta: Array) -> Array:
        """Backpropagate the pending losses through the window; return the direction."""
        xp, model, state = self.xp, self.model, self.state
        steps = list(state.hist)
        first_loss = len(steps) - state.pending
        u = xp.zeros_like(steps[-1]["delta"])
        g = self._g_rec
        g[...] = 0.0
        zero = xp.zeros((), dtype=self.dtype)
        for i in range(len(steps) - 1, -1, -1):
            entry = steps[i]
            if i >= first_loss:
                u = u + entry["delta"]
            u = model.vjp_accumulate(theta, entry["cache"], u, g)  # g += Σ_b u_bᵀ F_b
            cut = entry.get("cut")
            if cut is not None:
                u = xp.where(cut[..., None], zero, u)
        direction = self.fill_direction(g, state.g_out)
        state.g_out[...] = 0.0
        state.pending = 0
        return direction

    def flush(self, theta: Array) -> Array | None:
        if self.state.pending == 0:
            return None
        return self.backprop(theta)


class TBPTT(WindowBackprop):
    name = "tbptt"
    description = "truncated BPTT: every k1 steps, backprop the last k1 losses through k2 steps"
    Options = TBPTTOptions
    #: exact only when the window covers the whole past (k2 ≥ the sequence length)
    kind = "biased"
    replicas = True

    def __init__(self, model: Any, options: TBPTTOptions) -> None:
        super().__init__(model, options)
        self.truncation = options.truncation
        self.interval = options.interval or options.truncation
        self.window_length = self.truncation

    @property
    def update_interval(self) -> int:
        """k1."""
        return self.interval

    def step(self, record: StepRecord) -> Array | None:
        self.record(record)
        if self.state.pending == self.interval:
            return self.backprop(record.theta)
        return None
