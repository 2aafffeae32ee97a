"""Experiment (c): every online estimator on ``add`` (lags 5 and 9), rnn n = 32, five seeds.

Runs the grid ``docs/experiments/add.toml`` (6 estimators × 5 seeds × 100,000 steps), then writes
``docs/experiments/add.png`` (the learning curves of seed 0) and ``docs/experiments/add.md`` (the
sweep's summary table: final loss, the mean over the last 5,000 steps, mean ± std over seeds)::

    python docs/experiments/run_add.py --workers 2      # ≈ 8 minutes of one core
    python docs/experiments/run_add.py --smoke          # 300 steps, seed 0, a temporary directory
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import HERE, out_dir, parse_args, plot_runs, sweep

GRID = HERE / "add.toml"


def main(argv: Sequence[str] | None = None) -> Path:
    """Run the experiment; return the sweep directory."""
    args = parse_args(__doc__.splitlines()[0], argv)
    directory = out_dir(args, "add")
    result = sweep(GRID, directory, args.workers, smoke=args.smoke)
    figures = directory if args.smoke else HERE
    seed0 = sorted(directory.glob("*run.seed=0"))
    plot_runs(seed0, figures / "add.png", metric="loss", smooth=1 if args.smoke else 5,
              title="add (lags 5, 9), rnn n=32, one stream, seed 0")
    table = (result.directory / "summary.md").read_text(encoding="utf-8")
    (figures / "add.md").write_text(table, encoding="utf-8")
    print(table)
    return directory


if __name__ == "__main__":
    main()
