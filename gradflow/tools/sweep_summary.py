"""The tables of a sweep: every run (``runs.csv``) and the runs aggregated over seeds
(``summary.csv``, ``summary.md``).

Runs are grouped by the values of every sweep key except ``run.seed``; each group reports how
many runs completed, which failed, and the mean ± standard deviation over its completed runs
(sample standard deviation, n − 1; empty for a single run) of the final loss (nats, the mean over
the run's last ``final_window`` steps) and, for cross-entropy tasks, the final bits. Groups keep
the grid's order, and each names the complete optimizer settings its runs trained with (from
their resolved ``config.json``: the estimator's optimizer defaults included, nothing hidden).
Only numbers that the computation determines enter the tables (no timings),
so the same grid gives the same tables on any engine; CSV cells hold full-precision floats,
Markdown cells four decimals.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gradflow.runfiles.config import OptimizerSection
from gradflow.runfiles.rundir import CONFIG, atomic_write_bytes

if TYPE_CHECKING:
    from gradflow.tools.sweep import SweepResult

SEED_KEY = "run.seed"
METRICS = ("final_loss", "final_bits")


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    mean = math.fsum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1))


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return " ".join(_cell(v) for v in value)
    return str(value)


def optimizer_of(run_dir: Path) -> str:
    """The optimizer settings a run trained with (:meth:`OptimizerSection.describe` of its
    resolved config), or "" when it has no readable config (a run that failed at the start)."""
    try:
        config = json.loads((run_dir / CONFIG).read_text(encoding="utf-8"))
        return OptimizerSection.model_validate(config["optimizer"]).describe()
    except (OSError, ValueError, KeyError, TypeError):
        return ""


def group_rows(result: SweepResult) -> list[dict[str, Any]]:
    """One row per combination of the non-seed keys, in the grid's order."""
    keys = [k for k in result.grid.keys if k != SEED_KEY]
    groups: dict[tuple[str, ...], list[Any]] = {}
    for run in result.runs:
        values = dict(run.values)
        groups.setdefault(tuple(_cell(values[k]) for k in keys), []).append(run)
    rows = []
    for label, runs in groups.items():
        outcomes = [result.results.get(r.name, {}) for r in runs]
        done = [o["summary"] for o in outcomes if o.get("status") == "completed"]
        row: dict[str, Any] = dict(zip(keys, label, strict=True))
        row["seeds"] = " ".join(
            _cell(dict(r.values).get(SEED_KEY, r.config.get("run", {}).get("seed", 0)))
            for r in runs)
        row["runs"] = len(runs)
        row["completed"] = len(done)
        row["failed"] = " ".join(r.name for r, o in zip(runs, outcomes, strict=True)
                                 if o.get("status") != "completed")
        row["optimizer"] = " | ".join(dict.fromkeys(
            d for d in (optimizer_of(result.directory / r.name) for r in runs) if d))
        for metric in METRICS:
            values = [s[metric] for s in done if isinstance(s.get(metric), float)]
            row[f"{metric}_mean"], row[f"{metric}_std"] = _mean_std(values)
        rows.append(row)
    return rows


def run_rows(result: SweepResult) -> list[dict[str, Any]]:
    """One row per run: its values, status, final loss and bits, held-out loss, error."""
    rows = []
    for run in result.runs:
        outcome = result.results.get(run.name, {})
        summary = outcome.get("summary") or {}
        rows.append({"name": run.name, **{k: _cell(v) for k, v in run.values},
                     "status": outcome.get("status", "not run"),
                     "steps": summary.get("steps"),
                     "final_loss": summary.get("final_loss"),
                     "final_bits": summary.get("final_bits"),
                     "eval_loss": summary.get("eval_loss"),
                     "optimizer": optimizer_of(result.directory / run.name),
                     "error": outcome.get("error")})
    return rows


def to_csv(rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    if rows:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: _cell(v) for k, v in row.items()} for row in rows)
    return out.getvalue()


def _pm(mean: float | None, std: float | None) -> str:
    if mean is None:
        return "—"
    return f"{mean:.4f}" if std is None else f"{mean:.4f} ± {std:.4f}"


def to_markdown(rows: list[dict[str, Any]], keys: list[str]) -> str:
    """The aggregated rows as a Markdown table."""
    bits = any(r["final_bits_mean"] is not None for r in rows)
    failed = any(r["failed"] for r in rows)
    head = [*keys, "seeds", "completed", "final loss (nats)"]
    head += ["final bits"] if bits else []
    head += ["optimizer"]
    head += ["failed"] if failed else []
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [*(str(r[k]) for k in keys), r["seeds"], f"{r['completed']}/{r['runs']}",
                 _pm(r["final_loss_mean"], r["final_loss_std"])]
        cells += [_pm(r["final_bits_mean"], r["final_bits_std"])] if bits else []
        cells += [r["optimizer"]]
        cells += [r["failed"] or ""] if failed else []
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_tables(result: SweepResult) -> str:
    """Write ``runs.csv``, ``summary.csv`` and ``summary.md``; return the Markdown table."""
    rows = group_rows(result)
    keys = [k for k in result.grid.keys if k != SEED_KEY]
    markdown = to_markdown(rows, keys)
    d = result.directory
    atomic_write_bytes(d / "runs.csv", to_csv(run_rows(result)).encode())
    atomic_write_bytes(d / "summary.csv", to_csv(rows).encode())
    atomic_write_bytes(d / "summary.md", markdown.encode())
    return markdown
