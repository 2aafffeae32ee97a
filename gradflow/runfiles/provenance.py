"""Provenance: what a run ran with, recorded in its ``config.json`` and ``summary.json``.

A result is only as good as the knowledge of what produced it. Every run records, under the key
``provenance``: the versions of gradflow, Python, NumPy and CuPy (when installed) and of every
distribution that registered a plugin, the platform and host, the git commit (and whether the
working tree had changes) of the repository the run was started from, when there is one, the
command line, and the time. ``config.json`` records it when the run starts, ``summary.json`` for
the process that wrote the summary (a resumed run's, after a resume). Reading a run's
``config.json`` as a configuration sets the record aside
(:func:`gradflow.runfiles.config.run_config`).
"""

from __future__ import annotations

import importlib.metadata as md
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from gradflow.registry.discovery import get_registry
from gradflow.version import __version__

#: the distributions CuPy is published as (one per CUDA major version)
CUPY_DISTRIBUTIONS = ("cupy-cuda13x", "cupy-cuda12x", "cupy-cuda11x", "cupy")


def _cupy_version() -> str | None:
    """CuPy's version from the installed distribution's metadata (CuPy is not imported)."""
    for dist in CUPY_DISTRIBUTIONS:
        try:
            return md.version(dist)
        except md.PackageNotFoundError:
            continue
    return None


def _git(cwd: Path, *args: str) -> str | None:
    try:
        proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                              timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def git_state(cwd: Path | None = None) -> dict[str, Any] | None:
    """The commit of the git repository containing ``cwd`` (default: the current directory) and
    whether tracked files differ from it, or ``None`` outside a repository (or without git)."""
    where = Path.cwd() if cwd is None else Path(cwd)
    commit = _git(where, "rev-parse", "HEAD")
    if not commit:
        return None
    status = _git(where, "status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status), "root": _git(where, "rev-parse",
                                                                  "--show-toplevel")}


def plugin_versions() -> dict[str, str | None]:
    """``{distribution: version}`` of every distribution that registered a plugin."""
    registry = get_registry()
    return {info.distribution: info.version for info in registry.all()
            if info.distribution is not None}


def provenance(argv: list[str] | None = None) -> dict[str, Any]:
    """The provenance record of a run started now (see the module docstring)."""
    return {
        "gradflow": __version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "cupy": _cupy_version(),
        "plugins": plugin_versions(),
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "git": git_state(),
        "command": list(sys.argv if argv is None else argv),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
