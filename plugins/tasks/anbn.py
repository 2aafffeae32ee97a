"""The `anbn` task: predict the next character of a stream of blocks a^n b^n.

The synthetic language of Ollivier, Tallec & Charpiat, "Training recurrent networks online
without backtracking" (arXiv 1507.07680, 2015), also used by Tallec & Ollivier (UORO, ICLR 2018)
as ``anbn(1, 32)``. Each stream is an endless sequence of independent blocks

    a^n b^n ⏎        n uniform in {n_min, ..., n_max}   (1 and 32 by default)

(``n`` letters a, ``n`` letters b and, with ``newline = true`` (the default), a newline that ends
the block, as a line of a text). The input x_t is the one-hot code of character c_t, the target the
class of c_{t+1} (classes a, b, ⏎; loss ``ce`` in nats, bits per character = loss / ln 2). There
are no resets: the network must find the blocks itself, as in a text.

Best achievable loss. Given the past, the only uncertain characters are the ends of the runs of
a's: after the k-th a of a block (k ≥ n_min) the next character is b with probability
P(n = k | n ≥ k) = 1 / (n_max − k + 1), and a otherwise. Everything else is determined: the b's
must match the a's in number, then comes the newline, then the a that starts the next block.
The losses of one block multiply out to P(n), so every block costs exactly ln K nats,
K = n_max − n_min + 1, whatever its n; a block has 2 E[n] + 1 = n_min + n_max + 1 characters on
average. The entropy rate, the best mean loss per character, is therefore

    ln K / (n_min + n_max + 1)   nats (newline = true),   ln K / (n_min + n_max)   (newline = false)

For (1, 32): 5 bits / 34 characters = 0.14706 bits/char (0.15152 without the newline). The
figure 0.142857 = 1/7 bits/char quoted for anbn(1, 32) would need 35 characters per block on
average; docs/tasks.md discusses the discrepancy.

Each stream starts at the beginning of a block. The block lengths come from a
:class:`gradflow.CounterRNG` on the host; the task's state is its two integers plus each stream's
current n and position, so a resumed stream continues exactly.
"""

from __future__ import annotations

import math
from typing import Any

import array_api_compat.numpy as hxp
import numpy as np
from pydantic import Field, model_validator

from gradflow import Backend, Batch, CounterRNG, GradflowError, Task, TaskOptions

A, B, NEWLINE = 0, 1, 2


class AnbnOptions(TaskOptions):
    n_min: int = Field(1, ge=1, description="smallest n of a block a^n b^n")
    n_max: int = Field(32, ge=1, description="largest n of a block a^n b^n")
    newline: bool = Field(True, description="end every block with a newline character")

    @model_validator(mode="after")
    def _ordered(self) -> AnbnOptions:
        if self.n_min > self.n_max:
            raise ValueError(f"n_min ({self.n_min}) must not exceed n_max ({self.n_max})")
        return self


def optimum(n_min: int = 1, n_max: int = 32, newline: bool = True) -> float:
    """Entropy rate of the stream in nats per character: ln K / (n_min + n_max + [newline])."""
    return math.log(n_max - n_min + 1) / (n_min + n_max + int(newline))


def unigram(n_min: int = 1, n_max: int = 32, newline: bool = True) -> float:
    """Loss (nats) of the best memoryless predictor: the entropy of the character frequencies."""
    mean_n = (n_min + n_max) / 2
    length = 2 * mean_n + int(newline)
    probs = [mean_n / length, mean_n / length] + ([1 / length] if newline else [])
    return -sum(p * math.log(p) for p in probs)


class AnbnTask(Task):
    name = "anbn"
    description = "blocks a^n b^n, n uniform in 1..32 (next-character prediction; 0.147 bits/char)"
    Options = AnbnOptions
    loss = "ce"

    def __init__(self, options: AnbnOptions, backend: Backend, batch: int = 1,
                 seed: int = 0) -> None:
        super().__init__(options, backend, batch, seed)
        self.n_min, self.n_max, self.newline = options.n_min, options.n_max, options.newline
        self.rng = CounterRNG(hxp, seed)
        self.step_count = 0
        self.n = self._draw_n()
        self.pos = np.zeros(self.batch, dtype=np.int64)

    @property
    def n_in(self) -> int:
        return 3 if self.newline else 2

    @property
    def n_out(self) -> int:
        return self.n_in

    @property
    def characters(self) -> str:
        """Class k is character ``characters[k]``."""
        return "ab\n"[: self.n_in]

    @property
    def optimum(self) -> float:
        return optimum(self.n_min, self.n_max, self.newline)

    def reference_losses(self) -> dict[str, float]:
        return {"optimum": self.optimum,
                "unigram": unigram(self.n_min, self.n_max, self.newline)}

    def _draw_n(self) -> np.ndarray:
        """(B,) block sizes, uniform on {n_min, ..., n_max}."""
        raw = np.asarray(self.rng.bits((self.batch,)))
        span = np.uint64(self.n_max - self.n_min + 1)
        return (raw % span).astype(np.int64) + self.n_min

    def _length(self) -> np.ndarray:
        return 2 * self.n + int(self.newline)

    def _char(self, pos: np.ndarray) -> np.ndarray:
        """Character codes at positions ``pos`` of the streams' current blocks."""
        return np.where(pos < self.n, A, np.where(pos < 2 * self.n, B, NEWLINE))

    def next(self) -> Batch:
        length = self._length()
        x = self._char(self.pos)
        after = self.pos + 1
        # the character after a block is the a that starts the next one (n_min ≥ 1)
        y = np.where(after < length, self._char(after), A)
        done = after >= length
        if done.any():
            self.n = np.where(done, self._draw_n(), self.n)
        self.pos = np.where(done, 0, after)
        self.step_count += 1
        inputs = np.eye(self.n_in)[x]
        be = self.backend
        return Batch(inputs=be.asarray(inputs), targets=be.asarray(y.astype(np.int64)))

    def held_out(self) -> AnbnTask:
        """An independent stream (its own seed, derived from this task's), same options."""
        seed = CounterRNG(hxp, self.seed).spawn(0x0E1A).seed
        return AnbnTask(self.options, self.backend, self.batch, seed)

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {f"rng.{k}": v for k, v in self.rng.get_state().items()}
        state.update(step=self.step_count, n=self.n.copy(), pos=self.pos.copy())
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        n = np.asarray(state["n"], dtype=np.int64)
        pos = np.asarray(state["pos"], dtype=np.int64)
        if n.shape != (self.batch,) or pos.shape != (self.batch,):
            raise GradflowError(f"task 'anbn': saved state is for {n.shape[0]} streams, this "
                                f"task has {self.batch}")
        if n.min() < self.n_min or n.max() > self.n_max or pos.min() < 0 or \
                (pos >= 2 * n + int(self.newline)).any():
            raise GradflowError("task 'anbn': saved blocks do not fit these options "
                                f"(n_min={self.n_min}, n_max={self.n_max}, "
                                f"newline={self.newline})")
        self.rng.set_state({"seed": state["rng.seed"], "counter": state["rng.counter"]})
        self.step_count = int(state["step"])
        self.n, self.pos = n.copy(), pos.copy()
