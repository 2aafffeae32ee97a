"""The `anbn` task: predict the next character of a stream of blocks a^n b^n.

The synthetic language of Ollivier, Tallec & Charpiat, "Training recurrent networks online
without backtracking" (arXiv 1507.07680, 2015), also used by Tallec & Ollivier (UORO, ICLR 2018)
as ``anbn(1, 32)``. Each stream is an endless sequence of independent blocks, n uniform in
{n_min, ..., n_max} (1 and 32 by default), in one of three formats (option ``delimiters``):

    "start-end" (default)   S a^n b^n E   a start and an end marker, the format of Gers &
                                          Schmidhuber, "LSTM recurrent networks learn simple
                                          context-free and context-sensitive languages" (IEEE
                                          Trans. Neural Networks 12(6), 2001); classes a, b, S, E
    "newline"               a^n b^n ⏎     each block a line of a text; classes a, b, ⏎
    "none"                  a^n b^n       blocks back to back; classes a, b

The input x_t is the one-hot code of character c_t, the target the class of c_{t+1} (loss ``ce``
in nats, bits per character = loss / ln 2). There are no resets: the network must find the
blocks itself, as in a text.

Best achievable loss. Given the past, the only uncertain characters are the ends of the runs of
a's: after the k-th a of a block (k ≥ n_min) the next character is b with probability
P(n = k | n ≥ k) = 1 / (n_max − k + 1), and a otherwise. Everything else is determined: the a
after S (n_min ≥ 1), the b's, which match the a's in number, the end marker after them, and the
first character of the next block. The losses of one block multiply out to P(n) = 1 / K, so every
block costs exactly ln K nats, K = n_max − n_min + 1, whatever its n; a block has
2 E[n] + d = n_min + n_max + d characters on average, d the number of delimiters per block
(2, 1, 0). The entropy rate, the best mean loss per character, is therefore

    ln K / (n_min + n_max + d)   nats per character.

For (1, 32): 5 bits / 35 characters = 1/7 = 0.142857 bits/char with start and end markers (the
figure quoted for anbn(1, 32)), 5/34 = 0.14706 with the newline, 5/33 = 0.15152 without
delimiters. docs/tasks.md tabulates these and the memoryless levels.

Each stream starts at the beginning of a block (with S in the default format). The block sizes
come from a :class:`gradflow.CounterRNG` on the host: draw 0 gives every stream its first n, and
at each step where the block of at least one stream ends, the next draw gives every stream a new
n, which the streams whose block ended take (element b of the draw for stream b). The position of
the stream is the generator's counter plus each stream's current n and position within its block
(counting the delimiters: 0 is S in the default format, the first a otherwise); the task's state
is that position, so a resumed stream continues exactly. The steps are computed a chunk at a
time (:class:`gradflow.ChunkedStream`): the n of all the draws a chunk can use from one
:meth:`gradflow.CounterRNG.bits_at`, then the blocks of every stream laid end to end
(:class:`~gradflow_plugins.tasks.segments.Segments`, shared with `distant-brackets`): the same
stream as one step at a time.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
from gradflow_plugins.tasks.segments import Segments
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

A, B = 0, 1  # the delimiters, if any, are classes 2 (S or ⏎) and 3 (E)
#: (counter, n, pos): the generator's counter, each stream's block size and position in it
Position = tuple[int, np.ndarray, np.ndarray]
Delimiters = Literal["start-end", "newline", "none"]
#: (characters before, characters after) the a^n b^n of a block, and the class characters
FORMATS: dict[str, tuple[int, int, str]] = {
    "start-end": (1, 1, "abSE"),
    "newline": (0, 1, "ab\n"),
    "none": (0, 0, "ab"),
}


def _format(delimiters: str) -> tuple[int, int, str]:
    try:
        return FORMATS[delimiters]
    except KeyError:
        raise ValueError(f"delimiters must be one of {', '.join(map(repr, FORMATS))}, "
                         f"not {delimiters!r}") from None


class AnbnOptions(TaskOptions):
    n_min: int = Field(1, ge=1, description="smallest n of a block a^n b^n")
    n_max: int = Field(32, ge=1, description="largest n of a block a^n b^n")
    delimiters: Delimiters = Field(
        "start-end", description="start-end: blocks S a^n b^n E; newline: a^n b^n ⏎; "
                                 "none: a^n b^n back to back")

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        if isinstance(data, dict) and "newline" in data:
            raise ValueError("option 'newline' was replaced by 'delimiters': newline = true is "
                             "delimiters = 'newline', newline = false is delimiters = 'none' "
                             "(the default is now 'start-end', blocks S a^n b^n E)")
        return data

    @model_validator(mode="after")
    def _ordered(self) -> AnbnOptions:
        if self.n_min > self.n_max:
            raise ValueError(f"n_min ({self.n_min}) must not exceed n_max ({self.n_max})")
        return self


def optimum(n_min: int = 1, n_max: int = 32, delimiters: str = "start-end") -> float:
    """Entropy rate of the stream in nats per character: ln K / (n_min + n_max + d), with
    K = n_max − n_min + 1 and d the delimiters per block (start-end 2, newline 1, none 0)."""
    lead, tail, _ = _format(delimiters)
    return math.log(n_max - n_min + 1) / (n_min + n_max + lead + tail)


def unigram(n_min: int = 1, n_max: int = 32, delimiters: str = "start-end") -> float:
    """Loss (nats) of the best memoryless predictor: the entropy of the character frequencies."""
    lead, tail, _ = _format(delimiters)
    mean_n = (n_min + n_max) / 2
    length = 2 * mean_n + lead + tail
    probs = [mean_n / length, mean_n / length] + [1 / length] * (lead + tail)
    return -sum(p * math.log(p) for p in probs)


class AnbnTask(Task):
    name = "anbn"
    description = ("blocks S a^n b^n E, n uniform in 1..32 (next-character prediction; "
                   "1/7 = 0.143 bits/char)")
    Options = AnbnOptions
    loss = "ce"

    def __init__(self, options: AnbnOptions, backend: Backend, batch: int = 1,
                 seed: int = 0) -> None:
        super().__init__(options, backend, batch, seed)
        self.n_min, self.n_max = options.n_min, options.n_max
        self.delimiters = options.delimiters
        self.lead, self.tail, self._characters = _format(self.delimiters)
        self.start, self.end = 2, 2 + self.lead  # classes of S (or unused) and of E or ⏎
        self.rng = self.host_rng()
        self.stream = ChunkedStream(backend, self.batch, self.n_in + 1, self._draw,
                                    (1, self._draw_n(0, 1)[0], np.zeros(self.batch, np.int64)))

    @property
    def n_in(self) -> int:
        return 2 + self.lead + self.tail

    @property
    def n_out(self) -> int:
        return self.n_in

    @property
    def characters(self) -> str:
        """Class k is character ``characters[k]``."""
        return self._characters

    @property
    def optimum(self) -> float:
        return optimum(self.n_min, self.n_max, self.delimiters)

    def reference_losses(self) -> dict[str, float]:
        return {"optimum": self.optimum,
                "unigram": unigram(self.n_min, self.n_max, self.delimiters)}

    def _draw_n(self, counter: int, count: int) -> np.ndarray:
        """(count, B) block sizes, uniform on {n_min, ..., n_max}, from the draws at counters
        counter, counter + 1, ...: row k is what the generator's draw number counter + k gives
        every stream."""
        raw = np.asarray(self.rng.bits_at((self.batch,), counter, count))
        span = np.uint64(self.n_max - self.n_min + 1)
        return (raw % span).astype(np.int64) + self.n_min

    def _length(self, n: np.ndarray | int) -> Any:
        return 2 * n + self.lead + self.tail

    def _char(self, pos: np.ndarray, n: np.ndarray) -> np.ndarray:
        """Character codes at positions ``pos`` (delimiters included) of blocks of size n."""
        first_b = self.lead + n
        return np.select([pos < self.lead, pos < first_b, pos < first_b + n],
                         [self.start, A, B], self.end)

    def _draw(self, position: Position, step: int, steps: int) -> Chunk:
        """The ``steps`` steps after ``position`` (see the module docstring)."""
        counter, n, pos = position
        shortest = int(self._length(self.n_min))
        drawn = self._draw_n(counter, Segments.max_events(self.batch, steps, shortest))
        blocks = Segments(pos, self._length(n), self._length(drawn), steps, shortest)
        sizes = blocks.pick(n, drawn)
        block, at = blocks.locate(np.arange(steps + 1)[:, None])
        codes = self._char(at, sizes[block])  # (steps + 1, B): c_t, then the last target

        def position_at(k: int) -> Position:
            block, at = blocks.locate(k)
            return counter + blocks.events_before(k), sizes[block], at

        return Chunk(np.eye(self.n_in)[codes[:-1]], codes[1:], position_at)

    def next(self) -> Batch:
        return self.stream.next()

    def held_out(self) -> AnbnTask:
        """An independent stream (its own seed, derived from this task's), same options."""
        return self.independent_stream()

    def state_dict(self) -> dict[str, Any]:
        counter, n, pos = self.stream.position
        state: dict[str, Any] = CounterRNG(self.rng.xp, self.rng.seed, counter).state_entries()
        state.update(step=self.stream.step, n=n.copy(), pos=pos.copy())
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        n = np.asarray(state["n"], dtype=np.int64)
        pos = np.asarray(state["pos"], dtype=np.int64)
        if n.shape != (self.batch,) or pos.shape != (self.batch,):
            raise GradflowError(f"task 'anbn': saved state is for {n.shape[0]} streams, this "
                                f"task has {self.batch}")
        if n.min() < self.n_min or n.max() > self.n_max or pos.min() < 0 or \
                (pos >= self._length(n)).any():
            raise GradflowError("task 'anbn': saved blocks do not fit these options "
                                f"(n_min={self.n_min}, n_max={self.n_max}, "
                                f"delimiters={self.delimiters!r})")
        self.rng = CounterRNG.from_entries(self.rng.xp, state)
        self.stream.seek((self.rng.counter, n.copy(), pos.copy()), int(state["step"]))
