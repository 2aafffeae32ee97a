"""Log–log plot of the time per online step against the number of parameters P, one line per
estimator, from the JSON of ``gradflow bench --json`` (the figure of docs/performance.md).

    python benchmarks/plot_scaling.py docs/performance/cpu-float64-b1.json \
        --out docs/performance/scaling-cpu-float64-b1.png

Several JSON files may be given (for example float64 and float32): each file gets its own line
style, except with ``--merge``, which draws them as one set (a later file adds the sizes an earlier
one lacks: the RTRL run at n = 16…128 next to the others at n = 64…1024). Grey guides: a cost ∝ P
through the fastest step at the largest P, and ∝ P² through RTRL's largest size. Needs
matplotlib (the ``plot`` extra: ``pip install -e ".[plot]"``). Not an asv benchmark (asv only
collects ``time_``, ``peakmem_``, ``track_``... functions).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

STYLES = ["-", "--", ":", "-."]
MARKERS = {"readout-only": "o", "tbptt": "s", "uoro": "^", "nobacktrack": "v",
           "kalman-nobacktrack": "D", "rtrl": "P"}


def load(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text(encoding="utf-8"))
    if "rows" not in data or "fits" not in data:
        raise SystemExit(f"{path}: not the JSON of `gradflow bench --json`")
    return data


def _label(name: str, data: dict[str, Any], several: bool) -> str:
    fit = data["fits"].get(name) or {}
    k = fit.get("exponent")
    text = name + (f"  (k = {k:.2f})" if k is not None else "")
    if several:
        text += f"  [{data['dtype']}, B = {data['batch']}]"
    return text


def merged(files: list[dict[str, Any]]) -> dict[str, Any]:
    """One data set from several files of the same settings: rows and fits of the first file
    where it has them, the others' rows for (estimator, n) pairs it lacks."""
    base = {**files[0], "rows": list(files[0]["rows"]), "fits": dict(files[0]["fits"])}
    seen = {(r["estimator"], r["n"]) for r in base["rows"]}
    for data in files[1:]:
        base["rows"] += [r for r in data["rows"] if (r["estimator"], r["n"]) not in seen]
        seen |= {(r["estimator"], r["n"]) for r in data["rows"]}
        for name, fit in data["fits"].items():
            base["fits"].setdefault(name, fit)
    return base


def draw(files: list[dict[str, Any]], title: str | None = None) -> Any:
    """A matplotlib Figure of µs per step against P (log–log)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10.5, 5.2))
    ax = fig.add_subplot(1, 1, 1)
    colors: dict[str, Any] = {}
    palette = iter(f"C{i}" for i in range(10))
    several = len(files) > 1
    for i, data in enumerate(files):
        names = list(dict.fromkeys(r["estimator"] for r in data["rows"]))
        for name in names:
            rows = sorted((r for r in data["rows"] if r["estimator"] == name),
                          key=lambda r: r["P"])
            if name not in colors:
                colors[name] = next(palette, "k")
            p = [r["P"] for r in rows]
            t = [r["us_per_step"] for r in rows]
            ax.plot(p, t, STYLES[i % len(STYLES)], marker=MARKERS.get(name, "o"),
                    color=colors[name], label=_label(name, data, several), markersize=5)
    rows = [r for d in files for r in d["rows"]]
    if rows:  # guides through the largest sizes: where pure ∝ P and ∝ P² costs would lie
        hi = max(r["P"] for r in rows)
        floor = min(r["us_per_step"] for r in rows if r["P"] == hi)
        lo = hi / 100.0
        ax.plot([lo, hi], [floor / 100.0, floor], color="0.7", linewidth=1, zorder=0)
        ax.annotate("∝ P", (lo, floor / 100.0), color="0.45", fontsize=8, va="bottom")
        rtrl = sorted((r for r in rows if r["estimator"] == "rtrl"), key=lambda r: r["P"])
        if len(rtrl) > 1:
            first, last = rtrl[0]["P"], rtrl[-1]
            start = last["us_per_step"] * (first / last["P"]) ** 2
            ax.plot([first, last["P"]], [start, last["us_per_step"]], color="0.7",
                    linewidth=1, zorder=0)
            ax.annotate("∝ P²", (first, start), color="0.45", fontsize=8, va="bottom")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("parameters P (rnn: P = n² + 5n + 2)")
    ax.set_ylabel("µs per online step (median)")
    first = files[0]
    machine = first.get("machine", {})
    ax.set_title(title or (f"one online step, add/rnn, {first['backend']}, "
                           f"{machine.get('cpu', '?')}"), fontsize=9)
    ax.grid(True, which="both", linewidth=0.3, alpha=0.5)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    fig.tight_layout()
    return fig


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", nargs="+", type=Path, help="files of gradflow bench --json")
    parser.add_argument("--out", "-o", type=Path, required=True, help="the PNG to write")
    parser.add_argument("--title", default=None)
    parser.add_argument("--dpi", type=int, default=110)
    parser.add_argument("--merge", action="store_true",
                        help="draw the files as one data set (see above)")
    parser.add_argument("--also", nargs="*", type=Path, default=[],
                        help="more files drawn with their own line style (e.g. float32)")
    args = parser.parse_args(argv)
    main_files = [load(p) for p in args.json]
    files = [merged(main_files)] if args.merge else main_files
    fig = draw(files + [load(p) for p in args.also], args.title)
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=args.dpi)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
