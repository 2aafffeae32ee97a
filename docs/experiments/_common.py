"""Shared helpers of the experiment scripts: run a sweep grid (full or smoke), plot, tabulate.

Public API only: :func:`gradflow.tools.sweep.parse_grid`, :func:`gradflow.tools.sweep.run_sweep`,
:func:`gradflow.tools.plot.learning_curves`.
"""

from __future__ import annotations

import argparse
import tempfile
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gradflow.tools.plot import learning_curves
from gradflow.tools.sweep import SweepResult, parse_grid, run_sweep

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


def parse_args(description: str, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The common command line: ``--smoke`` (a few steps, nothing written under docs/),
    ``--out`` (where the runs go) and ``--workers``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--smoke", action="store_true",
                        help="a few steps into a temporary directory (CI); docs/ is not touched")
    parser.add_argument("--out", type=Path, default=None,
                        help="directory of the runs (default sweeps/<name>, or a temporary one)")
    parser.add_argument("--workers", type=int, default=1, help="processes of the sweep")
    return parser.parse_args(argv)


def out_dir(args: argparse.Namespace, name: str) -> Path:
    """``--out``, else a fresh temporary directory in smoke mode, else ``sweeps/<name>``."""
    if args.out is not None:
        return args.out
    if args.smoke:
        return Path(tempfile.mkdtemp(prefix=f"gradflow-{name}-"))
    return REPO / "sweeps" / name


#: what smoke mode changes in a grid: a few steps, frequent metrics lines, no evaluation
SMOKE_RUN = {"steps": 300, "log_every": 50, "final_window": 100, "eval_every": 0,
             "checkpoint_every": 0}


def load_toml(path: Path, smoke: bool = False) -> dict[str, Any]:
    """A grid file as a dict; with ``smoke``, :data:`SMOKE_RUN` applied and only the first seed."""
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    if smoke:
        data.setdefault("run", {}).update(SMOKE_RUN)
        seeds = data.get("sweep", {}).get("run.seed")
        if seeds:
            data["sweep"]["run.seed"] = seeds[:1]
    return data


def sweep(grid_file: Path, directory: Path, workers: int, smoke: bool = False) -> SweepResult:
    """Run the grid in ``grid_file`` (in smoke mode: see :func:`load_toml`) into ``directory``."""
    grid = parse_grid(load_toml(grid_file, smoke))
    result = run_sweep(grid, directory, workers=workers, force=True)
    if result.failed:
        raise SystemExit(f"failed runs: {', '.join(result.failed)}")
    return result


def plot_runs(run_dirs: Sequence[Path], path: Path, metric: str, smooth: int, title: str,
              log_y: bool = False) -> Path:
    """``gradflow plot`` of ``run_dirs`` into ``path``."""
    return learning_curves(list(run_dirs), metric=metric, smooth=smooth, title=title,
                           log_y=log_y).save(path)
