"""Learning curves of runs on one figure, with matplotlib (the ``plot`` extra).

:func:`learning_curves` draws one line per run — a metric of ``metrics.jsonl`` (or
``steps_per_s``/``wall`` of ``timing.jsonl``) against the step, smoothed by a trailing mean over
``smooth`` metrics lines — and, for the loss and bits, the task's optimum as a dashed line when
every run shares it. Lines are labelled ``estimator/model/task``, with ``seed=...`` added when the
runs' seeds differ and, if two labels still coincide, the other options in which those runs
differ. The figure is a plain :class:`matplotlib.figure.Figure` (no pyplot state), drawn with the
Agg backend, so it works without a display.

With ``group_seeds`` the runs whose configurations differ only in ``run.seed`` are one curve: the
mean over the seeds at the steps they all have (each run smoothed first), and a band of its 95 %
confidence interval, mean ± t₀.₉₇₅,ₙ₋₁ · s/√n (Student's t, s the sample standard deviation over
the n seeds; no band for one seed). With ``x="wall"`` the x axis is wall-clock seconds (from
``timing.jsonl``, the seeds' mean at each step) instead of steps. For the loss and bits the
task's optimum (dashed) and memoryless level (dotted) are drawn when every run shares them.
:func:`sweep_runs` lists the run directories of a sweep (or study) directory, which ``gradflow
plot`` groups this way.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gradflow.contracts.errors import PlotError
from gradflow.contracts.losses import LN2
from gradflow.runfiles.run import Run, load_run

#: metric -> axis label; any other numeric column of metrics.jsonl works too
METRIC_LABELS = {
    "loss": "loss (nats)",
    "bits": "bits per step",
    "eval_loss": "held-out loss (nats)",
    "eval_bits": "held-out bits per step",
    "grad_norm": "direction norm (before clipping)",
    "lr": "learning rate",
    "steps_per_s": "steps per second",
    "wall": "wall-clock seconds",
}
TIMING_METRICS = ("steps_per_s", "wall")
FORMATS = (".png", ".svg", ".pdf")


def _matplotlib() -> tuple[Any, Any]:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise PlotError("plotting needs matplotlib: pip install 'gradflow[plot]'") from None
    return Figure, FigureCanvasAgg


def trailing_mean(values: np.ndarray, window: int) -> np.ndarray:
    """Mean of each value and the ``window − 1`` before it (fewer at the start)."""
    if window <= 1 or len(values) == 0:
        return np.asarray(values, dtype=np.float64)
    sums = np.cumsum(np.concatenate([[0.0], values]))
    idx = np.arange(1, len(values) + 1)
    lo = np.maximum(idx - window, 0)
    return (sums[idx] - sums[lo]) / (idx - lo)


def series(run: Run, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of ``metric`` in ``run``, lines without a value left out."""
    table = run.timing if metric in TIMING_METRICS else run.metrics
    if metric not in table or "step" not in table:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    steps, values = table["step"], table[metric]
    keep = np.isfinite(values)
    return steps[keep], values[keep]


def _flat(config: Any) -> dict[str, Any]:
    data = config.model_dump(mode="json")
    return {f"{s}.{k}": v for s, table in data.items() for k, v in table.items()
            if f"{s}.{k}" != "run.out"}


def run_labels(runs: Sequence[Run]) -> list[str]:
    """``estimator/model/task`` (+ ``seed=`` when seeds differ, + the differing options where
    labels still coincide)."""
    labels = [run.name for run in runs]
    if len({run.config.run.seed for run in runs}) > 1:
        labels = [f"{lab} seed={run.config.run.seed}" for lab, run in zip(labels, runs,
                                                                           strict=True)]
    flats = [_flat(run.config) for run in runs]
    for label in set(labels):
        same = [i for i, lab in enumerate(labels) if lab == label]
        if len(same) < 2:
            continue
        keys = sorted({k for i in same for k in flats[i]
                       if len({repr(flats[j].get(k)) for j in same}) > 1})
        for i in same:
            extra = ", ".join(f"{k}={flats[i].get(k)}" for k in keys)
            labels[i] = f"{label} {extra}" if extra else f"{label} ({runs[i].path.name})"
    return labels


def seed_groups(runs: Sequence[Run]) -> list[list[Run]]:
    """The runs grouped by their configuration without ``run.seed`` (and ``run.out``), in the
    order of each group's first run."""
    groups: dict[str, list[Run]] = {}
    for run in runs:
        flat = _flat(run.config)
        flat.pop("run.seed", None)
        groups.setdefault(json.dumps(flat, sort_keys=True, default=str), []).append(run)
    return list(groups.values())


def mean_band(curves: Sequence[tuple[np.ndarray, np.ndarray]],
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(steps, mean, half-width of the 95 % confidence interval or ``None`` for one curve) over
    the steps every curve has (module docstring)."""
    common = curves[0][0]
    for steps, _ in curves[1:]:
        common = np.intersect1d(common, steps)
    stacked = np.stack([values[np.isin(steps, common)] for steps, values in curves])
    mean = stacked.mean(axis=0)
    n = len(curves)
    if n < 2:
        return common, mean, None
    from scipy.stats import t

    return common, mean, t.ppf(0.975, n - 1) * stacked.std(axis=0, ddof=1) / math.sqrt(n)


def _wall_of(run: Run, steps: np.ndarray) -> np.ndarray:
    """The wall-clock seconds at ``steps`` (from ``timing.jsonl``; interpolated between its
    lines)."""
    timing = run.timing
    if "wall" not in timing or len(timing["wall"]) == 0:
        raise PlotError(f"{run.path} has no timing.jsonl to put wall-clock seconds on the x axis")
    return np.interp(steps, timing["step"], timing["wall"])


def sweep_runs(directory: str | Path) -> list[Path]:
    """The run directories of a sweep directory (its ``sweep.json``), in the sweep's order,
    those that have metrics lines; :class:`PlotError` if ``directory`` is not one."""
    d = Path(directory)
    try:
        manifest = json.loads((d / "sweep.json").read_text(encoding="utf-8"))
        names = [entry["name"] for entry in manifest["runs"]]
    except (OSError, ValueError, KeyError, TypeError):
        raise PlotError(f"{str(d)!r} is not a sweep directory (no readable sweep.json)") from None
    return [d / name for name in names if (d / name / "metrics.jsonl").exists()]


def check_output(path: str | Path) -> Path:
    """``path`` if its suffix is a format :meth:`CurvePlot.save` writes, else :class:`PlotError`."""
    p = Path(path)
    if p.suffix.lower() not in FORMATS:
        raise PlotError(f"cannot write {str(p)!r}: the output must end in "
                        f"{', '.join(FORMATS)}")
    return p


@dataclass
class CurvePlot:
    """A figure of learning curves: ``lines`` maps each plotted run's label to its line;
    ``skipped`` names the runs that have no value of the metric."""

    figure: Any
    lines: dict[str, Any] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)

    def save(self, path: str | Path, dpi: int = 100) -> Path:
        """Write the figure (PNG, SVG or PDF, by the file's suffix) atomically."""
        p = check_output(path)
        tmp = p.with_name(f".{p.stem}.tmp-{os.getpid()}{p.suffix}")
        try:
            self.figure.savefig(tmp, dpi=dpi)
            os.replace(tmp, p)
        except OSError as exc:
            raise PlotError(f"cannot write {str(p)!r}: {exc.strerror or exc}") from None
        finally:
            if tmp.exists():
                tmp.unlink()
        return p


def _level(runs: Sequence[Run], metric: str, name: str) -> float | None:
    """The task's reference level ``name`` (``"optimum"``, ``"no memory"``) in the units of
    ``metric`` when every run shares it, else ``None``."""
    if metric not in ("loss", "bits", "eval_loss", "eval_bits"):
        return None
    values = {(run.summary.get("references") or {}).get(name) if name != "optimum"
              else run.summary.get("optimum") for run in runs}
    if len(values) != 1 or None in values:
        return None
    value = float(values.pop())
    return value / LN2 if metric.endswith("bits") else value


def learning_curves(runs: Sequence[Run | str | Path], metric: str = "loss", smooth: int = 5,
                    title: str | None = None, log_y: bool = False,
                    size: tuple[float, float] = (8.0, 5.0),
                    group_seeds: bool = False, x: str = "step",
                    labels: Sequence[str] | None = None) -> CurvePlot:
    """One line per run of ``metric`` against the step — or, with ``group_seeds``, one line per
    group of seeds with its 95 % band (see the module's docstring). ``labels``, one per run,
    replace the labels made from the configurations (a group takes its first run's)."""
    if smooth < 1:
        raise PlotError(f"smooth must be at least 1 (metrics lines per mean), got {smooth}")
    if x not in ("step", "wall"):
        raise PlotError(f"x must be 'step' or 'wall' (wall-clock seconds), got {x!r}")
    loaded = [run if isinstance(run, Run) else load_run(run) for run in runs]
    if not loaded:
        raise PlotError("no runs to plot")
    Figure, FigureCanvasAgg = _matplotlib()
    fig = Figure(figsize=size, dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    plot = CurvePlot(fig)
    if labels is not None and len(labels) != len(loaded):
        raise PlotError(f"{len(labels)} labels for {len(loaded)} runs")
    groups = seed_groups(loaded) if group_seeds else [[run] for run in loaded]
    firsts = [group[0] for group in groups]
    if labels is None:
        names = run_labels(firsts)
    else:
        given = {id(run): label for run, label in zip(loaded, labels, strict=True)}
        names = [given[id(first)] for first in firsts]
    for group, label in zip(groups, names, strict=True):
        curves, drawn = [], []
        for run in group:
            steps, values = series(run, metric)
            if len(steps) == 0:
                plot.skipped.append(str(run.path))
            else:
                curves.append((steps, trailing_mean(values, smooth)))
                drawn.append(run)
        if not curves:
            continue
        if group_seeds:
            base = label.split(" seed=")[0] if labels is None else label
            label = base + f" ({len(curves)} seed{'s' * (len(curves) > 1)})"
        steps, mean, half = mean_band(curves)
        # x: the steps, or the wall-clock seconds at them (timing.jsonl; the seeds' mean)
        where = (np.mean([_wall_of(run, steps) for run in drawn], axis=0) if x == "wall"
                 else steps)
        (line,) = ax.plot(where, mean, label=label, lw=1.4, gid="run")
        if half is not None:
            ax.fill_between(where, mean - half, mean + half, color=line.get_color(), alpha=0.2,
                            lw=0, gid="band")
        plot.lines[label] = line
    if not plot.lines:
        available = sorted({k for run in loaded for k in (*run.metrics, *run.timing)
                            if k != "step"})
        raise PlotError(f"no run has values of {metric!r}; available: "
                        f"{', '.join(available) or 'none (no metrics lines yet)'}")
    for name, style in (("optimum", "--"), ("no memory", ":")):
        level = _level(loaded, metric, name)
        if level is not None and math.isfinite(level):
            ax.axhline(level, ls=style, lw=1.0, color="0.35", label=f"{name} {level:.4f}",
                       gid="reference")
    ax.set_xlabel("wall-clock seconds" if x == "wall" else "step")
    ax.set_ylabel(METRIC_LABELS.get(metric, metric))
    notes = [f"trailing mean of {smooth} metrics lines"] if smooth > 1 else []
    if group_seeds:
        notes.append("mean over seeds, band: 95 % confidence interval")
    if notes:
        ax.text(0.995, 0.005, "; ".join(notes), fontsize="x-small",
                color="0.4", ha="right", va="bottom", transform=ax.transAxes)
    if log_y:
        ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    if title:
        ax.set_title(title)
    return plot
