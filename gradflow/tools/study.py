"""Studies: fair, tuned, seed-aggregated comparisons of estimator variants on tasks.

A study file is a base training config plus::

    [study]
    seeds = [0, 1, 2, 3, 4]            # evaluation seeds
    [study.lr]
    protocol = "tune"                  # or "fixed": each variant's own optimizer settings
    grid = [0.001, 0.003, 0.01, 0.03]  # learning rates tried on the tuning seeds
    seeds = [100, 101]                 # tuning seeds, disjoint from the evaluation seeds

    [[tasks]]                          # each a name and whole config sections (task, model, run)
    name = "add"
    task = { name = "add" }
    model = { name = "rnn", n_hidden = 32 }

    [[variants]]                       # each a name and whole sections (estimator, optimizer)
    name = "tbptt-16"
    estimator = { name = "tbptt", truncation = 16 }

Every task × variant is a configuration: the base, then the task's sections, then the variant's
(each replacing the base's section of that name). One optimizer family for all variants unless a
variant gives its own ``[optimizer]``. With ``protocol = "tune"`` each configuration first runs
once per learning rate of the grid and tuning seed (``DIR/tune``); the rate with the lowest mean
final loss over the tuning seeds (a failed run counts as +∞) is carried to its evaluation runs,
one per evaluation seed (``DIR/eval``). With ``"fixed"`` only the evaluation runs are made.
Every run is an ordinary run directory, scheduled like a sweep (:mod:`gradflow.tools.sweep`), and
a study started again skips the runs that completed with the same configuration.

The leaderboard (``DIR/leaderboard.csv``, ``DIR/leaderboard.md``) has one row per task ×
variant: the chosen rate and the complete optimizer settings, the evaluation seeds, the final
loss's mean with its 95 % confidence interval (Student's t over the completed seeds), the gaps to
the task's optimum and to its memoryless reference, the speed (steps per second, µs per step: the
median over the seeds), the estimator's state in floats per parameter (from a run's final
checkpoint) and, when the runs set ``run.align_every``, the mean ``align_cos`` over the seeds'
measurements. ``DIR/curves-TASK.png`` shows each task's variants (seeds' mean, 95 % band, the
optimum and memoryless levels; with the ``plot`` extra), and ``gradflow plot DIR/eval`` draws
other views (``--metric``, ``--x wall``).
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gradflow.contracts.errors import CheckpointError, ConfigError
from gradflow.runfiles.checkpoint import load_checkpoint
from gradflow.runfiles.config import SECTIONS, config_from_dict, load_toml
from gradflow.runfiles.rundir import CHECKPOINT, atomic_write_bytes, read_metrics
from gradflow.tools.sweep import (
    Grid,
    SweepResult,
    Variant,
    parse_variants,
    run_sweep,
)
from gradflow.tools.sweep_summary import optimizer_of

STUDY_TABLE, TASKS_TABLE, VARIANTS_TABLE = "study", "tasks", "variants"
#: the memoryless reference of a task's summary (``references``), when it has one
MEMORYLESS = "no memory"
#: separates a task's name from a variant's in a configuration's name
JOIN = "~"


@dataclass
class Study:
    """A parsed study file (see the module docstring)."""

    base: dict[str, Any]
    tasks: list[Variant]
    variants: list[Variant]
    seeds: list[int]
    protocol: str = "fixed"
    grid: list[float] = field(default_factory=list)
    tuning_seeds: list[int] = field(default_factory=list)

    def configurations(self, rates: dict[str, float] | None = None) -> list[Variant]:
        """Every task × variant as one :class:`Variant` named ``task~variant``: the task's
        sections, then the variant's, then (given ``rates``) the chosen learning rate."""
        out = []
        for task in self.tasks:
            for variant in self.variants:
                name = f"{task.name}{JOIN}{variant.name}"
                sections = json.loads(json.dumps({**task.sections, **variant.sections}))
                if rates is not None:
                    sections.setdefault("optimizer", json.loads(json.dumps(
                        self.base.get("optimizer", {}))))["lr"] = rates[name]
                out.append(Variant(name, sections))
        return out


def _numbers(value: Any, where: str, kind: type) -> list[Any]:
    if (not isinstance(value, list) or not value
            or not all(isinstance(v, kind) and not isinstance(v, bool) for v in value)):
        raise ConfigError(f"{where} must be a non-empty list of {kind.__name__}s, got {value!r}")
    if len(set(value)) != len(value):
        raise ConfigError(f"{where} lists a value twice: {value!r}")
    return list(value)


def parse_study(data: dict[str, Any]) -> Study:
    """A :class:`Study` from a study file's contents, checked (one-line :class:`ConfigError`)."""
    data = json.loads(json.dumps(data))
    table = data.pop(STUDY_TABLE, None)
    if not isinstance(table, dict):
        raise ConfigError("a study file needs a [study] table with its evaluation seeds, e.g. "
                          "seeds = [0, 1, 2, 3, 4]")
    tasks = parse_variants(data.pop(TASKS_TABLE, None), TASKS_TABLE, allowed=SECTIONS)
    variants = parse_variants(data.pop(VARIANTS_TABLE, None), VARIANTS_TABLE, allowed=SECTIONS)
    if not tasks or not variants:
        raise ConfigError("a study needs [[tasks]] and [[variants]], each a name and whole "
                          "config sections")
    unknown = set(table) - {"seeds", "lr"}
    if unknown:
        raise ConfigError(f"[study] has unknown keys {sorted(unknown)}; it takes seeds and lr")
    seeds = _numbers(table.get("seeds"), "[study] seeds", int)
    lr = table.get("lr", {"protocol": "fixed"})
    if not isinstance(lr, dict) or lr.get("protocol") not in ("fixed", "tune"):
        raise ConfigError(f"[study.lr] protocol must be \"fixed\" or \"tune\", got "
                          f"{lr.get('protocol') if isinstance(lr, dict) else lr!r}")
    study = Study(data, tasks, variants, seeds, lr["protocol"])
    if study.protocol == "tune":
        unknown = set(lr) - {"protocol", "grid", "seeds"}
        if unknown:
            raise ConfigError(f"[study.lr] has unknown keys {sorted(unknown)}")
        study.grid = _numbers(lr.get("grid"), "[study.lr] grid", float)
        if any(not (rate > 0 and math.isfinite(rate)) for rate in study.grid):
            raise ConfigError(f"[study.lr] grid must hold positive rates, got {study.grid!r}")
        study.tuning_seeds = _numbers(lr.get("seeds"), "[study.lr] seeds", int)
        shared = sorted(set(study.tuning_seeds) & set(seeds))
        if shared:
            raise ConfigError(f"[study.lr] seeds {shared} are also evaluation seeds: tuning seeds "
                              "must be disjoint from [study] seeds")
    elif set(lr) - {"protocol"}:
        raise ConfigError("[study.lr] protocol = \"fixed\" takes no grid or seeds")
    config_from_dict(json.loads(json.dumps(data)))  # the base itself must be a valid config
    return study


def load_study(path: str | Path) -> Study:
    """Read a study file (see the module docstring)."""
    return parse_study(load_toml(path))


def tuning_grid(study: Study) -> Grid:
    return Grid(study.base, [("optimizer.lr", study.grid), ("run.seed", study.tuning_seeds)],
                study.configurations())


def evaluation_grid(study: Study, rates: dict[str, float] | None) -> Grid:
    return Grid(study.base, [("run.seed", study.seeds)], study.configurations(rates))


def validate_study(study: Study) -> dict[str, str]:
    """Every run of the study (tuning at each rate of the grid, evaluation at the first) checked
    as training would check it, without training: the problem of each invalid run, by name."""
    from gradflow.tools.sweep import validate_runs

    problems = {}
    if study.protocol == "tune":
        problems.update({f"tune/{k}": v for k, v in validate_runs(tuning_grid(study)).items()})
    rates = ({c.name: study.grid[0] for c in study.configurations()}
             if study.protocol == "tune" else None)
    problems.update({f"eval/{k}": v
                     for k, v in validate_runs(evaluation_grid(study, rates)).items()})
    return problems


def chosen_rates(result: SweepResult) -> dict[str, float]:
    """Per configuration, the learning rate with the lowest mean final loss over the tuning
    seeds (a failed or non-finite run counts as +∞; ties go to the first rate of the grid)."""
    losses: dict[tuple[str, float], list[float]] = {}
    for run in result.runs:
        values = dict(run.values)
        outcome = result.results.get(run.name, {})
        final = (outcome.get("summary") or {}).get("final_loss")
        ok = outcome.get("status") == "completed" and isinstance(final, float) \
            and math.isfinite(final)
        losses.setdefault((values["variant"], values["optimizer.lr"]), []).append(
            final if ok else math.inf)
    best: dict[str, tuple[float, float]] = {}
    for (name, rate), values in losses.items():
        mean = math.fsum(values) / len(values) if all(map(math.isfinite, values)) else math.inf
        if name not in best or mean < best[name][0]:
            best[name] = (mean, rate)
    return {name: rate for name, (_, rate) in best.items()}


def confidence_half_width(values: list[float]) -> float | None:
    """t₀.₉₇₅,ₙ₋₁ · s/√n of ``values`` (None for fewer than two)."""
    if len(values) < 2:
        return None
    from scipy.stats import t

    return float(t.ppf(0.975, len(values) - 1)) * statistics.stdev(values) / math.sqrt(len(values))


def state_floats_per_param(run_dir: Path, n_params: int) -> float | None:
    """The estimator's state in floats per parameter, from the run's newest checkpoint."""
    try:
        arrays, _ = load_checkpoint(run_dir / CHECKPOINT)
    except CheckpointError:
        return None
    return sum(a.size for k, a in arrays.items() if k.startswith("estimator.")) / n_params


def mean_alignment(run_dirs: list[Path]) -> float | None:
    """The mean ``align_cos`` of the runs' metrics lines (None without measurements)."""
    values = [line["align_cos"] for d in run_dirs for line in read_metrics(d)
              if isinstance(line.get("align_cos"), float)]
    return math.fsum(values) / len(values) if values else None


def leaderboard(study: Study, result: SweepResult,
                rates: dict[str, float] | None) -> list[dict[str, Any]]:
    """One row per task × variant of the evaluation runs (module docstring)."""
    rows = []
    for config in study.configurations(rates):
        task, variant = config.name.split(JOIN, 1)
        runs = [r for r in result.runs if dict(r.values)["variant"] == config.name]
        outcomes = [result.results.get(r.name, {}) for r in runs]
        done = [o["summary"] for o in outcomes if o.get("status") == "completed"]
        finals = [s["final_loss"] for s in done if isinstance(s.get("final_loss"), float)]
        mean = math.fsum(finals) / len(finals) if finals else None
        optimum = done[0].get("optimum") if done else None
        memoryless = (done[0].get("references") or {}).get(MEMORYLESS) if done else None
        speeds = [s["steps_per_s"] for s in done if s.get("steps_per_s")]
        speed = statistics.median(speeds) if speeds else None
        rows.append({
            "task": task, "variant": variant,
            "lr": None if rates is None else rates[config.name],
            "optimizer": next((d for d in (optimizer_of(result.directory / r.name) for r in runs)
                               if d), ""),
            "seeds": " ".join(str(dict(r.values)["run.seed"]) for r in runs),
            "completed": f"{len(done)}/{len(runs)}",
            "final_loss": mean,
            "ci95": confidence_half_width(finals),
            "gap_optimum": None if mean is None or optimum is None else mean - optimum,
            "gap_memoryless": None if mean is None or memoryless is None else mean - memoryless,
            "steps_per_s": speed,
            "us_per_step": None if not speed else 1e6 / speed,
            "state_floats_per_param": (state_floats_per_param(result.directory / runs[0].name,
                                                              done[0]["n_params"])
                                       if done and done[0].get("n_params") else None),
            "align_cos": mean_alignment([result.directory / r.name for r, o in
                                         zip(runs, outcomes, strict=True)
                                         if o.get("status") == "completed"]),
        })
    return rows


def leaderboard_markdown(rows: list[dict[str, Any]]) -> str:
    head = ["task", "variant", "lr", "final loss (nats), 95 % CI", "gap to optimum",
            "gap to memoryless", "seeds", "steps/s", "µs/step", "state floats/param",
            "align cos", "optimizer"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        loss = "—" if r["final_loss"] is None else (
            f"{r['final_loss']:.4f}" + ("" if r["ci95"] is None else f" ± {r['ci95']:.4f}"))
        cells = [r["task"], r["variant"], "—" if r["lr"] is None else f"{r['lr']:g}", loss,
                 "—" if r["gap_optimum"] is None else f"{r['gap_optimum']:+.4f}",
                 "—" if r["gap_memoryless"] is None else f"{r['gap_memoryless']:+.4f}",
                 f"{r['seeds']} ({r['completed']})",
                 "—" if r["steps_per_s"] is None else f"{r['steps_per_s']:,.0f}",
                 "—" if r["us_per_step"] is None else f"{r['us_per_step']:.1f}",
                 "—" if r["state_floats_per_param"] is None
                 else f"{r['state_floats_per_param']:.2f}",
                 "—" if r["align_cos"] is None else f"{r['align_cos']:.3f}", r["optimizer"]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def leaderboard_csv(rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: "" if v is None else (repr(v) if isinstance(v, float) else v)
                      for k, v in row.items()} for row in rows)
    return out.getvalue()


@dataclass
class StudyResult:
    directory: Path
    rates: dict[str, float] | None
    tuning: SweepResult | None
    evaluation: SweepResult
    rows: list[dict[str, Any]]
    #: the figures written (``curves-TASK.png``; none without matplotlib)
    figures: list[Path] = field(default_factory=list)

    @property
    def failed(self) -> list[str]:
        return [*(self.tuning.failed if self.tuning else []), *self.evaluation.failed]


def run_study(study: Study, directory: str | Path, workers: int | None = None,
              scheduler: str | None = None,
              done: Callable[[str, Any, dict[str, Any]], None] | None = None) -> StudyResult:
    """Tune (``protocol = "tune"``), evaluate, and write the leaderboard into ``directory``; a
    run already completed there with the same configuration is not run again."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)

    def phase(name: str) -> Callable[[Any, dict[str, Any]], None] | None:
        return None if done is None else (lambda run, outcome: done(name, run, outcome))

    tuning, rates = None, None
    if study.protocol == "tune":
        tuning = run_sweep(tuning_grid(study), d / "tune", workers, scheduler, force=True,
                           done=phase("tune"), resume=True)
        rates = chosen_rates(tuning)
        atomic_write_bytes(d / "rates.json", (json.dumps(rates, indent=2) + "\n").encode())
    evaluation = run_sweep(evaluation_grid(study, rates), d / "eval", workers, scheduler,
                           force=True, done=phase("eval"), resume=True)
    rows = leaderboard(study, evaluation, rates)
    atomic_write_bytes(d / "leaderboard.csv", leaderboard_csv(rows).encode())
    atomic_write_bytes(d / "leaderboard.md", leaderboard_markdown(rows).encode())
    figures = write_figures(study, evaluation)
    return StudyResult(d, rates, tuning, evaluation, rows, figures)


def write_figures(study: Study, evaluation: SweepResult) -> list[Path]:
    """``DIR/curves-TASK.png`` per task: its variants' loss curves, the seeds' mean with a 95 %
    band, the optimum and memoryless levels (nothing without matplotlib, the ``plot`` extra)."""
    from gradflow.contracts.errors import PlotError
    from gradflow.tools.plot import learning_curves

    written = []
    for task in study.tasks:
        chosen = [r for r in evaluation.runs
                  if dict(r.values)["variant"].startswith(f"{task.name}{JOIN}")
                  and evaluation.results.get(r.name, {}).get("status") == "completed"]
        if not chosen:
            continue
        runs = [evaluation.directory / r.name for r in chosen]
        labels = [dict(r.values)["variant"].split(JOIN, 1)[1] for r in chosen]
        try:
            figure = learning_curves(runs, group_seeds=True, labels=labels,
                                     title=f"{task.name}: the variants, mean of "
                                           f"{len(study.seeds)} seeds and 95 % band")
        except PlotError:  # matplotlib is not installed
            return written
        written.append(figure.save(evaluation.directory.parent / f"curves-{task.name}.png"))
    return written
