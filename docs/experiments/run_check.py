"""Experiment (d): bias and variance of the stochastic estimators on rnn, gru and lstm.

For each model and estimator, runs ``gradflow check ESTIMATOR --model MODEL --json`` (N
independent estimates of the gradient on a frozen random trajectory of T steps against RTRL,
each model at its default size) and keeps the row of the gradient summed over the trajectory.
TBPTT (deterministic, truncation 10 > T is exact; so truncation 5) is there for contrast.
Writes ``check.md`` (the table) and ``check.png`` (relative bias and variance)::

    python docs/experiments/run_check.py            # N = 1000, T = 20: ≈ 2 minutes of one core
    python docs/experiments/run_check.py --smoke    # N = 20, T = 5, nothing written
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
MODELS = ("rnn", "gru", "lstm")
ESTIMATORS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("uoro", ()), ("nobacktrack", ()), ("kalman-nobacktrack", ()),
    ("tbptt", ("--set", "estimator.truncation=5")),
)


def gradflow_command() -> str:
    """The ``gradflow`` console script of this interpreter's environment."""
    local = Path(sys.executable).with_name("gradflow")
    return str(local) if local.exists() else (shutil.which("gradflow") or "gradflow")


def check(model: str, estimator: str, extra: Sequence[str], samples: int,
          steps: int) -> dict[str, Any]:
    """The summed-over-the-trajectory row of ``gradflow check --json``."""
    out = subprocess.run(
        [gradflow_command(), "check", estimator, "--model", model, "--json", "-n", str(samples),
         "-T", str(steps), *extra],
        check=True, capture_output=True, text=True).stdout
    rows = json.loads(out)["rows"]
    return next(r for r in rows if r["step"] is None)


def table(results: dict[tuple[str, str], dict[str, Any]], samples: int, steps: int) -> str:
    """Markdown table of the summed rows."""
    lines = ["| model | estimator | ‖g‖ (RTRL) | relative bias ± s.e. | relative variance | "
             "cos(mean, g) | mean cos(ĝ, g) |", "|---|---|---|---|---|---|---|"]
    for (model, est), r in results.items():
        label = "tbptt(5)" if est == "tbptt" else est
        lines.append(f"| {model} | {label} | {r['ref_norm']:.3g} | {r['rel_bias']:.3f} ± "
                     f"{r['rel_bias_se']:.3f} | {r['rel_var']:.3g} | {r['cos_mean']:.3f} | "
                     f"{r['mean_cos']:.3f} |")
    lines.append("")
    lines.append(f"N = {samples} estimates, trajectory of T = {steps} steps, seed 0, mse loss, "
                 "float64; the gradient summed over the trajectory. Relative bias ‖E ĝ − g‖/‖g‖ "
                 "(with its standard error), relative variance E‖ĝ − E ĝ‖²/‖g‖².")
    return "\n".join(lines) + "\n"


def plot(results: dict[tuple[str, str], dict[str, Any]], path: Path) -> None:
    """Two panels of bars: relative bias and relative variance (log), by model and estimator."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9.0, 4.0), layout="constrained")
    FigureCanvasAgg(fig)
    names = [e for e, _ in ESTIMATORS]
    x = np.arange(len(MODELS))
    width = 0.8 / len(names)
    for col, (key, title, log) in enumerate((("rel_bias", "relative bias", False),
                                             ("rel_var", "relative variance", True))):
        ax = fig.add_subplot(1, 2, col + 1)
        for i, est in enumerate(names):
            values = [results[(m, est)][key] for m in MODELS]
            label = "tbptt(5)" if est == "tbptt" else est
            ax.bar(x + i * width, values, width, label=label)
        ax.set_xticks(x + 0.4 - width / 2, MODELS)
        ax.set_title(title + " (summed gradient)")
        if log:
            ax.set_yscale("log")
        ax.legend(fontsize=7)
    fig.savefig(path, dpi=100)


def main(argv: Sequence[str] | None = None) -> dict[tuple[str, str], dict[str, Any]]:
    """Run every check; return the summed rows by (model, estimator)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="N = 20, T = 5, no files")
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args(argv)
    samples, steps = (20, 5) if args.smoke else (args.samples, args.steps)
    results = {(m, e): check(m, e, extra, samples, steps)
               for m in MODELS for e, extra in ESTIMATORS}
    text = table(results, samples, steps)
    print(text)
    if not args.smoke:
        plot(results, HERE / "check.png")
        (HERE / "check.md").write_text(text, encoding="utf-8")
    return results


if __name__ == "__main__":
    main()
