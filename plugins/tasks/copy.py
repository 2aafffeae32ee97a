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

The bits come from a :class:`gradflow.CounterRNG` on the host: each episode's first step makes one
draw of (B, L) bits. The position of the stream is the generator's counter, the phase of the
next step in its episode and the current episode's bits (at phase 0, those of the episode
before, which the next step replaces); the task's state holds that position, the length and the
curriculum's statistics, so a resumed run continues exactly. The steps are computed a chunk at a
time (:class:`gradflow.ChunkedStream`) at the current length: the bits of all the episodes a
chunk touches from one :meth:`gradflow.CounterRNG.bits_at`, laid out as episodes and sliced. The
curriculum changes the length only at the end of an episode (in :meth:`CopyTask.observe` of its
last step); it then drops the steps computed ahead at the old length and continues from the
position reached, so the next episode is drawn at the new length from the same counter as one
step at a time: chunks never change when a change of length takes effect.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from pydantic import Field, model_validator

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

#: input codes (one-hot positions) and target classes
MARKER, BLANK_INPUT = 2, 3
BLANK = 2
#: (counter, phase, bits): the generator's counter, the phase of the next step in its episode
#: (0 … 2L) and the (B, L) bits of the current episode
Position = tuple[int, int, np.ndarray]


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
        self.length = options.length
        self.stream = ChunkedStream(backend, self.batch, self.n_in + 1, self._draw,
                                    self._episode_start(0))
        self.observed = True  # the last batch returned was observed (or none was returned)
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

    def _episode_start(self, counter: int) -> Position:
        """The position before an episode at the current length (no bits drawn yet)."""
        return counter, 0, np.zeros((self.batch, self.length), dtype=np.int64)

    def _draw(self, position: Position, step: int, steps: int) -> Chunk:
        """The ``steps`` steps after ``position`` at the current length (module docstring)."""
        counter, phase, bits = position
        length, batch = self.length, self.batch
        period = 2 * length + 1
        episodes = (phase + steps - 1) // period + 1  # touched by the chunk, the current first
        ongoing = 1 if phase > 0 else 0  # the current episode has drawn its bits already
        drawn = np.asarray(self.rng.bits_at((batch, length), counter, episodes - ongoing))
        table = np.concatenate([bits[None, :, :]] * ongoing +
                               [(drawn >> np.uint64(63)).astype(np.int64)])  # (E, B, L)
        marks = np.ones((episodes, batch, 1), dtype=np.int64)
        inputs = np.concatenate([table, MARKER * marks, BLANK_INPUT * marks.repeat(length, 2)],
                                axis=2)  # (E, B, 2L + 1): each episode's inputs
        targets = np.concatenate([BLANK * marks.repeat(length + 1, 2), table], axis=2)
        window = slice(phase, phase + steps)  # the chunk in the episodes laid end to end
        x = inputs.transpose(0, 2, 1).reshape(episodes * period, batch)[window]
        y = targets.transpose(0, 2, 1).reshape(episodes * period, batch)[window]
        k = np.arange(steps)
        starts = ((phase + k) % period == 0) & (step + k > 0) & self.options.reset
        resets = np.repeat(starts[:, None], batch, axis=1)

        def position_at(k: int) -> Position:
            if k == 0:
                return position
            episode = (phase + k - 1) // period  # that of the last step handed out
            return counter + episode + 1 - ongoing, (phase + k) % period, table[episode]

        return Chunk(np.eye(4)[x], y, position_at, resets)

    def next(self) -> Batch:
        self.observed = False
        return self.stream.next()

    @property
    def pending(self) -> int:
        """The phase of the last batch returned if it was not observed yet, else −1."""
        if self.observed:
            return -1
        return (self.stream.start[1] + self.stream.offset - 1) % (2 * self.length + 1)

    def observe(self, loss: Any) -> None:
        """Take the loss of the last batch (nats, mean over streams) into the curriculum."""
        phase, self.observed = self.pending, True
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
            # the steps computed ahead are at the old length: continue from the end of the
            # episode, where the next one draws its bits at the new length
            self.stream.seek(self._episode_start(self.stream.position[0]), self.stream.step)
            self.recent, self.episodes = [], 0

    def held_out(self) -> CopyTask:
        """An independent stream at the current length, without curriculum (its own seed)."""
        return self.independent_stream(length=self.length, curriculum=False,
                                       max_length=max(self.length, self.options.max_length))

    def state_dict(self) -> dict[str, Any]:
        counter, phase, bits = self.stream.position
        state: dict[str, Any] = CounterRNG(self.rng.xp, self.rng.seed, counter).state_entries()
        state.update(step=self.stream.step, length=self.length, phase=phase, bits=bits.copy(),
                     pending=self.pending, recall_sum=self.recall_sum,
                     recall_steps=self.recall_steps, episodes=self.episodes,
                     recent=np.asarray(self.recent, dtype=np.float64))
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        length, phase = int(state["length"]), int(state["phase"])
        bits = np.asarray(state["bits"], dtype=np.int64)
        pending = int(state["pending"])
        if bits.shape != (self.batch, length) or not 0 <= phase <= 2 * length or \
                not 1 <= length <= self.options.max_length:
            raise GradflowError(f"task 'copy': saved episode (length {length}, bits of shape "
                                f"{bits.shape}) does not fit {self.batch} streams and "
                                f"max_length {self.options.max_length}")
        if pending not in (-1, (phase - 1) % (2 * length + 1)):
            raise GradflowError(f"task 'copy': saved state has the last step at phase "
                                f"{pending}, the next at phase {phase}")
        self.rng = CounterRNG.from_entries(self.rng.xp, state)
        self.length = length
        self.stream.seek((self.rng.counter, phase, bits.copy()), int(state["step"]))
        self.observed = pending < 0
        self.recall_sum = float(state["recall_sum"])
        self.recall_steps = int(state["recall_steps"])
        self.episodes = int(state["episodes"])
        self.recent = [float(v) for v in np.asarray(state["recent"], dtype=np.float64)]
