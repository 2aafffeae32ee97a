"""`gradflow sweep`: a grid on the default process pool and on a Dask LocalCluster gives the same
summary; failed runs are reported by name while the others complete; grid errors are one line;
variants of whole sections cross the axes, and --dry-run validates every run."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from gradflow.tools.sweep import load_grid
from tests.helpers import run_cli

GRID = """
[run]
steps = 600
log_every = 100
eval_every = 0
checkpoint_every = 0
final_window = 200
[model]
n_hidden = 6
[sweep]
"estimator.name" = ["tbptt", "uoro"]
"run.seed" = [0, 1]
"""
NAMES = ["estimator.name=tbptt,run.seed=0", "estimator.name=tbptt,run.seed=1",
         "estimator.name=uoro,run.seed=0", "estimator.name=uoro,run.seed=1"]


cli = run_cli


@pytest.fixture
def grid(tmp_path: Path) -> Path:
    path = tmp_path / "grid.toml"
    path.write_text(GRID)
    return path


def test_pool_and_dask_give_the_same_summary(grid, tmp_path, monkeypatch, capsys) -> None:
    distributed = pytest.importorskip("distributed")
    pool, dask = tmp_path / "pool", tmp_path / "dask"
    code, out, err = cli(monkeypatch, capsys, "sweep", str(grid), "--out", str(pool), "-q")
    assert code == 0, err
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None) as cluster:
        code, dask_out, err = cli(monkeypatch, capsys, "sweep", str(grid), "--out", str(dask),
                                  "--scheduler", cluster.scheduler_address, "-q")
    assert code == 0, err

    for name in ("summary.csv", "summary.md", "runs.csv"):
        assert (pool / name).read_text() == (dask / name).read_text(), name
    assert out.replace(str(pool), "DIR") == dask_out.replace(str(dask), "DIR")
    rows = list(csv.DictReader((pool / "summary.csv").open()))
    assert [(r["estimator.name"], r["seeds"], r["completed"]) for r in rows] == [
        ("tbptt", "0 1", "2"), ("uoro", "0 1", "2")]
    runs = {r["name"]: r for r in csv.DictReader((pool / "runs.csv").open())}
    assert list(runs) == NAMES
    for row in rows:  # mean ± std over the two seeds of the per-run final losses
        losses = [float(runs[f"estimator.name={row['estimator.name']},run.seed={s}"]
                        ["final_loss"]) for s in (0, 1)]
        assert float(row["final_loss_mean"]) == pytest.approx(sum(losses) / 2, rel=1e-12)
        assert float(row["final_loss_std"]) == pytest.approx(abs(losses[0] - losses[1])
                                                             / 2 ** 0.5, rel=1e-9)
        assert losses[0] != losses[1]  # the seeds differ
    for name in NAMES:  # the runs themselves: identical numbers, each in its own directory
        assert (pool / name / "metrics.jsonl").read_bytes() == \
            (dask / name / "metrics.jsonl").read_bytes()
        config = json.loads((dask / name / "config.json").read_text())
        assert config["run"]["out"] == str(dask / name)
        summary = json.loads((dask / name / "summary.json").read_text())
        assert summary["run_dir"] == str(dask / name) and summary["status"] == "completed"
    manifest = json.loads((dask / "sweep.json").read_text())
    assert [r["status"] for r in manifest["runs"]] == ["completed"] * 4
    assert "| tbptt | 0 1 | 2/2 |" in out


def test_failed_runs_are_named_and_the_others_complete(tmp_path, monkeypatch, capsys) -> None:
    grid = tmp_path / "grid.toml"
    grid.write_text(GRID.replace('"estimator.name" = ["tbptt", "uoro"]',
                                 '"estimator.name" = ["tbptt"]\n"estimator.truncation" = [0, 5]'))
    out = tmp_path / "out"
    code, stdout, err = cli(monkeypatch, capsys, "sweep", str(grid), "--out", str(out), "-q")
    assert code == 1
    bad = ["estimator.name=tbptt,estimator.truncation=0,run.seed=0",
           "estimator.name=tbptt,estimator.truncation=0,run.seed=1"]
    for name in bad:
        assert f"failed: {name}: " in err and "truncation" in err
        assert "greater than or equal to 1" in (out / name / "error.txt").read_text()
    assert err.strip().splitlines()[-1] == (
        f"error: 2 of 4 runs failed: {', '.join(bad)} (see error.txt in their directories)")
    # a run that failed before training has no optimizer to report; the others name theirs
    assert f"| tbptt | 0 | 0 1 | 0/2 | — | — |  | {' '.join(bad)} |" in stdout
    assert ("| tbptt | 5 | 0 1 | 2/2 |" in stdout
            and "| adam lr 0.003, smooth-inv-sqrt schedule (α 0.01), β₁ 0.9, β₂ 0.999, ε 1e-08, "
                "no clipping |  |" in stdout)
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert [(r["estimator.truncation"], r["completed"], r["failed"]) for r in rows] == [
        ("0", "0", " ".join(bad)), ("5", "2", "")]
    assert rows[0]["final_loss_mean"] == "" and float(rows[1]["final_loss_mean"]) > 0
    for seed in (0, 1):
        done = out / f"estimator.name=tbptt,estimator.truncation=5,run.seed={seed}"
        assert json.loads((done / "summary.json").read_text())["status"] == "completed"
    # the sweep directory is not overwritten without --force
    code, _, err = cli(monkeypatch, capsys, "sweep", str(grid), "--out", str(out), "-q")
    assert code == 2 and "already exists and is not empty; pass --force" in err


@pytest.mark.parametrize(("text", "message"), [
    ("[run]\nsteps = 10\n", "a sweep grid needs a [sweep] table"),
    ("[[variants]]\nestimator = { name = 'uoro' }\n", "[[variants]] #1: needs a name"),
    ("[[variants]]\nname = 'a b'\nestimator = { name = 'uoro' }\n", "needs a name of letters"),
    ("[[variants]]\nname = 'a'\nestimator = { name = 'uoro' }\n[[variants]]\nname = 'a'\n"
     "estimator = { name = 'tbptt' }\n", "the name 'a' is used twice"),
    ("[[variants]]\nname = 'a'\n", "[[variants]] #1 (a): gives no config section"),
    ("[[variants]]\nname = 'a'\nestimatr = { name = 'uoro' }\n", "unknown section 'estimatr'"),
    ("[[variants]]\nname = 'a'\nrun = { out = 'x' }\n", "cannot set run.out"),
    ("[[variants]]\nname = 'a'\nestimator = 3\n", "section 'estimator' must be a table"),
    ('[sweep]\n"estimator" = ["a"]\n', "expected section.key"),
    ('[sweep]\n"foo.bar" = [1]\n', "expected section.key with a section among"),
    ('[sweep]\n"run.seed" = 3\n', "'run.seed' must be a non-empty list"),
    ('[sweep]\n"run.out" = ["a", "b"]\n', "cannot vary run.out"),
    ('[run]\nstepz = 1\n[sweep]\n"run.seed" = [1]\n', "run.stepz: unknown key"),
])
def test_grid_errors(tmp_path, monkeypatch, capsys, text, message) -> None:
    grid = tmp_path / "grid.toml"
    grid.write_text(text)
    code, _, err = cli(monkeypatch, capsys, "sweep", str(grid), "--out", str(tmp_path / "o"))
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_dry_run_and_names(grid, monkeypatch, capsys) -> None:
    code, out, _ = cli(monkeypatch, capsys, "sweep", str(grid), "--dry-run")
    assert code == 0 and out.split() == NAMES
    odd = load_grid(grid, ["run.steps=100"])
    odd.axes = [("task.path", ["a b/c.txt", "a b?c.txt"])]
    assert [r.name for r in odd.runs()] == ["task.path=a_b_c.txt", "task.path=a_b_c.txt-2"]
    assert odd.runs()[0].config["run"]["steps"] == 100


VARIANTS = """
[run]
steps = 300
log_every = 100
eval_every = 0
checkpoint_every = 0
final_window = 100
[model]
n_hidden = 6
[estimator]
name = "tbptt"
truncation = 3
[[variants]]
name = "tbptt-4"
estimator = { name = "tbptt", truncation = 4 }
[[variants]]
name = "tbptt-12"
estimator = { name = "tbptt", truncation = 12 }
[[variants]]
name = "uoro"
estimator = { name = "uoro" }
optimizer = { name = "sgd", lr = 0.01 }
[sweep]
"run.seed" = [0, 1]
"""
VARIANT_NAMES = [f"variant={v},run.seed={s}" for v in ("tbptt-4", "tbptt-12", "uoro")
                 for s in (0, 1)]


def test_variants_replace_whole_sections_and_cross_the_axes(tmp_path: Path) -> None:
    path = tmp_path / "grid.toml"
    path.write_text(VARIANTS)
    grid = load_grid(path)
    runs = {r.name: r for r in grid.runs()}
    assert list(runs) == VARIANT_NAMES and grid.keys == ["variant", "run.seed"]
    uoro = runs["variant=uoro,run.seed=1"]
    # the base's estimator section (tbptt, truncation 3) is replaced, not merged into
    assert uoro.config["estimator"] == {"name": "uoro"}
    assert uoro.config["optimizer"] == {"name": "sgd", "lr": 0.01}
    assert uoro.config["run"]["seed"] == 1 and uoro.config["run"]["steps"] == 300
    assert runs["variant=tbptt-12,run.seed=0"].config["estimator"] == {"name": "tbptt",
                                                                       "truncation": 12}
    assert dict(uoro.values) == {"variant": "uoro", "run.seed": 1}
    # variants alone, without a [sweep] table
    path.write_text(VARIANTS.split("[sweep]")[0])
    assert [r.name for r in load_grid(path).runs()] == ["variant=tbptt-4", "variant=tbptt-12",
                                                        "variant=uoro"]


def test_a_grid_of_tbptt_truncations_and_uoro_runs_exactly_those(tmp_path, monkeypatch,
                                                                 capsys) -> None:
    """The issue's case: crossing estimator.name with estimator.truncation made runs that
    failed; as variants, exactly the listed runs run and none fails."""
    grid = tmp_path / "grid.toml"
    grid.write_text(VARIANTS)
    code, listed, err = cli(monkeypatch, capsys, "sweep", str(grid), "--dry-run")
    assert code == 0, err
    assert listed.split() == VARIANT_NAMES
    out = tmp_path / "out"
    code, stdout, err = cli(monkeypatch, capsys, "sweep", str(grid), "--out", str(out),
                            "--workers", "2", "-q")
    assert code == 0, err
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert [(r["variant"], r["seeds"], r["completed"]) for r in rows] == [
        ("tbptt-4", "0 1", "2"), ("tbptt-12", "0 1", "2"), ("uoro", "0 1", "2")]
    manifest = json.loads((out / "sweep.json").read_text())
    assert [r["name"] for r in manifest["runs"]] == VARIANT_NAMES
    assert all(r["status"] == "completed" for r in manifest["runs"])
    assert [v["name"] for v in manifest["variants"]] == ["tbptt-4", "tbptt-12", "uoro"]
    config = json.loads((out / "variant=tbptt-12,run.seed=1" / "config.json").read_text())
    assert config["estimator"]["truncation"] == 12 and config["run"]["seed"] == 1
    assert "| uoro | 0 1 | 2/2 |" in stdout
    # nothing hidden: each variant's complete optimizer settings, per run and per group
    by_variant = {r["variant"]: r["optimizer"] for r in rows}
    assert by_variant["uoro"] == "sgd lr 0.01, constant schedule, momentum 0, clip_rec 0.1"
    assert by_variant["tbptt-4"].startswith("adam lr 0.003, smooth-inv-sqrt schedule")
    runs = list(csv.DictReader((out / "runs.csv").open()))
    assert {r["optimizer"] for r in runs if r["variant"] == "uoro"} == {by_variant["uoro"]}


def test_dry_run_validates_every_run(tmp_path, monkeypatch, capsys) -> None:
    grid = tmp_path / "grid.toml"
    grid.write_text(GRID.replace('"estimator.name" = ["tbptt", "uoro"]',
                                 '"estimator.name" = ["tbptt", "uoro"]\n'
                                 '"estimator.truncation" = [4]'))
    code, out, err = cli(monkeypatch, capsys, "sweep", str(grid), "--dry-run")
    assert code == 2
    lines = out.strip().splitlines()
    assert lines[:2] == ["estimator.name=tbptt,estimator.truncation=4,run.seed=0",
                         "estimator.name=tbptt,estimator.truncation=4,run.seed=1"]
    assert lines[2].startswith("estimator.name=uoro,estimator.truncation=4,run.seed=0: invalid: "
                               "estimator 'uoro': invalid options (truncation: unknown option)")
    assert len(lines) == 4 and "Traceback" not in err
    assert err.strip().splitlines() == [
        "error: 2 of 4 runs have an invalid configuration: "
        "estimator.name=uoro,estimator.truncation=4,run.seed=0, "
        "estimator.name=uoro,estimator.truncation=4,run.seed=1"]
    assert not list(tmp_path.glob("sweeps*"))  # nothing written
