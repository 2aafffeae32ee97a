"""The `influence` task: the constant target of the influence-balancing experiment.

Tallec & Ollivier, "Unbiased online recurrent optimization" (UORO, ICLR 2018), §5: the
``influence`` model (s_t = A s_{t−1} + θ b, ŷ_t = s_t¹) has no input and learns to make its first
state coordinate equal to 1. This task feeds it exactly that: inputs of width 0 (the model takes
none; n_in = 0), the target 1 on ŷ = s¹ at every step (n_out = 1, float targets of shape (B, 1)),
the loss ``mse`` ½(ŷ − 1)², and no resets: one endless sequence.

Best achievable loss: 0. The fixed point of the model is s*¹ = 2θ(2p − n) (= −6θ for the
defaults n = 23, p = 10), so θ* = 1 / (2(2p − n)) = −1/6 makes ŷ → 1 and the loss → 0; any other θ
leaves the long-run loss ½(2θ(2p − n) − 1)² > 0. A gradient truncated to fewer steps than the
model needs to feel its negative coordinates points the wrong way — the point of the experiment.

The stream is deterministic (the seed does not change it); its state is the step count. Like the
other tasks it hands out its steps from chunks (:class:`gradflow.ChunkedStream`), here of
constant steps, which carry no position. The held-out stream is the same constant stream: the
trainer's evaluation runs θ from s_0 over ``eval_steps`` steps, which measures how far θ is from
θ*.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gradflow import Backend, Batch, Chunk, ChunkedStream, Task, TaskOptions


class InfluenceTaskOptions(TaskOptions):
    """No options: the input is empty and the target is 1 (the experiment's definition)."""


class InfluenceTask(Task):
    name = "influence"
    description = "influence balancing: no input, target 1 on s¹ (for the influence model)"
    Options = InfluenceTaskOptions
    loss = "mse"

    def __init__(self, options: InfluenceTaskOptions, backend: Backend, batch: int = 1,
                 seed: int = 0) -> None:
        super().__init__(options, backend, batch, seed)
        self.stream = ChunkedStream(backend, self.batch, self.n_in + self.n_out,
                                    self._draw, None)

    @property
    def n_in(self) -> int:
        return 0

    @property
    def n_out(self) -> int:
        return 1

    @property
    def optimum(self) -> float:
        return 0.0

    def reference_losses(self) -> dict[str, float]:
        return {"optimum": 0.0}

    def _draw(self, position: None, step: int, steps: int) -> Chunk:
        """``steps`` steps of no input and the target 1."""
        return Chunk(np.zeros((steps, self.batch, 0)), np.ones((steps, self.batch, 1)),
                     lambda k: None)

    def next(self) -> Batch:
        return self.stream.next()

    def held_out(self) -> InfluenceTask:
        """The same constant stream, from its start."""
        return InfluenceTask(self.options, self.backend, self.batch, self.seed)

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.stream.step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.stream.seek(None, int(state["step"]))
