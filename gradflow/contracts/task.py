"""The task contract: a resumable, seeded stream of inputs and targets for B streams.

Each call of :meth:`Task.next` returns the inputs x_t (B, m), the targets y_t ((B,) integer labels
for ``ce`` or (B, k) values), and a reset mask (B,) that is true where x_t starts a new sequence
(``None`` when no stream starts one). The task names its loss (``"ce"`` or ``"mse"``) and, where
known, the best achievable loss. Its state (generator, position) is serializable so that a resumed
run sees exactly the same stream.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict

from gradflow.contracts.backend import Backend
from gradflow.contracts.random import CounterRNG

Array = Any
#: the spawn key of the seed of a task's independent (held-out) stream
HELD_OUT_KEY = 0x0E1A


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
