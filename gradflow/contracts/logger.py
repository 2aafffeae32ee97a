"""The logger contract: where a run's metrics lines go besides ``metrics.jsonl``.

``metrics.jsonl`` is the source of truth of a run's learning curve (the same config writes the
same bytes; a resumed run continues it line for line). A logger plugin copies those lines to
another tool — TensorBoard event files, an MLflow run — so that a user can watch them there. The
trainer builds the loggers a run names (``run.loggers``, ``gradflow train --logger NAME``) and
calls them around its loop:

* :meth:`Logger.open` once, when the run directory is ready, with a :class:`RunRecord`: the
  directory, the resolved configuration and the metrics lines already in ``metrics.jsonl``
  (none for a fresh run; those up to the checkpoint for a resumed one). After ``open`` the
  logger's store must hold exactly those lines: a logger rebuilds it from them rather than
  trusting what an interrupted process left behind;
* :meth:`Logger.log` with every new metrics line (a dict: ``step`` and numbers, some ``None``),
  right after it is appended to ``metrics.jsonl``;
* :meth:`Logger.close` once at the end, whatever the end (``completed``, ``interrupted``,
  ``diverged``, ``failed``).

A logger whose dependency is missing says so in one line when it is created, before any step.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict


class LoggerOptions(BaseModel):
    """Base of logger options: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


@dataclass
class RunRecord:
    """What a logger is told when it opens: the run directory, the resolved configuration (as
    written to ``config.json``) and the metrics lines already in ``metrics.jsonl``."""

    path: Path
    config: dict[str, Any]
    records: list[dict[str, Any]] = field(default_factory=list)


class Logger(ABC):
    """Base class of logger plugins (see the module docstring)."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    Options: ClassVar[type[BaseModel]] = LoggerOptions

    def __init__(self, options: BaseModel) -> None:
        self.options = options

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"

    @abstractmethod
    def open(self, run: RunRecord) -> None:
        """Start logging the run ``run``; afterwards the store holds exactly ``run.records``."""

    @abstractmethod
    def log(self, record: dict[str, Any]) -> None:
        """One new metrics line: ``record["step"]`` and the line's numbers (``None`` where a
        line has no value, e.g. ``eval_loss`` between evaluations)."""

    def close(self, status: str) -> None:  # noqa: B027 - optional hook
        """The run ended with ``status``; flush and release what the logger holds."""
