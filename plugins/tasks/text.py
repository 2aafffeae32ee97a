"""The `text` task: predict the next character of a user's UTF-8 text file.

The vocabulary is the set of characters of the file (sorted by code point), V of them; the input x_t
is the one-hot code of character c_t and the target the class of c_{t+1} (cross-entropy in nats;
bits per character = loss / ln 2). B streams read the same text from spread offsets (stream b starts
at character ⌊b·L/B⌋ of the L training characters, taken mod L − 1: the last character has no
target) and wrap around at the end; the step after a wrap starts a new sequence (reset mask true for
that stream). The best possible loss is unknown; the unigram entropy of the training text,
−Σ_c p_c ln p_c, is the memoryless reference level (a model that ignores the past cannot do better
than it).

Option ``held_out`` keeps the last fraction of the file out of training: :meth:`held_out` then
reads it (one stream per training stream, from spread offsets) for evaluation.

The stream is deterministic (the seed does not change it). Its position is the streams'
positions in the text and their pending resets: after a step from position p, the next is p + 1,
or 0 when p + 2 reaches the end of the L characters (a wrap: the next step resets), so stream b at
step t (from 0) reads position (p_b + t) mod (L − 1). The steps are computed a chunk at a time
from that formula (:class:`gradflow.ChunkedStream`). The state is the position of the steps
handed out and the file's SHA-256, which is checked when a state is loaded so that a resumed run
cannot silently read a different file.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from gradflow import Backend, Batch, Chunk, ChunkedStream, GradflowError, Task, TaskOptions

#: (positions, pending resets): each stream's position in the text and whether its next step
#: starts a new sequence
Position = tuple[np.ndarray, np.ndarray]


class TextOptions(TaskOptions):
    path: str = Field(description="a UTF-8 text file (the vocabulary is its set of characters)")
    held_out: float = Field(
        0.0, ge=0.0, lt=1.0,
        description="fraction at the end of the file kept out of training for evaluation",
    )


class TextError(GradflowError):
    """The text file cannot be used (missing, unreadable, empty, not UTF-8, too short)."""


def read_text(path: str) -> tuple[str, str]:
    """The decoded text of ``path`` (a UTF-8 byte-order mark is dropped) and its SHA-256.

    Raises :class:`TextError` with one line for a missing, unreadable, empty or non-UTF-8 file.
    """
    where = f"task 'text': {path!r}"
    p = Path(os.path.expanduser(path))
    if not p.exists():
        raise TextError(f"{where}: no such file")
    if p.is_dir():
        raise TextError(f"{where} is a directory, not a text file")
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise TextError(f"{where}: cannot read it ({exc.strerror or exc})") from None
    if not data:
        raise TextError(f"{where}: the file is empty")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        bad = data[exc.start:exc.start + 1].hex()
        raise TextError(f"{where} is not UTF-8 text (byte 0x{bad} at offset {exc.start}); "
                        "convert it first, e.g. iconv -f latin1 -t utf-8") from None
    return text, hashlib.sha256(data).hexdigest()


def unigram_entropy(codes: np.ndarray, vocab_size: int) -> float:
    """−Σ_c p_c ln p_c (nats) of the character frequencies of ``codes``."""
    counts = np.bincount(codes, minlength=vocab_size).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


class TextTask(Task):
    name = "text"
    description = "next-character prediction on a UTF-8 text file (vocabulary from the file)"
    Options = TextOptions
    loss = "ce"

    def __init__(self, options: TextOptions, backend: Backend, batch: int = 1,
                 seed: int = 0) -> None:
        super().__init__(options, backend, batch, seed)
        text, self.sha256 = read_text(options.path)
        points = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        self.vocab, codes = np.unique(points, return_inverse=True)
        codes = codes.astype(np.int64)
        cut = len(codes) - int(len(codes) * options.held_out)
        if options.held_out > 0.0 and len(codes) - cut < 2:
            raise TextError(f"task 'text': {options.path!r} is too short to hold out "
                            f"{options.held_out:g} of it ({len(codes)} characters)")
        self._set_codes(codes[:cut], codes[cut:])

    def _set_codes(self, codes: np.ndarray, rest: np.ndarray) -> None:
        if len(codes) < 2:
            raise TextError(f"task 'text': {self.options.path!r} has {len(codes)} character(s) "
                            "to train on; it needs at least two")
        self.codes, self._rest = codes, rest
        # (mod L − 1: with B ≥ L streams, a start at the last character would have no target)
        positions = (np.arange(self.batch, dtype=np.int64) * len(codes)) // self.batch \
            % (len(codes) - 1)
        self.stream = ChunkedStream(self.backend, self.batch, self.n_in + 1, self._draw,
                                    (positions, np.zeros(self.batch, dtype=bool)))

    @property
    def positions(self) -> np.ndarray:
        """(B,) each stream's position in the text: that of its next input."""
        return self.stream.position[0]

    @property
    def n_in(self) -> int:
        return len(self.vocab)

    @property
    def n_out(self) -> int:
        return len(self.vocab)

    @property
    def characters(self) -> str:
        """The vocabulary: class k is character ``characters[k]``."""
        return "".join(chr(int(c)) for c in self.vocab)

    @property
    def sequences(self) -> str:
        """Each stream starts over at the beginning of the text when it reaches its end, each at
        its own step (the streams start at spread offsets)."""
        return "per-stream"

    def reference_losses(self) -> dict[str, float]:
        return {"unigram": unigram_entropy(self.codes, len(self.vocab))}

    def _draw(self, position: Position, step: int, steps: int) -> Chunk:
        """The ``steps`` steps after ``position`` (see the module docstring)."""
        positions, pending = position
        cycle = len(self.codes) - 1
        at = (positions + np.arange(steps)[:, None]) % cycle  # (steps, B)
        resets = at == 0  # after a wrap ...
        resets[0] = pending  # ... or as the state says for the first step

        def position_at(k: int) -> Position:
            if k == 0:
                return position
            after = (positions + k) % cycle
            return after, after == 0

        inputs = np.eye(len(self.vocab))[self.codes[at]]
        return Chunk(inputs, self.codes[at + 1], position_at, resets)

    def next(self) -> Batch:
        return self.stream.next()

    def held_out(self) -> TextTask | None:
        if len(self._rest) == 0:
            return None
        other = object.__new__(TextTask)
        Task.__init__(other, self.options, self.backend, self.batch, self.seed)
        other.sha256, other.vocab = self.sha256, self.vocab
        other._set_codes(self._rest, self._rest[:0])
        return other

    def state_dict(self) -> dict[str, Any]:
        positions, pending = self.stream.position
        return {"sha256": self.sha256, "step": self.stream.step,
                "positions": positions.copy(), "pending_reset": pending.copy()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["sha256"] != self.sha256:
            raise TextError(f"task 'text': {self.options.path!r} has changed since the state "
                            "was saved (SHA-256 differs)")
        positions = np.asarray(state["positions"], dtype=np.int64)
        pending = np.asarray(state["pending_reset"], dtype=bool)
        if positions.shape != (self.batch,) or pending.shape != (self.batch,) or \
                positions.min() < 0 or positions.max() + 1 >= len(self.codes):
            raise TextError("task 'text': saved positions do not fit this text and batch")
        self.stream.seek((positions.copy(), pending.copy()), int(state["step"]))
