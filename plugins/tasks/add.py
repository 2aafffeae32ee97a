"""The `add` task: remember two bits from the past and combine them (Tallec & Ollivier, UORO).

Each stream draws independent bits x_t ~ Bernoulli(½) and shows them one-hot (two inputs). The
target at step t is the probability

    y_t = ½ + ½ x_{t−t1} − ¼ x_{t−t2}        (lags t1 = 5, t2 = 9 by default)

of class 1, given either as the probability vector (1 − y_t, y_t) (``targets = "soft"``, the
default) or as a class label sampled from Bernoulli(y_t) (``targets = "sampled"``). The loss is
the softmax cross-entropy in nats. Predicting y_t exactly costs the mean binary entropy of y_t
(both kinds of targets have the same expected loss); for lags 5 and 9:

* optimum (remembers both lags): E H(y_t) = 0.4545 nats;
* remembers x_{t−t1} only: 0.5192 nats;
* no memory (predicts E y_t = 0.625): 0.6616 nats.

Before the first step each stream draws max(t1, t2) bits of history, so every target is defined
and the stream is stationary from step 1. The bits come from a :class:`gradflow.CounterRNG` on the
host (NumPy), whose whole state is two integers; the task's state is those integers plus the
history window, so a resumed stream continues exactly.

Step t (t = 1, 2, ...) takes its bits from the generator's draw number t (and, with sampled
targets, the draws are interleaved: bits, then the uniform of the label). The position of the
stream is (history, counter) as if each step had made its own draws. A chunk
(:class:`gradflow.ChunkedStream`) computes a block of steps from that position at once: the bits
of all its steps from one :meth:`gradflow.CounterRNG.bits_at` (the draws at the counters the
steps would use), the targets by slicing the history followed by the new bits; the stream is the
same as one draw per step, and a step costs an index instead of a dozen small array operations
(and, on CuPy, no host-to-device copy per step).
"""

from __future__ import annotations

import itertools
import math
from typing import Any, Literal

import array_api_compat.numpy as hxp
import numpy as np
from pydantic import Field

from gradflow import (
    Backend,
    Batch,
    Chunk,
    ChunkedStream,
    CounterRNG,
    GradflowError,
    Task,
    TaskOptions,
)

#: (history, counter): x_{t−j} in column j of the history; the generator's counter
Position = tuple[np.ndarray, int]


class AddOptions(TaskOptions):
    lag1: int = Field(5, ge=0, description="t1: the lag of the bit with weight +½")
    lag2: int = Field(9, ge=0, description="t2: the lag of the bit with weight −¼")
    targets: Literal["soft", "sampled"] = Field(
        "soft", description="soft: the probability vector (1−y, y); sampled: a label ~ Bernoulli(y)"
    )


def _entropy(p: float) -> float:
    """Binary entropy in nats."""
    return -sum(q * math.log(q) for q in (p, 1.0 - p) if q > 0.0)


def _cross_entropy(y: float, p: float) -> float:
    """Expected loss in nats of predicting p for targets of mean y."""
    return -(y * math.log(p) + (1.0 - y) * math.log(1.0 - p))


def reference_losses(lag1: int = 5, lag2: int = 9) -> dict[str, float]:
    """Expected loss (nats) of the best predictor that knows both lags, the first lag only, or
    nothing: ``{"optimum", "first lag only", "no memory"}``."""
    combos = list(itertools.product((0, 1), repeat=2))
    y = {(a, b): 0.5 + 0.5 * a - 0.25 * (a if lag1 == lag2 else b) for a, b in combos}
    optimum = sum(_entropy(v) for v in y.values()) / 4
    first = 0.0
    for a in (0, 1):
        mean = sum(y[a, b] for b in (0, 1)) / 2
        first += sum(_cross_entropy(y[a, b], mean) for b in (0, 1)) / 4
    mean = sum(y.values()) / 4
    none = sum(_cross_entropy(v, mean) for v in y.values()) / 4
    return {"optimum": optimum, "first lag only": first, "no memory": none}


class AddTask(Task):
    name = "add"
    description = "y_t = ½ + ½x_{t−t1} − ¼x_{t−t2} from random bits (lags 5, 9; optimum 0.4545)"
    Options = AddOptions
    loss = "ce"

    def __init__(self, options: AddOptions, backend: Backend, batch: int = 1,
                 seed: int = 0) -> None:
        super().__init__(options, backend, batch, seed)
        self.lag1, self.lag2 = options.lag1, options.lag2
        self.window = max(self.lag1, self.lag2) + 1
        self.sampled = options.targets == "sampled"
        self.draws_per_step = 2 if self.sampled else 1  # the bits, then the label's uniform
        self.rng = self.host_rng()
        # history[:, j] = x_{t−j} once x_t is pushed; columns 1.. hold the pre-drawn past.
        history = np.zeros((self.batch, self.window), dtype=np.int64)
        history[:, 1:] = self._bits(self.window - 1)
        self.stream = ChunkedStream(backend, self.batch,
                                    self.n_in + (1 if self.sampled else self.n_out),
                                    self._draw, (history, self.rng.counter))

    @property
    def n_in(self) -> int:
        return 2

    @property
    def n_out(self) -> int:
        return 2

    @property
    def optimum(self) -> float:
        return reference_losses(self.lag1, self.lag2)["optimum"]

    def reference_losses(self) -> dict[str, float]:
        return reference_losses(self.lag1, self.lag2)

    def _bits(self, count: int) -> np.ndarray:
        """(B, count) fair bits (one draw)."""
        raw = np.asarray(self.rng.bits((self.batch, count)))
        return (raw >> np.uint64(63)).astype(np.int64)

    def _draw(self, position: Position, step: int, steps: int) -> Chunk:
        """The ``steps`` steps after ``position`` from the draws they would make one at a time:
        bits from draw t (draws t, t + 1 for bits and label with sampled targets)."""
        history, counter = position
        draws = self.rng.bits_at((self.batch,), counter, steps, stride=self.draws_per_step)
        x = (np.asarray(draws) >> np.uint64(63)).astype(np.int64)  # (steps, B)
        # seq[:, k]: the history oldest first (history[:, j] is x_{t−j}), then the new bits
        seq = np.concatenate([history[:, ::-1], x.T], axis=1)
        first = self.window  # index in seq of the chunk's first step
        y = (0.5 + 0.5 * seq[:, first - self.lag1:first - self.lag1 + steps]
             - 0.25 * seq[:, first - self.lag2:first - self.lag2 + steps]).T  # (steps, B)
        inputs = np.stack([1.0 - x, x.astype(np.float64)], axis=2)
        if self.sampled:
            labels = self.rng.bits_at((self.batch,), counter + 1, steps, stride=2)
            u = np.asarray(CounterRNG.to_uniform(hxp, labels))
            targets = (u < y).astype(np.int64)
        else:
            targets = np.stack([1.0 - y, y], axis=2)
        lags = np.arange(self.window)

        def position_at(k: int) -> Position:
            return seq[:, self.window - 1 + k - lags], counter + k * self.draws_per_step

        return Chunk(inputs, targets, position_at)

    def next(self) -> Batch:
        return self.stream.next()

    def held_out(self) -> AddTask:
        """An independent stream (its own seed, derived from this task's), same options."""
        return self.independent_stream()

    def state_dict(self) -> dict[str, Any]:
        history, counter = self.stream.position
        state: dict[str, Any] = CounterRNG(hxp, self.rng.seed, counter).state_entries()
        state.update(step=self.stream.step, history=np.array(history, copy=True))
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        history = np.asarray(state["history"], dtype=np.int64)
        if history.shape != (self.batch, self.window):
            raise GradflowError(f"task 'add': history of shape {history.shape} does not match "
                                f"{(self.batch, self.window)} (batch, max lag + 1)")
        self.rng = CounterRNG.from_entries(self.rng.xp, state)
        self.stream.seek((history.copy(), self.rng.counter), int(state["step"]))
