"""The catalogue of docs/estimators/README.md: every registered estimator, measured.

For every estimator in the registry (nothing listed by hand: a new built-in or an installed
plugin is measured too):

* its kind, as declared, and the primitives it needs;
* ``gradflow bench --json`` on ``rnn`` at n = 32, 128, 512 (one BLAS thread): µs per online step
  (task, forward, loss, estimator, clipping, optimizer), the ratio to the forward-only step and
  the estimator's state in floats per parameter;
* ``gradflow.estimator_statistics`` on ``rnn``, ``gru`` and ``lstm`` (n = 8, T = 20, N = 300
  samples of a stochastic estimator, one of a deterministic one) against RTRL: the mean over
  the steps of the relative mean squared error E‖ĝ_t − g_t‖² / ‖g_t‖² (for an unbiased
  estimator its relative variance) and of the per-sample cosine cos(ĝ_t, g_t) — for an
  estimator that does not return a direction every step (TBPTT, BPTT), of its estimate of the
  gradient summed over the trajectory ("(sum)"); "—" where the estimator does not fit the model
  (it lacks a primitive: the needs column says which).

Writes catalogue.json beside this file and the table between the markers of README.md::

    python docs/estimators/catalogue.py               # ≈ 10 minutes of one core
    python docs/estimators/catalogue.py --smoke       # n = 16, N = 20: a quick run, nothing written
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import gradflow

HERE = Path(__file__).resolve().parent
MODELS = ("rnn", "gru", "lstm")
BEGIN, END = "<!-- catalogue:begin -->", "<!-- catalogue:end -->"


def gradflow_command() -> str:
    """The ``gradflow`` console script of this interpreter's environment."""
    local = Path(sys.executable).with_name("gradflow")
    return str(local) if local.exists() else (shutil.which("gradflow") or "gradflow")


def bench(estimators: list[str], sizes: list[int]) -> dict[tuple[str, int], dict[str, Any]]:
    """``gradflow bench --json`` rows by (estimator, n)."""
    out = subprocess.run(
        [gradflow_command(), "bench", "-e", ",".join(estimators), "-n",
         ",".join(map(str, sizes)), "--json", "--repeat", "5", "--count-budget", "0",
         "--max-step-ms", "400"],
        check=True, capture_output=True, text=True).stdout
    return {(row["estimator"], row["n"]): row for row in json.loads(out)["rows"]}


def statistics(estimator: str, model_name: str, samples: int, hidden: int,
               steps: int) -> dict[str, Any] | None:
    """Mean over the steps of the relative MSE and of the per-sample cosine (for an estimator
    that returns a direction every step; else the row of the sum over the trajectory), or
    ``None`` when the estimator does not fit the model."""
    model = gradflow.create_model(model_name, n_hidden=hidden, n_in=3)
    cls = gradflow.get_registry().get("estimator", estimator).cls
    if not cls.requires <= model.capabilities:
        return None
    est = gradflow.create_estimator(estimator, model)
    per_step = cls.online and est.update_interval == 1
    result = gradflow.estimator_statistics(model, est, samples=samples, steps=steps)
    rows = [r for r in result.rows if (r.step is not None) == per_step and r.ref_norm > 0
            and math.isfinite(r.rel_var)]
    return {"rel_mse": sum(r.rel_var for r in rows) / len(rows),
            "cos": sum(r.mean_cos for r in rows) / len(rows),
            "samples": result.samples, "per_step": per_step}


def needs(cls: type[gradflow.Estimator]) -> str:
    return ", ".join(sorted(cls.requires)) or "—"


def fmt(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "—"
    return f"{value:.{digits}g}"


def table(data: dict[str, Any]) -> str:
    sizes = data["sizes"]
    head = ("| estimator | kind | µs/step " + " / ".join(f"n={n}" for n in sizes)
            + " | × forward-only (n=" + str(sizes[-1]) + ") | state floats/param (n="
            + str(sizes[-1]) + ") | " + " | ".join(f"rel. MSE, cos ({m})" for m in MODELS)
            + " | needs |")
    lines = [head, "|" + "---|" * (6 + len(MODELS) - 2)]
    lines[1] = "|---|---|---:|---:|---:|" + "---:|" * len(MODELS) + "---|"
    for est in data["estimators"]:
        b = est["bench"]
        times = " / ".join(fmt(b.get(str(n), {}).get("us_per_step"), 3) for n in sizes)
        last = b.get(str(sizes[-1]), {})
        stats = []
        for m in MODELS:
            s = est["check"].get(m)
            stats.append("—" if s is None else f"{s['rel_mse']:.3g}, {s['cos']:.2f}"
                         + ("" if s["per_step"] else " (sum)"))
        name = f"`{est['name']}`"
        if est["page"]:
            name = f"[{name}]({est['page']})"
        lines.append(f"| {name} | {est['kind']} | {times} | "
                     f"{fmt(last.get('ratio_to_forward'))} | "
                     f"{fmt(last.get('state_floats_per_param'))} | " + " | ".join(stats)
                     + f" | {est['needs']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes; nothing written")
    args = parser.parse_args(argv)
    sizes = [16] if args.smoke else [32, 128, 512]
    samples, hidden, steps = (20, 4, 4) if args.smoke else (300, 8, 20)
    registry = gradflow.get_registry()
    infos = list(registry.entries["estimator"].values())
    online = [i.name for i in infos if i.cls.online]
    timed = bench(online, sizes)
    out = []
    for info in infos:
        pages = [f"{name}.md" for name in (info.name, info.name.replace("bptt", "tbptt"))
                 if (HERE / f"{name}.md").exists()]
        out.append({
            "name": info.name, "kind": info.cls.kind, "needs": needs(info.cls),
            "page": pages[0] if pages else None,
            "bench": {str(n): {k: timed[(info.name, n)].get(k) for k in
                               ("us_per_step", "ratio_to_forward", "state_floats_per_param")}
                      for n in sizes if (info.name, n) in timed},
            "check": {m: statistics(info.name, m, samples, hidden, steps) for m in MODELS},
        })
        print(info.name, "done", file=sys.stderr)
    data = {"sizes": sizes, "samples": samples, "hidden": hidden, "steps": steps,
            "gradflow_version": gradflow.__version__, "estimators": out}
    text = table(data)
    print(text)
    if args.smoke:
        return
    (HERE / "catalogue.json").write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    readme = HERE / "README.md"
    body = readme.read_text(encoding="utf-8")
    before, rest = body.split(BEGIN, 1)
    _, after = rest.split(END, 1)
    readme.write_text(f"{before}{BEGIN}\n{text}\n{END}{after}", encoding="utf-8")


if __name__ == "__main__":
    main()
