"""The task contract: a resumable, seeded stream of inputs and targets for B streams.

Each call of :meth:`Task.next` returns the inputs x_t (B, m), the targets y_t ((B,) integer labels
for ``ce`` or (B, k) values), and a reset mask (B,) that is true where x_t starts a new sequence
(``None`` when no stream starts one). The task names its loss (``"ce"`` or ``"mse"``) and, where
known, the best achievable loss. Its state (generator, position) is serializable so that a resumed
run sees exactly the same stream.

Most tasks define their stream one step at a time (each step's draws addressed by the counter of a
:class:`~gradflow.CounterRNG`), and computing it a block of steps at a time costs far less than one
step at a time. :class:`ChunkedStream` holds such a block (a :class:`Chunk`, computed by the task
from its position) and hands it out one step at a time; its :attr:`~ChunkedStream.position` is
that of the steps handed out, not of the block computed ahead, so a state taken mid-block resumes
exactly.
"""

from __future__ import annotations

import itertools
import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from gradflow.contracts.backend import Backend
from gradflow.contracts.random import CounterRNG

Array = Any
#: the spawn key of the seed of a task's independent (held-out) stream
HELD_OUT_KEY = 0x0E1A
#: steps a :class:`ChunkedStream` computes at a time ...
CHUNK_STEPS = 1024
#: ... and at most this many numbers in a chunk's inputs and targets (fewer steps for many or
#: wide streams: a chunk stays within a cache of a few MB)
CHUNK_NUMBERS = 1 << 18


def host_namespace() -> Any:
    """The array namespace of the host (NumPy through array-api-compat), where tasks draw."""
    import array_api_compat.numpy as xp

    return xp


class TaskOptions(BaseModel):
    """Base of task options: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


@dataclass
class Batch:
    """One step of a task for B streams."""

    inputs: Array
    targets: Array
    reset: Array | None = None


@dataclass
class Chunk:
    """T ≥ 1 steps of a task computed ahead, as host (NumPy) arrays: step i of the chunk has the
    inputs ``inputs[i]`` (B, m), the targets ``targets[i]`` ((B,) or (B, k)) and the reset mask
    ``resets[i]`` (B,) (``None``: no step of the chunk starts a sequence); ``position(k)`` is the
    task's position (its own description: generator counter, history, ...) after the chunk's
    first k steps, 0 ≤ k ≤ T."""

    inputs: np.ndarray
    targets: np.ndarray
    position: Callable[[int], Any]
    resets: np.ndarray | None = None


class ChunkedStream:
    """A task's stream computed a chunk of steps at a time and handed out one step at a time.

    ``draw(position, step, steps)`` computes the :class:`Chunk` of 1 to ``steps`` steps that
    follows ``position``, ``step`` steps of the stream having been handed out before it; it must
    give the steps that one-step-at-a-time generation would give from that position (the same
    draws at the same counters). :meth:`next` hands out the next step as a :class:`Batch` of the
    backend (the chunk is converted, and its batches made, once: a step costs an index);
    :attr:`position` is the position after the steps handed out, as if no step had been computed
    ahead — what a task's ``state_dict`` reports — and :meth:`seek` continues from a given
    position (``load_state_dict``; a curriculum that changes the stream from the next step on),
    dropping the steps computed ahead.

    A chunk has at most :data:`CHUNK_STEPS` steps, and at most :data:`CHUNK_NUMBERS` numbers in
    its inputs and targets (``width`` numbers per stream and step: for example m + 1 for
    one-hot inputs and class labels): fewer steps for many or wide streams.
    """

    def __init__(self, backend: Backend, batch: int, width: int,
                 draw: Callable[[Any, int, int], Chunk], position: Any, step: int = 0) -> None:
        self.backend = backend
        #: numbers per stream and step in a chunk's inputs and targets
        self.width = int(width)
        #: the steps of a chunk
        self.steps = max(1, min(CHUNK_STEPS, CHUNK_NUMBERS // max(1, batch * self.width)))
        self._draw = draw
        self.seek(position, step)

    def seek(self, position: Any, step: int) -> None:
        """Continue from ``position``, ``step`` steps having been handed out; the steps computed
        ahead are dropped."""
        #: the position at the start of the current chunk
        self.start = position
        #: steps of the current chunk handed out
        self.offset = 0
        self._first = int(step)  # steps handed out before the current chunk
        self._chunk: Chunk | None = None
        self._batches: list[Batch] = []

    @property
    def step(self) -> int:
        """Steps handed out in all."""
        return self._first + self.offset

    @property
    def position(self) -> Any:
        """The position after the steps handed out."""
        return self.start if self._chunk is None else self._chunk.position(self.offset)

    def next(self) -> Batch:
        """The next step of every stream."""
        i = self.offset
        if i == len(self._batches):
            self._refill()
            i = 0
        self.offset = i + 1
        return self._batches[i]

    def _refill(self) -> None:
        self.start, self._first = self.position, self.step
        chunk = self._draw(self.start, self._first, self.steps)
        be, unstack = self.backend, self.backend.xp.unstack
        resets: Any = itertools.repeat(None)
        if chunk.resets is not None and chunk.resets.any():
            masks = unstack(be.asarray(chunk.resets))
            resets = [m if any_ else None
                      for m, any_ in zip(masks, chunk.resets.any(axis=1).tolist(), strict=True)]
        self._batches = list(map(Batch, unstack(be.asarray(chunk.inputs)),
                                 unstack(be.asarray(chunk.targets)), resets))
        self._chunk, self.offset = chunk, 0


class Task(ABC):
    """Base class of task plugins."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    Options: ClassVar[type[BaseModel]] = TaskOptions
    #: ``"ce"`` or ``"mse"``
    loss: ClassVar[str] = "ce"

    def __init__(self, options: BaseModel, backend: Backend, batch: int = 1,
                 seed: int = 0) -> None:
        self.options = options
        self.backend = backend
        self.batch = int(batch)
        self.seed = int(seed)

    @property
    @abstractmethod
    def n_in(self) -> int:
        """Input size m."""

    @property
    @abstractmethod
    def n_out(self) -> int:
        """Output size k (number of classes for ``ce``)."""

    @property
    def optimum(self) -> float | None:
        """Best achievable mean loss per step in nats, where known."""
        return None

    @property
    def sequences(self) -> Literal["none", "aligned", "per-stream"]:
        """How the stream is cut into sequences: ``"none"`` (one endless stream: no step
        resets; the default), ``"aligned"`` (every stream starts its sequences at the same
        steps) or ``"per-stream"`` (each stream at its own steps). An estimator that returns
        directions only when every stream ends a sequence (``online = False``: BPTT) can train
        only on ``"aligned"`` sequences, or on ``"per-stream"`` ones with a single stream."""
        return "none"

    def reference_level(self) -> float | None:
        """The loss that a run must never exceed by far: the largest of the task's reference
        losses (its optimum included) and, for a cross-entropy task, ln k — the loss of
        predicting the uniform distribution over its k classes. ``None`` when the task states no
        positive level. A metrics line whose mean loss exceeds ``run.divergence_factor`` times
        it stops the run as diverged (docs/training.md)."""
        levels = [*self.reference_losses().values(), self.optimum or 0.0]
        if self.loss == "ce" and self.n_out > 1:
            levels.append(math.log(self.n_out))
        level = max((float(v) for v in levels if v is not None and math.isfinite(v)),
                    default=0.0)
        return level if level > 0.0 else None

    def reference_losses(self) -> dict[str, float]:
        """Named reference levels of the mean loss per step in nats, where known (for example
        ``{"optimum": 0.4545, "no memory": 0.6616}``, or a text's unigram entropy); the trainer
        reports them next to the result. Empty by default."""
        return {}

    @abstractmethod
    def next(self) -> Batch:
        """The next step of every stream."""

    def held_out(self) -> Task | None:
        """An independent stream for evaluation, or ``None`` if the task has none (the default).
        A task drawn from its generator returns :meth:`independent_stream`."""
        return None

    # -- helpers for subclasses --------------------------------------------------------------
    def host_rng(self) -> CounterRNG:
        """A counter-based generator on the host, seeded with the task's seed: its state is two
        integers (:meth:`~gradflow.CounterRNG.state_entries` in :meth:`state_dict`)."""
        return CounterRNG(host_namespace(), self.seed)

    def independent_stream(self, **changes: Any) -> Task:
        """The same task — the same options, with ``changes`` applied — for the same streams,
        from a seed derived from this task's (:data:`HELD_OUT_KEY`): an independent stream."""
        seed = CounterRNG(host_namespace(), self.seed).spawn(HELD_OUT_KEY).seed
        options = self.options.model_copy(update=changes) if changes else self.options
        return type(self)(options, self.backend, self.batch, seed)

    def observe(self, loss: Array) -> None:
        """Feedback for tasks whose stream depends on the learner (curricula).

        A trainer calls it once per step, after the loss of the batch last returned by
        :meth:`next` is known, with that loss (nats, mean over the B streams: a 0-d array of
        the backend, or a float). The default ignores it; ``copy`` uses it to lengthen its
        sequences. A task that is never observed keeps its stream as configured.
        """
        return None

    def metrics(self) -> dict[str, float]:
        """Task-specific numbers for the metrics lines (e.g. ``{"copy_length": 7}``); empty by
        default."""
        return {}

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """The whole state (generator and position): JSON scalars and NumPy arrays."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state produced by :meth:`state_dict`."""
