"""The experiments of docs/experiments/ in smoke mode (a few steps each), so that their configs and
scripts never rot, and the influence-balancing claim on a short run of the experiment."""

from __future__ import annotations

import importlib.util
import sys
import tomllib
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from gradflow.tools.sweep import parse_grid

EXPERIMENTS = Path(__file__).resolve().parents[1] / "docs" / "experiments"


def _script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"experiment_{name}", EXPERIMENTS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("grid", sorted(p.name for p in EXPERIMENTS.glob("*.toml")))
def test_grid_files_parse(grid: str) -> None:
    data = tomllib.loads((EXPERIMENTS / grid).read_text(encoding="utf-8"))
    assert parse_grid(data).runs()


def test_influence_balancing_short_run() -> None:
    """TBPTT(10) moves θ away from θ* = −1/6; RTRL ends within 0.01 of it (2,000 steps)."""
    run = _script("run_influence")
    results = run.main(["--smoke"])
    star = -1.0 / 6.0
    tbptt10 = results["tbptt(10)"][0]
    assert abs(tbptt10[-1] - star) > abs(tbptt10[0] - star)
    assert abs(results["rtrl"][0][-1] - star) < 0.01
    assert np.isclose(tbptt10[0], 0.5)


@pytest.mark.parametrize("name", ["run_add", "run_brackets"])
def test_sweep_experiments_smoke(name: str, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="the experiments draw their figures with "
                        "matplotlib (the plot extra)")
    directory = _script(name).main(["--smoke", "--out", str(tmp_path / "sweep")])
    pngs = list(directory.glob("*.png"))
    assert pngs and all(p.stat().st_size > 0 for p in pngs)
    assert "completed" in (directory / f"{name.removeprefix('run_')}.md").read_text()


def test_check_experiment_smoke() -> None:
    results = _script("run_check").main(["--smoke"])
    assert {m for m, _ in results} == {"rnn", "gru", "lstm"}
    for (_, est), row in results.items():
        assert np.isfinite(row["rel_var"])
        if est == "tbptt":  # truncation 5 over a trajectory of 5 steps: exact
            assert row["rel_bias"] < 1e-8
