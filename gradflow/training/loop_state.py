"""The running figures of the training loop, kept so that a resumed run writes the same lines.

Between two metrics lines the loop sums the step losses and the norms of the estimator's
directions on the device; over the last ``final_window`` steps it sums the losses for the
summary's final loss; and it remembers the best window mean, the held-out losses and the step of
the last checkpoint. A checkpoint taken anywhere — at a metrics line, or in the middle of a
window when SIGINT or SIGTERM stops the run — stores all of it: the sums as 0-d arrays (their
exact bits), the rest as JSON scalars. The wall-clock figures (seconds trained so far, seconds
into the current window) are stored too, but only ``timing.jsonl`` and the summary's speed use
them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

Array = Any
_SUMS = ("loss_sum", "norm_sum", "final_sum")


def _pair(value: Any) -> tuple[float, int] | None:
    return None if value is None else (float(value[0]), int(value[1]))


@dataclass
class LoopState:
    """What the loop carries from step to step besides θ, h and the parts' own states."""

    loss_sum: Array
    norm_sum: Array
    final_sum: Array
    updates: int = 0
    window_steps: int = 0
    best: tuple[float, int] | None = None
    best_eval: tuple[float, int] | None = None
    last_eval: float | None = None
    last_good: int | None = None
    elapsed: float = 0.0
    window_seconds: float = 0.0

    @classmethod
    def fresh(cls, zero: Array) -> LoopState:
        return cls(zero, zero, zero)

    def reset_window(self, zero: Array) -> None:
        self.loss_sum, self.norm_sum, self.updates, self.window_steps = zero, zero, 0, 0

    def arrays(self, to_numpy: Callable[[Array], np.ndarray]) -> dict[str, np.ndarray]:
        return {key: np.asarray(to_numpy(getattr(self, key))) for key in _SUMS}

    def scalars(self) -> dict[str, Any]:
        return {"updates": self.updates, "window_steps": self.window_steps,
                "best": self.best, "best_eval": self.best_eval, "last_eval": self.last_eval,
                "last_good": self.last_good, "elapsed": self.elapsed,
                "window_seconds": self.window_seconds}

    @classmethod
    def restore(cls, arrays: dict[str, np.ndarray], scalars: dict[str, Any],
                asarray: Callable[[np.ndarray], Array]) -> LoopState:
        return cls(
            *(asarray(arrays[key]) for key in _SUMS),
            updates=int(scalars["updates"]), window_steps=int(scalars["window_steps"]),
            best=_pair(scalars["best"]), best_eval=_pair(scalars["best_eval"]),
            last_eval=scalars["last_eval"], last_good=scalars["last_good"],
            elapsed=float(scalars["elapsed"]), window_seconds=float(scalars["window_seconds"]))
