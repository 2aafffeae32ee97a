"""Markdown tables of ``gradflow bench --json`` files (the tables of docs/performance.md).

    python benchmarks/tables.py docs/performance/cpu-float64-b1.json [more.json ...]

For each file: one table of µs per step by estimator (rows) and n (columns) with the ratio to
the forward-only step, one of the estimator's state memory, one of the ratio to the
memory-bandwidth bound with the NumPy calls per step (files that have them), and one of the
fitted exponents (with those of the marginal cost t − t_fwd, where the file has them).
Not an asv benchmark (asv only collects ``time_``, ``peakmem_``, ``track_``... functions).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from gradflow.tools.bench import CONTROL


def _cell(row: dict[str, Any] | None) -> str:
    if row is None:
        return "–"
    ratio = row.get("ratio_to_forward")
    text = f"{row['us_per_step']:,.0f}" if row["us_per_step"] >= 100 else \
        f"{row['us_per_step']:.1f}"
    return text + (f" ({ratio:.2f}×)" if ratio is not None and row["estimator"] !=
                   "readout-only" else "")


def step_time_table(data: dict[str, Any]) -> list[str]:
    names = list(dict.fromkeys(r["estimator"] for r in data["rows"]))
    sizes = sorted({r["n"] for r in data["rows"]})
    rows = {(r["estimator"], r["n"]): r for r in data["rows"]}
    lines = ["| estimator | " + " | ".join(f"n = {n}" for n in sizes) + " |",
             "|---|" + "---:|" * len(sizes),
             "| P | " + " | ".join(f"{n * n + 5 * n + 2:,}" for n in sizes) + " |"]
    for name in names:
        lines.append(f"| {name} | " + " | ".join(_cell(rows.get((name, n))) for n in sizes)
                     + " |")
    return lines


def memory_table(data: dict[str, Any]) -> list[str]:
    """Per estimator and n: state floats per parameter / peak bytes allocated by one step in
    units of P floats (the dtype's size)."""
    names = list(dict.fromkeys(r["estimator"] for r in data["rows"]))
    sizes = sorted({r["n"] for r in data["rows"]})
    rows = {(r["estimator"], r["n"]): r for r in data["rows"]}
    item = 4 if data["dtype"] == "float32" else 8

    def cell(row: dict[str, Any] | None) -> str:
        if row is None:
            return "–"
        peak = row.get("peak_step_bytes")
        peak_text = "–" if peak is None else f"{peak / item / row['P']:.2f}"
        return f"{row['state_floats_per_param']:.2f} / {peak_text}"

    lines = ["| estimator | " + " | ".join(f"n = {n}" for n in sizes) + " |",
             "|---|" + "---:|" * len(sizes)]
    for name in names:
        lines.append(f"| {name} | " + " | ".join(cell(rows.get((name, n))) for n in sizes)
                     + " |")
    return lines


def bound_table(data: dict[str, Any]) -> list[str]:
    """Per estimator and n: the step time over its memory-bandwidth bound / NumPy calls per step
    (``–`` where not measured or not counted); no table for a file without the bound."""
    if not any(r.get("ratio_to_bound") for r in data["rows"]):
        return []
    names = list(dict.fromkeys(r["estimator"] for r in data["rows"]))
    sizes = sorted({r["n"] for r in data["rows"]})
    rows = {(r["estimator"], r["n"]): r for r in data["rows"]}

    def cell(row: dict[str, Any] | None) -> str:
        if row is None:
            return "–"
        calls = row.get("numpy_calls_per_step")
        return f"{row['ratio_to_bound']:.1f}× / " + ("–" if calls is None else f"{calls:,.0f}")

    lines = ["| estimator | " + " | ".join(f"n = {n}" for n in sizes) + " |",
             "|---|" + "---:|" * len(sizes),
             "| bandwidth (GB/s) | " + " | ".join(
                 f"{b['bytes_per_s'] / 1e9:.3g}" for b in data["bandwidth"]) + " |"]
    for name in names:
        lines.append(f"| {name} | " + " | ".join(cell(rows.get((name, n))) for n in sizes)
                     + " |")
    return lines


def ratio_slope(data: dict[str, Any], name: str, sizes: list[int]) -> float | None:
    """Log–log slope of the ratio to the forward-only step against P: ≈ 0 when the estimator
    grows like the forward-only step (both O(P)), ≈ 1 when it grows P times faster (O(P²))."""
    from gradflow.tools.scaling import loglog_slope

    rows = [r for r in data["rows"] if r["estimator"] == name and r["n"] in sizes
            and r.get("ratio_to_forward")]
    if len({r["P"] for r in rows}) < 2:
        return None
    return loglog_slope([r["P"] for r in rows], [r["ratio_to_forward"] for r in rows])[0]


def _marginal_cells(fit: dict[str, Any]) -> str:
    """The marginal fit's sizes, log–log slope and k (``–`` where there is none)."""
    marginal = fit.get("marginal")
    if marginal is None or marginal["fit"] is None:
        return " | " + ("n/a" if marginal and not marginal["sizes"] else "–") + " | – | –"
    m = marginal["fit"]
    k = "–" if m["exponent"] is None else f"{m['exponent']:.2f}"
    return f" | {marginal['sizes'][0]}…{marginal['sizes'][-1]} | {m['slope']:.2f} | {k}"


def fit_table(data: dict[str, Any]) -> list[str]:
    marginal = any("marginal" in fit for fit in data["fits"].values())
    lines = ["| estimator | sizes n | log–log slope | k of t = t₀ + c·P^k | t₀ (µs) "
             "| slope of × forward |" + (" t − t_fwd: sizes n | its slope | its k |"
                                         if marginal else ""),
             "|---|---|---:|---:|---:|---:|" + ("---|---:|---:|" if marginal else "")]
    for name, fit in data["fits"].items():
        control = name == CONTROL
        rows = data.get("control", []) if control else [
            r for r in data["rows"] if r["estimator"] == name]
        ns = sorted({r["n"] for r in rows
                     if data.get("fit_min_n") is None or r["n"] >= data["fit_min_n"]})
        k = "–" if fit["exponent"] is None else f"{fit['exponent']:.2f}"
        t0 = "–" if fit["overhead"] is None else f"{fit['overhead']:.0f}"
        rs = None if name == "readout-only" or control else ratio_slope(data, name, ns)
        rs_text = "–" if rs is None else f"{rs:+.2f}"
        lines.append(f"| {name} | {ns[0]}…{ns[-1]} | {fit['slope']:.2f} | {k} | {t0} "
                     f"| {rs_text}" + (_marginal_cells(fit) if marginal else "") + " |")
    return lines


def render(path: Path) -> str:
    data = json.loads(path.read_text(encoding="utf-8"))
    head = (f"**{path.name}**: {data['backend']}/{data['dtype']}, B = {data['batch']}, "
            f"BLAS threads {data['threads']}, median of {data['repeat']} blocks × "
            f"{data.get('rounds', 1)} rounds of ≥ {data['min_time']} s, "
            f"tbptt truncation {data['truncation']}; {data['machine'].get('cpu')}, "
            f"{data['machine'].get('cpu_count')} CPUs, NumPy {data['machine'].get('numpy')}")
    parts = [head, "", "µs per step (× the forward-only step at the same n):", "",
             *step_time_table(data), "",
             "Memory: the estimator's state in floats per parameter / the most one step "
             "allocates, in units of P floats:", "", *memory_table(data), "",
             *(["The step time over its memory-bandwidth bound (docs/performance.md) / NumPy "
                "calls per step:", "", *bound_table(data), ""] if bound_table(data) else []),
             "Fitted scaling of the step time t with P:", "", *fit_table(data)]
    return "\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", nargs="+", type=Path, help="files of gradflow bench --json")
    args = parser.parse_args(argv)
    print("\n".join(render(p) for p in args.json))


if __name__ == "__main__":
    main()
