"""Experiment (b): dependencies longer than the truncation (Ollivier, Tallec & Charpiat 2015).

Distant brackets (save 1, range 5, alphabet 10; 1.661 bits/char at best, 1.938 without recalling
the bracketed symbol 7 steps later), a GRU with 64 units trained online on one stream:
TBPTT with truncation 4 (shorter than the dependency) and 16 (longer) against UORO and
Kalman-NoBackTrack, each with its optimizer defaults, 100,000 steps, seeds 0 and 1. Runs the grids
``brackets-tbptt.toml`` and ``brackets-rank-one.toml`` and writes ``brackets.png`` (bits/char of
seed 0 against the step) and ``brackets.md`` (the two summary tables)::

    python docs/experiments/run_brackets.py --workers 2   # ≈ 6 minutes of one core
    python docs/experiments/run_brackets.py --smoke       # 300 steps, seed 0, a temporary directory
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import HERE, out_dir, parse_args, plot_runs, sweep

GRIDS = ("brackets-tbptt", "brackets-rank-one")


def main(argv: Sequence[str] | None = None) -> Path:
    """Run both grids; return the directory that holds them."""
    args = parse_args(__doc__.splitlines()[0], argv)
    directory = out_dir(args, "brackets")
    tables = []
    for name in GRIDS:
        result = sweep(HERE / f"{name}.toml", directory / name, args.workers, smoke=args.smoke)
        tables.append((result.directory / "summary.md").read_text(encoding="utf-8"))
    figures = directory if args.smoke else HERE
    seed0 = sorted(directory.glob("*/*run.seed=0"))
    plot_runs(seed0, figures / "brackets.png", metric="bits", smooth=1 if args.smoke else 10,
              title="distant brackets (1, 5, 5, 10), GRU n=64, one stream, seed 0")
    text = "\n".join(tables)
    (figures / "brackets.md").write_text(text, encoding="utf-8")
    print(text)
    return directory


if __name__ == "__main__":
    main()
