"""`gradflow study`: variants × tasks, rates tuned on seeds disjoint from the evaluation seeds, the
leaderboard with 95 % confidence intervals, and a restarted study that runs nothing twice."""

from __future__ import annotations

import csv
import json
import math
import tomllib
from pathlib import Path

import pytest

from gradflow.contracts.errors import ConfigError
from gradflow.tools.study import (
    chosen_rates,
    confidence_half_width,
    load_study,
    parse_study,
    run_study,
)
from gradflow.tools.sweep import Grid, SweepResult, SweepRun
from tests.helpers import run_cli

STUDY = """
[study]
seeds = [0, 1, 2]
[study.lr]
protocol = "tune"
grid = [0.003, 0.03]
seeds = [100, 101]

[run]
steps = 400
log_every = 100
eval_every = 0
checkpoint_every = 0
final_window = 200
align_every = 100

[optimizer]
name = "sgd"
schedule = "constant"

[[tasks]]
name = "add"
task = { name = "add" }
model = { name = "rnn", n_hidden = 6 }

[[variants]]
name = "tbptt-4"
estimator = { name = "tbptt", truncation = 4 }

[[variants]]
name = "uoro"
estimator = { name = "uoro" }
optimizer = { name = "sgd", schedule = "constant", clip_rec = 0.1 }
"""


@pytest.fixture
def study_file(tmp_path: Path) -> Path:
    path = tmp_path / "study.toml"
    path.write_text(STUDY)
    return path


def test_a_study_tunes_evaluates_and_writes_the_leaderboard(study_file, tmp_path, monkeypatch,
                                                            capsys) -> None:
    out = tmp_path / "out"
    code, stdout, err = run_cli(monkeypatch, capsys, "study", str(study_file), "--out", str(out),
                                "--workers", "2", "-q")
    assert code == 0, err
    rates = json.loads((out / "rates.json").read_text())
    assert set(rates) == {"add~tbptt-4", "add~uoro"} and set(rates.values()) <= {0.003, 0.03}
    # tuning runs: the grid × the tuning seeds; evaluation runs: the evaluation seeds only
    tuned = {r["name"] for r in csv.DictReader((out / "tune" / "runs.csv").open())}
    assert len(tuned) == 2 * 2 * 2 and all("run.seed=10" in name for name in tuned)
    evaluated = list(csv.DictReader((out / "eval" / "runs.csv").open()))
    assert sorted({r["run.seed"] for r in evaluated}) == ["0", "1", "2"]
    rows = {r["variant"]: r for r in csv.DictReader((out / "leaderboard.csv").open())}
    assert set(rows) == {"tbptt-4", "uoro"}
    for name, row in rows.items():
        assert float(row["lr"]) == rates[f"add~{name}"]
        assert row["seeds"] == "0 1 2" and row["completed"] == "3/3"
        assert float(row["ci95"]) > 0 and float(row["steps_per_s"]) > 0
        assert float(row["gap_optimum"]) == pytest.approx(float(row["final_loss"]) - 0.45445,
                                                          abs=1e-4)
        # the chosen rate is the one the evaluation runs trained with, and it is written out
        assert row["optimizer"].startswith(f"sgd lr {float(row['lr']):g}, constant schedule")
    assert "clip_rec 0.1" in rows["uoro"]["optimizer"]
    # n = 6: P = 68, P_rec = 54; UORO keeps ṽ (6), w (54) and σ (1)
    assert float(rows["uoro"]["state_floats_per_param"]) == pytest.approx(61 / 68)
    for row in rows.values():  # run.align_every = 100: the mean cosine with RTRL
        assert -1.0 <= float(row["align_cos"]) <= 1.0
    assert "no clipping" in rows["tbptt-4"]["optimizer"]
    config = json.loads(next((out / "eval").glob("variant=add_uoro,run.seed=1")).joinpath(
        "config.json").read_text())
    assert config["optimizer"]["lr"] == rates["add~uoro"] and config["run"]["seed"] == 1
    assert "| add | uoro |" in stdout and "95 % CI" in stdout
    if __import__("importlib").util.find_spec("matplotlib") is not None:
        assert (out / "curves-add.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert "curves-add.png" in stdout


def test_a_restarted_study_runs_nothing_twice(study_file, tmp_path) -> None:
    study = load_study(study_file)
    ran: list[str] = []
    first = run_study(study, tmp_path / "out", workers=2,
                      done=lambda phase, run, outcome: ran.append(f"{phase}/{run.name}"))
    assert len(ran) == 8 + 6 and not first.failed
    ran.clear()
    again = run_study(study, tmp_path / "out", workers=2,
                      done=lambda phase, run, outcome: ran.append(f"{phase}/{run.name}"))
    assert ran == [] and again.rows == first.rows
    # a changed configuration is run again
    study.seeds = [0, 1, 2, 3]
    run_study(study, tmp_path / "out", workers=2,
              done=lambda phase, run, outcome: ran.append(f"{phase}/{run.name}"))
    assert sorted(ran) == ["eval/variant=add_tbptt-4,run.seed=3",
                           "eval/variant=add_uoro,run.seed=3"]


def test_the_confidence_interval_shrinks_with_more_seeds() -> None:
    assert confidence_half_width([0.5]) is None
    values = [0.50, 0.52, 0.49, 0.53, 0.51, 0.50, 0.52, 0.48]
    widths = [confidence_half_width(values[:n]) for n in (2, 4, 8)]
    assert widths[0] > widths[1] > widths[2] > 0
    # t(0.975, 1) = 12.706: two seeds give a wide interval
    assert widths[0] == pytest.approx(12.7062 * abs(0.50 - 0.52) / math.sqrt(2) / math.sqrt(2),
                                      rel=1e-4)


def test_the_chosen_rate_has_the_lowest_mean_and_a_failure_loses() -> None:
    runs, results = [], {}
    for rate, seed, final in ((0.1, 0, 0.5), (0.1, 1, 0.7), (0.3, 0, 0.55), (0.3, 1, 0.56),
                              (1.0, 0, 0.1), (1.0, 1, None)):
        name = f"lr={rate},seed={seed}"
        runs.append(SweepRun(name, (("variant", "t~v"), ("optimizer.lr", rate),
                                    ("run.seed", seed)), {}))
        results[name] = ({"status": "completed", "summary": {"final_loss": final}}
                         if final is not None else {"status": "failed", "error": "diverged"})
    result = SweepResult(Path("."), Grid({}, []), runs, results)
    assert chosen_rates(result) == {"t~v": 0.3}  # 0.555 < 0.6; 1.0 failed once: +inf


@pytest.mark.parametrize(("edit", "message"), [
    (lambda s: "[run]" + s.split("[run]")[1], "needs a [study] table"),
    (lambda s: s.replace("seeds = [0, 1, 2]\n", "", 1), "[study] seeds must be a non-empty list"),
    (lambda s: s.replace("seeds = [100, 101]", "seeds = [2, 100]"),
     "[study.lr] seeds [2] are also evaluation seeds: tuning seeds must be disjoint"),
    (lambda s: s.replace('protocol = "tune"', 'protocol = "best"'),
     "[study.lr] protocol must be \"fixed\" or \"tune\""),
    (lambda s: s.replace("grid = [0.003, 0.03]", "grid = [0.003, -1.0]"),
     "[study.lr] grid must hold positive rates"),
    (lambda s: s.replace("seeds = [0, 1, 2]", "seeds = []"),
     "[study] seeds must be a non-empty list"),
    (lambda s: s.split("[[tasks]]")[0], "a study needs [[tasks]] and [[variants]]"),
])
def test_study_file_errors_are_one_line(tmp_path, monkeypatch, capsys, edit, message) -> None:
    path = tmp_path / "study.toml"
    path.write_text(edit(STUDY))
    code, _, err = run_cli(monkeypatch, capsys, "study", str(path), "--out", str(tmp_path / "o"))
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_fixed_protocol_keeps_each_variants_own_rate() -> None:
    text = STUDY.replace('protocol = "tune"\ngrid = [0.003, 0.03]\nseeds = [100, 101]',
                         'protocol = "fixed"')
    study = parse_study(tomllib.loads(text))
    assert study.protocol == "fixed" and study.grid == [] and study.tuning_seeds == []
    with pytest.raises(ConfigError, match="takes no grid or seeds"):
        parse_study(tomllib.loads(text.replace('protocol = "fixed"',
                                               'protocol = "fixed"\ngrid = [1.0]')))


BUILT_IN = Path(__file__).parents[1] / "docs" / "studies" / "online-estimators.toml"


def test_the_built_in_study_validates(monkeypatch, capsys) -> None:
    """Every one of its runs (tuning at each rate, evaluation) is a valid configuration."""
    code, out, err = run_cli(monkeypatch, capsys, "study", str(BUILT_IN), "--dry-run")
    assert code == 0, err
    assert out.strip() == ("35 configurations (5 tasks × 7 variants): 350 tuning runs, "
                           "175 evaluation runs")


def test_the_built_in_study_in_small(tmp_path) -> None:
    """A smoke version: the built-in study's variants on two of its tasks, few short runs."""
    study = load_study(BUILT_IN)
    study.tasks = [t for t in study.tasks if t.name in ("add", "influence")]
    study.seeds, study.grid, study.tuning_seeds = [0, 1], [0.01], [100]
    study.base["run"].update(steps=200, log_every=100, checkpoint_every=0, final_window=100,
                             align_every=50)
    result = run_study(study, tmp_path / "small", workers=2)
    assert not result.failed
    assert [(r["task"], r["variant"]) for r in result.rows] == [
        (t, v.name) for t in ("add", "influence") for v in study.variants]
    for row in result.rows:
        assert row["lr"] == 0.01 and row["completed"] == "2/2" and row["final_loss"] is not None
        # the influence model has no readout parameters: readout-only's direction is zero and
        # its cosine undefined
        if (row["task"], row["variant"]) != ("influence", "readout-only"):
            assert -1.0 <= row["align_cos"] <= 1.0, row
        else:
            assert row["align_cos"] is None


def test_a_study_dry_run_names_invalid_runs(study_file, monkeypatch, capsys) -> None:
    study_file.write_text(STUDY.replace('estimator = { name = "uoro" }',
                                        'estimator = { name = "uoro", truncation = 3 }'))
    code, out, err = run_cli(monkeypatch, capsys, "study", str(study_file), "--dry-run")
    assert code == 2
    invalid = [line for line in out.splitlines() if ": invalid: " in line]
    assert len(invalid) == 4 + 3  # tuning: 2 rates × 2 seeds; evaluation: 3 seeds
    assert invalid[0].startswith("tune/variant=add_uoro,optimizer.lr=0.003,run.seed=100: "
                                 "invalid: estimator 'uoro': invalid options (truncation")
    assert err.strip().startswith("error: 7 runs have an invalid configuration: tune/")
