"""Numerical helpers for the tests: central finite differences in float64."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def central_jacobian(f: Callable[[np.ndarray], np.ndarray], x: np.ndarray,
                     eps: float = 1e-6) -> np.ndarray:
    """J[i, j] = ∂f_i/∂x_j by central differences (f maps a flat vector to a flat vector)."""
    x = np.asarray(x, dtype=np.float64)
    f0 = np.asarray(f(x)).ravel()
    jac = np.zeros((f0.size, x.size))
    for j in range(x.size):
        e = np.zeros_like(x)
        e[j] = eps
        jac[:, j] = (np.asarray(f(x + e)).ravel() - np.asarray(f(x - e)).ravel()) / (2 * eps)
    return jac


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    """‖a − b‖ / max(‖b‖, tiny)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """Run the ``gradflow`` console script in this process: (exit code, stdout, stderr)."""
    import sys

    from gradflow_cli.app import main

    monkeypatch.setattr(sys, "argv", ["gradflow", *args])
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


#: a script for ``python -c``: ``gradflow train ...`` (``sys.argv[2:]``) that stands still after
#: step ``sys.argv[1]`` (holding its run directory); with NOFLOCK
#: set it also behaves as if the filesystem had no flock (ENOLCK).
PAUSED_TRAIN = r"""
import errno, fcntl, os, sys, time
from gradflow.training.trainer import Trainer
from gradflow_cli.app import main
pause, args = int(sys.argv[1]), sys.argv[2:]
if os.environ.get("NOFLOCK"):
    def flock(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")
    fcntl.flock = flock
advance = Trainer.advance
def advance_then_pause(self):
    out = advance(self)
    while self.step >= pause:
        time.sleep(60)
    return out
Trainer.advance = advance_then_pause
sys.argv = ["gradflow", *args]
main()
"""
