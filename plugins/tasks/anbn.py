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

Each stream starts at the beginning of a block (with S in the default format). The block lengths
come from a :class:`gradflow.CounterRNG` on the host; the task's state is its two integers plus
each stream's current n and position within its block (counting the delimiters: 0 is S in the
default format, the first a otherwise), so a resumed stream continues exactly.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from gradflow import Backend, Batch, CounterRNG, GradflowError, Task, TaskOptions

A, B = 0, 1  # the delimiters, if any, are classes 2 (S or ⏎) and 3 (E)
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
        self.step_count = 0
        self.n = self._draw_n()
        self.pos = np.zeros(self.batch, dtype=np.int64)

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

    def _draw_n(self) -> np.ndarray:
        """(B,) block sizes, uniform on {n_min, ..., n_max}."""
        raw = np.asarray(self.rng.bits((self.batch,)))
        span = np.uint64(self.n_max - self.n_min + 1)
        return (raw % span).astype(np.int64) + self.n_min

    def _length(self, n: np.ndarray) -> np.ndarray:
        return 2 * n + self.lead + self.tail

    def _char(self, pos: np.ndarray) -> np.ndarray:
        """Character codes at positions ``pos`` (delimiters included) of the current blocks."""
        first_b = self.lead + self.n
        return np.select([pos < self.lead, pos < first_b, pos < first_b + self.n],
                         [self.start, A, B], self.end)

    def next(self) -> Batch:
        length = self._length(self.n)
        x = self._char(self.pos)
        after = self.pos + 1
        done = after >= length
        # the character after a block is the first of the next one: S, or a (n_min ≥ 1)
        y = np.where(done, self.start if self.lead else A, self._char(after))
        if done.any():
            self.n = np.where(done, self._draw_n(), self.n)
        self.pos = np.where(done, 0, after)
        self.step_count += 1
        inputs = np.eye(self.n_in)[x]
        be = self.backend
        return Batch(inputs=be.asarray(inputs), targets=be.asarray(y.astype(np.int64)))

    def held_out(self) -> AnbnTask:
        """An independent stream (its own seed, derived from this task's), same options."""
        return self.independent_stream()

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = self.rng.state_entries()
        state.update(step=self.step_count, n=self.n.copy(), pos=self.pos.copy())
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
        self.step_count = int(state["step"])
        self.n, self.pos = n.copy(), pos.copy()
