"""Experiment (a): influence balancing (Tallec & Ollivier, UORO, ICLR 2018, §5).

The ``influence`` model (n = 23, p = 10, θ₀ = 0.5) on the ``influence`` task: a scalar θ whose
long-run optimum is θ* = −1/6, while any gradient truncated to fewer than 41 steps has the wrong
sign. Each line trains θ online with plain SGD at a constant learning rate and records θ every
``--every`` steps; the trainer logs losses, not θ, so this script drives
:class:`gradflow.Trainer` itself (``advance()`` is one online step, ``theta`` the parameters).

TBPTT runs with ``interval = 1``: at every step the current loss is backpropagated through the
last ``truncation`` transitions, so every loss sees exactly that many steps. (With the default
``interval = truncation`` the losses of a window see 1 … k steps, and their sum keeps the wrong
sign up to k = 109 here.)

    python docs/experiments/run_influence.py            # 20,000 steps: influence.png, influence.md
    python docs/experiments/run_influence.py --smoke    # 2,000 steps, one seed, nothing written
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gradflow import Trainer
from gradflow.runfiles.config import config_from_dict

HERE = Path(__file__).resolve().parent
THETA_STAR = -1.0 / 6.0
THETA_0 = 0.5


@dataclass(frozen=True)
class Line:
    """One curve: an estimator with its options, the SGD learning rate, the seeds."""

    label: str
    estimator: dict[str, Any]
    lr: float
    seeds: tuple[int, ...] = (0,)
    extra: dict[str, Any] = field(default_factory=dict)


def lines(seeds: tuple[int, ...]) -> list[Line]:
    """The experiment's curves (TBPTT and RTRL are deterministic here: one run each)."""
    out = [Line(f"tbptt({k})", {"name": "tbptt", "truncation": k, "interval": 1}, 1e-4)
           for k in (1, 10, 20, 50, 100)]
    out.append(Line("rtrl", {"name": "rtrl"}, 1e-4))
    out += [Line(name, {"name": name}, 1e-5, seeds) for name in ("uoro", "nobacktrack")]
    # the filter's step is lr (J_θ + λ)⁻¹ĝ with J_θ the running mean of ĝ² (≈ 1e5 at θ₀ here):
    # λ = 1e5 is a prior that keeps the first steps (J_θ ≈ 0) at NoBackTrack's stable rate
    # lr/λ = 1e-5 and the whole run within [lr/2λ, lr/λ] (λ = 1e-3 flings θ in the first steps)
    out.append(Line("kalman-nobacktrack", {"name": "kalman-nobacktrack", "damping": 1e5}, 1.0,
                    seeds))
    return out


def trajectory(line: Line, seed: int, steps: int, every: int) -> np.ndarray:
    """θ at steps 0, every, 2·every, …, steps (NaN after θ stops being finite)."""
    config = config_from_dict({
        "run": {"steps": steps, "seed": seed},
        "model": {"name": "influence"},
        "task": {"name": "influence"},
        "estimator": line.estimator,
        "optimizer": {"name": "sgd", "lr": line.lr, "schedule": "constant", "clip": None,
                      "clip_rec": None},
    })
    trainer = Trainer(config)
    thetas = np.full(steps // every + 1, np.nan)
    thetas[0] = float(trainer.theta[0])
    with np.errstate(all="ignore"):
        for step in range(1, steps + 1):
            trainer.advance()
            if step % every == 0:
                value = float(trainer.theta[0])
                if not math.isfinite(value):
                    break
                thetas[step // every] = value
    return thetas


def run(steps: int, every: int, seeds: tuple[int, ...]) -> dict[str, np.ndarray]:
    """Every line's θ trajectories, shape (number of seeds, steps // every + 1)."""
    return {line.label: np.stack([trajectory(line, s, steps, every) for s in line.seeds])
            for line in lines(seeds)}


def table(results: dict[str, np.ndarray], steps: int) -> str:
    """Markdown: the learning rate, the seeds, θ at the end (mean ± std) and |θ − θ*|."""
    rows = ["| estimator | SGD lr | seeds | final θ | final abs(θ − θ*) | verdict |",
            "|---|---|---|---|---|---|"]
    by_label = {line.label: line for line in lines((0,))}
    for label, thetas in results.items():
        final = thetas[:, -1]
        lr = by_label[label].lr
        if not np.all(np.isfinite(final)):
            theta, dist, verdict = "overflow", "∞", "diverges"
        else:
            std = f" ± {np.std(final, ddof=1):.4f}" if len(final) > 1 else ""
            theta = f"{np.mean(final):.4g}{std}"
            d = np.abs(final - THETA_STAR)
            dist = f"{np.mean(d):.2g}"
            verdict = ("converges" if np.max(d) < 0.01 else
                       "moves away" if np.min(d) > abs(THETA_0 - THETA_STAR) else
                       "stays near θ₀" if abs(np.mean(final) - THETA_0) < 0.1 else "partway")
        seeds = len(thetas)
        rows.append(f"| {label} | {lr:g} | {seeds} | {theta} | {dist} | {verdict} |")
    rows.append("")
    rows.append(f"θ₀ = {THETA_0}, θ* = −1/6, {steps:,} steps, abs(θ₀ − θ*) = "
                f"{abs(THETA_0 - THETA_STAR):.4f}.")
    return "\n".join(rows) + "\n"


def plot(results: dict[str, np.ndarray], every: int, path: Path) -> None:
    """Two panels against the step: θ itself (near θ*; the diverging lines leave the frame) and
    abs(θ − θ*) on a log axis (all lines), one line per run, θ* dashed."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11.0, 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    near, far = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    steps = np.arange(next(iter(results.values())).shape[1]) * every
    for index, (label, thetas) in enumerate(results.items()):
        color, style = f"C{index % 10}", "-" if index < 10 else "--"
        for i, theta in enumerate(thetas):
            name = label if i == 0 else None
            near.plot(steps, theta, color=color, ls=style, lw=1.2, label=name)
            far.plot(steps, np.abs(theta - THETA_STAR), color=color, ls=style, lw=1.2, label=name)
    near.axhline(THETA_STAR, color="k", ls="--", lw=1, label="θ* = −1/6")
    near.set_ylim(-0.4, 1.2)
    near.set_ylabel("θ")
    near.set_title("θ against steps (SGD, constant rate)")
    far.set_yscale("log")
    far.set_ylabel("abs(θ − θ*)")
    far.set_title("distance to θ* = −1/6")
    for ax in (near, far):
        ax.set_xlabel("step")
    near.legend(fontsize=8, ncol=2)
    fig.savefig(path, dpi=100)


def main(argv: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Run the experiment; return the θ trajectories by line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="2,000 steps, one seed, no files")
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--every", type=int, default=50, help="steps between θ records")
    parser.add_argument("--seeds", type=int, default=3, help="seeds of the stochastic estimators")
    args = parser.parse_args(argv)
    steps, seeds = (2000, 1) if args.smoke else (args.steps, args.seeds)
    results = run(steps, args.every, tuple(range(seeds)))
    text = table(results, steps)
    print(text)
    if not args.smoke:
        plot(results, args.every, HERE / "influence.png")
        (HERE / "influence.md").write_text(text, encoding="utf-8")
    return results


if __name__ == "__main__":
    main()
