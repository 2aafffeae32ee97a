"""The `distant-brackets` task: recall a bracketed string after a stretch of random symbols.

A synthetic language of Ollivier, Tallec & Charpiat, "Training recurrent networks online without
backtracking" (arXiv 1507.07680, 2015), also used in the UORO paper (Tallec & Ollivier, ICLR
2018); its parameters are written (s, r_min, r_max, n), the standard setting (1, 5, 5, 10). Our
reading of the definition (the paper's text was not at hand; this reading reproduces its stated
best loss, 1.661 bits/char, exactly): every stream is an endless sequence of independent lines

    ( u ) v ( u ) ⏎

* u: ``save`` = s symbols, each uniform on an alphabet of ``alphabet`` = n symbols;
* v: r symbols, uniform on the same alphabet, with r uniform on {r_min, ..., r_max}
  (``range`` = r_min and ``range_max`` = r_max; by default r_max = r_min, a fixed distance);
* the second bracket repeats u: predicting it needs a memory of s symbols over r + 3 steps.

The vocabulary is the n symbols (digits 0-9, then a-z, A-Z), "(", ")" and the newline: n + 3
classes; x_t is the one-hot code of character c_t, the target the class of c_{t+1} (loss ``ce``
in nats). No resets: the lines follow each other as in a text.

Best achievable loss. Given the past, the uncertain characters are the s + r symbols of u and v
(ln n each) and the end of v: after k ≥ r_min symbols of v the next character is "(" with
probability P(r = k | r ≥ k) = 1 / (r_max − k + 1). A line costs (s + r) ln n nats plus, summed
over its v, ln R (R = r_max − r_min + 1) whatever r is; everything else ("(", ")", the repeated
u, the newline, the "(" that starts the next line) is determined. With E r = (r_min + r_max) / 2
and 2s + E r + 5 characters per line on average, the entropy rate is

    [(s + E r) ln n + ln R] / (2s + E r + 5)   nats per character,

for (1, 5, 5, 10): 6 log2(10) / 12 = ½ log2(10) = 1.66096 bits/char. A predictor that cannot
carry u across v pays s ln n more per line (1.9378 bits/char for the defaults).

Each stream starts at the beginning of a line. The symbols come from a :class:`gradflow.CounterRNG`
on the host: the first draw gives every stream the s + r_max symbols of u and v, and, when r
varies, the next one every stream's r; at each step where the line of at least one stream ends,
the next draws (the same one or two) give every stream a new line, which the streams whose line
ended take. The position of the stream is the generator's counter plus each stream's current
line and position in it; the task's state is that position, so a resumed stream continues
exactly. The steps are computed a chunk at a time (:class:`gradflow.ChunkedStream`): the lines
of all the draws a chunk can use from :meth:`gradflow.CounterRNG.bits_at`, then the lines of every
stream laid end to end (:class:`~gradflow_plugins.tasks.segments.Segments`, shared with `anbn`):
the same stream as one step at a time.
"""

from __future__ import annotations

import math
from typing import Any

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

#: (counter, line, length, pos): the generator's counter, each stream's current line (padded
#: with newlines to the longest line), its length and the stream's position in it
Position = tuple[int, np.ndarray, np.ndarray, np.ndarray]
SYMBOLS = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


class DistantBracketsOptions(TaskOptions):
    save: int = Field(1, ge=1, description="s: symbols inside the brackets, to be recalled")
    range: int = Field(5, ge=0, description="r_min: fewest random symbols between the brackets")
    range_max: int | None = Field(None, ge=0, description="r_max: most random symbols between "
                                  "the brackets (default: range, a fixed distance)")
    alphabet: int = Field(10, ge=1, le=len(SYMBOLS), description="n: number of symbols")

    @model_validator(mode="after")
    def _ordered(self) -> DistantBracketsOptions:
        if self.range_max is not None and self.range_max < self.range:
            raise ValueError(f"range_max ({self.range_max}) must not be below range "
                             f"({self.range})")
        return self


def reference_losses(save: int = 1, r_min: int = 5, r_max: int = 5,
                     alphabet: int = 10) -> dict[str, float]:
    """Mean loss per character (nats) of the best predictor (``"optimum"``), of the best one that
    forgets u across v (``"forgets u"``) and of the best memoryless one (``"unigram"``)."""
    mean_r = (r_min + r_max) / 2
    length = 2 * save + mean_r + 5
    log_n, log_r = math.log(alphabet), math.log(r_max - r_min + 1)
    optimum = ((save + mean_r) * log_n + log_r) / length
    forgets = ((2 * save + mean_r) * log_n + log_r) / length
    # per line: 2s + E r symbols spread uniformly on n, two "(", two ")", one newline
    counts = [(2 * save + mean_r) / alphabet] * alphabet + [2.0, 2.0, 1.0]
    unigram = -sum(c / length * math.log(c / length) for c in counts)
    return {"optimum": optimum, "forgets u": forgets, "unigram": unigram}


class DistantBracketsTask(Task):
    name = "distant-brackets"
    description = "lines ( u ) v ( u ): recall u across v (save 1, range 5, alphabet 10; 1.661)"
    Options = DistantBracketsOptions
    loss = "ce"

    def __init__(self, options: DistantBracketsOptions, backend: Backend, batch: int = 1,
                 seed: int = 0) -> None:
        super().__init__(options, backend, batch, seed)
        self.save, self.alphabet = options.save, options.alphabet
        self.r_min = options.range
        self.r_max = options.range if options.range_max is None else options.range_max
        self.open, self.close, self.newline = self.alphabet, self.alphabet + 1, self.alphabet + 2
        self.width = 2 * self.save + self.r_max + 5
        self.draws_per_line = 2 if self.r_max > self.r_min else 1  # symbols, then r
        self.rng = self.host_rng()
        line, length = self._lines(*(drawn[0] for drawn in self._draw_lines(0, 1)))
        self.stream = ChunkedStream(backend, self.batch, self.n_in + 1, self._draw,
                                    (self.draws_per_line, line, length,
                                     np.zeros(self.batch, dtype=np.int64)))

    @property
    def n_in(self) -> int:
        return self.alphabet + 3

    @property
    def n_out(self) -> int:
        return self.alphabet + 3

    @property
    def characters(self) -> str:
        """Class k is character ``characters[k]``."""
        return SYMBOLS[: self.alphabet] + "()\n"

    def reference_losses(self) -> dict[str, float]:
        return reference_losses(self.save, self.r_min, self.r_max, self.alphabet)

    @property
    def optimum(self) -> float:
        return self.reference_losses()["optimum"]

    def _draw_lines(self, counter: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        """The (count, B, s + r_max) symbols of u and v, and the (count, B) r, of the lines
        drawn for every stream by line draws number 0 … count − 1 after ``counter`` (the
        symbols, then r if it varies)."""
        batch, d = self.batch, self.draws_per_line
        raw = np.asarray(self.rng.bits_at((batch, self.save + self.r_max), counter, count, d))
        symbols = (raw % np.uint64(self.alphabet)).astype(np.int64)
        if d == 1:
            return symbols, np.full((count, batch), self.r_min, dtype=np.int64)
        raw = np.asarray(self.rng.bits_at((batch,), counter + 1, count, d))
        return symbols, (raw % np.uint64(self.r_max - self.r_min + 1)).astype(np.int64) \
            + self.r_min

    def _lines(self, symbols: np.ndarray, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The lines ( u ) v ( u ) ⏎ (..., width), padded with newlines, and their lengths, of
        the symbols (..., s + r_max) of u and v (v: the first r after u) and r (...)."""
        s = self.save
        u, v = symbols[..., :s], symbols[..., s:]
        head = np.full((*r.shape, self.width), self.newline, dtype=np.int64)
        head[..., 0] = self.open
        head[..., 1:1 + s] = u
        head[..., 1 + s] = self.close
        head[..., 2 + s:2 + s + self.r_max] = v
        mark = np.ones((*r.shape, 1), dtype=np.int64)
        tail = np.concatenate([self.open * mark, u, self.close * mark, self.newline * mark],
                              axis=-1)
        j = np.arange(self.width)
        start = (2 + s + r)[..., None]  # where the second "(" goes
        tail_at = np.take_along_axis(tail, np.clip(j - start, 0, s + 2), axis=-1)
        return np.where(j < start, head, tail_at), 2 * s + r + 5

    def _draw(self, position: Position, step: int, steps: int) -> Chunk:
        """The ``steps`` steps after ``position`` (see the module docstring)."""
        counter, line, length, pos = position
        s, shortest = self.save, 2 * self.save + self.r_min + 5
        symbols, r = self._draw_lines(counter, Segments.max_events(self.batch, steps, shortest))
        segments = Segments(pos, length, 2 * s + r + 5, steps, shortest)
        # the current lines' own symbols and r (those of v past r are not read), then the
        # lines of every segment of the chunk
        now = np.concatenate([line[:, 1:1 + s], line[:, 2 + s:2 + s + self.r_max]], axis=1)
        lines, sizes = self._lines(segments.pick(now, symbols),
                                   segments.pick(length - 2 * s - 5, r))
        segment, at = segments.locate(np.arange(steps + 1)[:, None])
        codes = lines[segment, at]  # (steps + 1, B): c_t, then the last target

        def position_at(k: int) -> Position:
            segment, at = segments.locate(k)
            return (counter + self.draws_per_line * segments.events_before(k), lines[segment],
                    sizes[segment], at)

        return Chunk(np.eye(self.n_in)[codes[:-1]], codes[1:], position_at)

    def next(self) -> Batch:
        return self.stream.next()

    def held_out(self) -> DistantBracketsTask:
        """An independent stream (its own seed, derived from this task's), same options."""
        return self.independent_stream()

    def state_dict(self) -> dict[str, Any]:
        counter, line, length, pos = self.stream.position
        state: dict[str, Any] = CounterRNG(self.rng.xp, self.rng.seed, counter).state_entries()
        state.update(step=self.stream.step, line=line.copy(), length=length.copy(),
                     pos=pos.copy())
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        line = np.asarray(state["line"], dtype=np.int64)
        length = np.asarray(state["length"], dtype=np.int64)
        pos = np.asarray(state["pos"], dtype=np.int64)
        shape = (self.batch, self.width)
        if line.shape != shape or length.shape != (self.batch,) or pos.shape != (self.batch,):
            raise GradflowError(f"task 'distant-brackets': saved lines of shape {line.shape} "
                                f"do not match {shape} (streams, longest line)")
        if (pos < 0).any() or (pos >= length).any() or (length > self.width).any() or \
                line.min() < 0 or line.max() >= self.n_in:
            raise GradflowError("task 'distant-brackets': saved state does not fit these "
                                "options")
        self.rng = CounterRNG.from_entries(self.rng.xp, state)
        self.stream.seek((self.rng.counter, line.copy(), length.copy(), pos.copy()),
                         int(state["step"]))
