"""The `copy` task with a curriculum: read L random bits, see a marker, write the bits back.

The copy task of Tallec & Ollivier, "Unbiased online recurrent optimization" (UORO, ICLR 2018),
in the tradition of Hochreiter & Schmidhuber (1997) and Graves et al. (2014), with the curriculum
that lengthens the sequences as the learner succeeds. One episode at length L takes 2L + 1 steps:

    step      1 … L            L + 1      L + 2 … 2L + 1
    input     b_1 … b_L        marker     blank … blank
    target    blank … blank    blank      b_1 … b_L

The bits b_i are fair and independent, drawn afresh for every episode and stream. Inputs are
one-hot over {0, 1, marker, blank} (4 inputs); targets are classes {0, 1, blank} (3 classes,
int64 labels) and every step carries a loss (``ce``, nats). The blank targets are certain given
the past (they hold until L steps after the marker), so the best achievable loss is 0: a learner
that remembers the bits makes no error anywhere. A learner that knows where it is in the episode
but not the bits pays ln 2 on each of the L recall steps: L ln 2 / (2L + 1) nats per step
("no bit memory"). All streams run their episodes in step, with the same L; with ``reset =
true`` (the default) each episode after the first starts a new sequence (reset mask true).

Curriculum (``curriculum = true``): the task learns the learner's loss through
:meth:`gradflow.Task.observe` (the trainer calls it after every step). It averages the loss over
the recall steps of each episode (in bits per recall step); after ``window`` episodes at the
current length, if the mean of the last ``window`` episodes is below ``threshold`` (0.15 bits by
default), the next episode is one bit longer (up to ``max_length``) and the count starts again.
The length reached, ``copy_length`` in :meth:`metrics`, is the task's metric. A task that is
never observed stays at its starting ``length``.

The bits come from a :class:`gradflow.CounterRNG` on the host; the task's state holds its two
integers, the episode (bits, position, length) and the curriculum's statistics, so a resumed run
continues exactly.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from pydantic import Field, model_validator

from gradflow import Backend, Batch, CounterRNG, GradflowError, Task, TaskOptions

#: input codes (one-hot positions) and target classes
MARKER, BLANK_INPUT = 2, 3
BLANK = 2


class CopyOptions(TaskOptions):
    length: int = Field(1, ge=1, description="L at the start: bits to copy per episode")
    max_length: int = Field(1000, ge=1, description="the curriculum stops at this L")
    curriculum: bool = Field(True, description="lengthen L when the recall loss is low")
    threshold: float = Field(0.15, gt=0, description="lengthen when the mean recall loss of "
                             "the last `window` episodes is below this (bits per recall step)")
    window: int = Field(10, ge=1, description="episodes averaged (and needed at each length) "
                        "before L can grow")
    reset: bool = Field(True, description="start a new sequence (reset mask) at each episode")

    @model_validator(mode="after")
    def _ordered(self) -> CopyOptions:
        if self.length > self.max_length:
            raise ValueError(f"length ({self.length}) must not exceed max_length "
                             f"({self.max_length})")
        return self


def no_memory_loss(length: int) -> float:
    """Mean loss per step (nats) of a learner that knows the phase but not the bits."""
    return length * math.log(2.0) / (2 * length + 1)


class CopyTask(Task):
    name = "copy"
    description = "copy L bits after a marker; L grows when the recall loss < 0.15 bits"
    Options = CopyOptions
    loss = "ce"

    def __init__(self, options: CopyOptions, backend: Backend, batch: int = 1,
                 seed: int = 0) -> None:
        super().__init__(options, backend, batch, seed)
        self.rng = self.host_rng()
        self.step_count = 0
        self.length = options.length
        self.phase = 0  # position in the episode of the next step, 0 … 2L
        self.bits = np.zeros((self.batch, self.length), dtype=np.int64)
        self.pending = -1  # phase of the last batch returned and not yet observed
        self.recall_sum = 0.0  # nats, over the recall steps of the current episode
        self.recall_steps = 0
        self.recent: list[float] = []  # bits per recall step of the last episodes at this L
        self.episodes = 0  # episodes completed at the current length

    @property
    def n_in(self) -> int:
        return 4

    @property
    def n_out(self) -> int:
        return 3

    @property
    def optimum(self) -> float:
        return 0.0

    @property
    def sequences(self) -> str:
        """Every stream starts its episodes at the same steps (with ``reset``, the default)."""
        return "aligned" if self.options.reset else "none"

    def reference_losses(self) -> dict[str, float]:
        """At the current length L."""
        return {"optimum": 0.0, "no bit memory": no_memory_loss(self.length)}

    def metrics(self) -> dict[str, float]:
        return {"copy_length": self.length}

    def next(self) -> Batch:
        length, phase = self.length, self.phase
        if phase == 0:
            raw = np.asarray(self.rng.bits((self.batch, length)))
            self.bits = (raw >> np.uint64(63)).astype(np.int64)
        if phase < length:
            x = self.bits[:, phase]
        else:
            x = np.full(self.batch, MARKER if phase == length else BLANK_INPUT)
        y = self.bits[:, phase - length - 1] if phase > length else \
            np.full(self.batch, BLANK, dtype=np.int64)
        reset = None
        if phase == 0 and self.step_count > 0 and self.options.reset:
            reset = self.backend.asarray(np.ones(self.batch, dtype=bool))
        self.pending = phase
        self.phase = phase + 1 if phase < 2 * length else 0
        self.step_count += 1
        be = self.backend
        return Batch(inputs=be.asarray(np.eye(4)[x]), targets=be.asarray(y.astype(np.int64)),
                     reset=reset)

    def observe(self, loss: Any) -> None:
        """Take the loss of the last batch (nats, mean over streams) into the curriculum."""
        phase, self.pending = self.pending, -1
        if phase < 0 or not self.options.curriculum:
            return
        length = self.length
        if phase > length:
            value = float(loss) if isinstance(loss, int | float) else \
                float(np.mean(self.backend.to_numpy(loss)))
            self.recall_sum += value
            self.recall_steps += 1
        if phase != 2 * length:
            return
        # the episode is over: its mean recall loss in bits per step (an episode none of whose
        # recall steps was observed does not count)
        if self.recall_steps:
            mean_bits = self.recall_sum / self.recall_steps / math.log(2.0)
            self.recent = [*self.recent, mean_bits][-self.options.window:]
            self.episodes += 1
        self.recall_sum, self.recall_steps = 0.0, 0
        if self.episodes >= self.options.window and length < self.options.max_length and \
                sum(self.recent) / len(self.recent) < self.options.threshold:
            self.length = length + 1
            self.bits = np.zeros((self.batch, self.length), dtype=np.int64)  # drawn at phase 0
            self.recent, self.episodes = [], 0

    def held_out(self) -> CopyTask:
        """An independent stream at the current length, without curriculum (its own seed)."""
        return self.independent_stream(length=self.length, curriculum=False,
                                       max_length=max(self.length, self.options.max_length))

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = self.rng.state_entries()
        state.update(step=self.step_count, length=self.length, phase=self.phase,
                     bits=self.bits.copy(), pending=self.pending, recall_sum=self.recall_sum,
                     recall_steps=self.recall_steps, episodes=self.episodes,
                     recent=np.asarray(self.recent, dtype=np.float64))
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        length, phase = int(state["length"]), int(state["phase"])
        bits = np.asarray(state["bits"], dtype=np.int64)
        if bits.shape != (self.batch, length) or not 0 <= phase <= 2 * length or \
                not 1 <= length <= self.options.max_length:
            raise GradflowError(f"task 'copy': saved episode (length {length}, bits of shape "
                                f"{bits.shape}) does not fit {self.batch} streams and "
                                f"max_length {self.options.max_length}")
        self.rng = CounterRNG.from_entries(self.rng.xp, state)
        self.step_count = int(state["step"])
        self.length, self.phase, self.bits = length, phase, bits.copy()
        self.pending = int(state["pending"])
        self.recall_sum = float(state["recall_sum"])
        self.recall_steps = int(state["recall_steps"])
        self.episodes = int(state["episodes"])
        self.recent = [float(v) for v in np.asarray(state["recent"], dtype=np.float64)]
