"""Replicated runs (run.replicas = R): each replica's run directory holds exactly what the same
run made alone writes — metrics.jsonl byte for byte, its config, its final θ —, whether the
replicas advance as one computation (a model and an estimator that declare ``replicas``) or one
after the other; a replicated run resumes (after an interruption, from a common step when one
replica has a newer checkpoint), a replica resumes alone, a diverging replica stops alone, and
the CLI says all of it in one line per problem."""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import gradflow
from gradflow.contracts.estimator import runs_replicated as estimator_replicated
from gradflow.contracts.model import runs_replicated as model_replicated
from gradflow.runfiles.checkpoint import list_checkpoints, load_checkpoint
from gradflow.runfiles.config import build_config
from gradflow.training.replicas import ReplicatedTrainer, replica_name
from tests.helpers import fits, registered, run_cli

SEEDS = [0, 5, 9]
RATES = [0.01, 0.02, 0.005]
BASE = ["run.steps=400", "run.log_every=100", "run.eval_every=200", "run.checkpoint_every=200",
        "run.eval_steps=50", "run.final_window=100"]


def _sets(estimator: str, model: str) -> list[str]:
    sizes = ["model.n_hidden=5"] if model != "influence" else []
    task = "influence" if model == "influence" else "add"
    return [*BASE, f"estimator.name={estimator}", f"model.name={model}", f"task.name={task}",
            *sizes]


def _alone(tmp: Path, sets: list[str], r: int, rates: bool) -> Path:
    out = tmp / f"alone-{r}"
    extra = [f"run.seed={SEEDS[r]}"] + ([f"optimizer.lr={RATES[r]}"] if rates else [])
    gradflow.train(sets=[*sets, *extra], out=out, handle_signals=False)
    return out


def _config(path: Path) -> dict[str, Any]:
    config = json.loads((path / "config.json").read_text())
    config.pop("provenance")
    config["run"].pop("out")
    return config


def _same_as_alone(group: Path, tmp: Path, sets: list[str], rates: bool) -> None:
    for r in range(len(SEEDS)):
        member, alone = group / replica_name(r), _alone(tmp, sets, r, rates)
        assert (member / "metrics.jsonl").read_bytes() == (alone / "metrics.jsonl").read_bytes()
        assert _config(member) == _config(alone)
        a, _ = load_checkpoint(member / "checkpoint")
        b, _ = load_checkpoint(alone / "checkpoint")
        assert sorted(a) == sorted(b)
        for key in a:  # θ, h, the optimizer's and estimator's state, the loop sums: all of it
            np.testing.assert_array_equal(a[key], b[key], err_msg=f"replica {r}: {key}")
        summary = json.loads((member / "summary.json").read_text())
        assert summary["status"] == "completed"


def _cases() -> list[tuple[str, str]]:
    """Every online estimator on rnn (the built-in model that declares replicas) and on a
    model that does not (gru), where they fit."""
    batched = [m for m in registered("model")
               if model_replicated(gradflow.get_registry().get("model", m).cls)]
    models = [*batched[:1], "gru"]
    return [(e, m) for e in registered("estimator", online=True) for m in models if fits(e, m)]


@pytest.mark.parametrize(("estimator", "model"), _cases())
def test_each_replica_is_the_run_made_alone(estimator: str, model: str, tmp_path: Path) -> None:
    sets = _sets(estimator, model)
    config = build_config(None, [*sets, f"run.replicas={len(SEEDS)}",
                                 f"run.replica_seeds={SEEDS}", f"optimizer.replica_lrs={RATES}"])
    group = ReplicatedTrainer(config, tmp_path / "group")
    registry = gradflow.get_registry()
    assert group.batched == (model_replicated(registry.get("model", model).cls)
                             and estimator_replicated(registry.get("estimator", estimator).cls))
    group.run(handle_signals=False)
    _same_as_alone(tmp_path / "group", tmp_path, sets, rates=True)


@pytest.mark.parametrize("estimator", ["tbptt", "uoro"])
def test_replicas_with_resets_and_a_curriculum(estimator: str, tmp_path: Path) -> None:
    """On copy (sequences that reset together, a curriculum that follows each replica's own
    losses) a batched replica is still its run made alone."""
    sets = [*BASE, f"estimator.name={estimator}", "task.name=copy", "model.n_hidden=6",
            "run.steps=600", "run.batch=2", "task.threshold=0.5"]
    config = build_config(None, [*sets, "run.replicas=3", f"run.replica_seeds={SEEDS}",
                                 f"optimizer.replica_lrs={RATES}"])
    group = ReplicatedTrainer(config, tmp_path / "group")
    assert group.batched
    group.run(handle_signals=False)
    _same_as_alone(tmp_path / "group", tmp_path, sets, rates=True)


def test_the_built_in_replicated_pairs_are_batched() -> None:
    """The pairs the throughput target is about advance as one computation."""
    registry = gradflow.get_registry()
    assert model_replicated(registry.get("model", "rnn").cls)
    for name in ("readout-only", "tbptt", "uoro", "nobacktrack"):
        assert estimator_replicated(registry.get("estimator", name).cls), name


def test_replicas_resume_from_a_common_step(tmp_path: Path) -> None:
    """Stopped at 400 steps, continued to 600: the same files as 600 steps at once; and when
    one replica lost its newest checkpoint, every replica goes back to the common step."""
    sets = _sets("uoro", "rnn")
    group_sets = [*sets, "run.replicas=3", f"run.replica_seeds={SEEDS}"]
    whole = gradflow.train_replicas(sets=[*group_sets, "run.steps=600"], out=tmp_path / "whole",
                                    handle_signals=False)
    assert len(whole) == 3 and all(run.status == "completed" for run in whole)
    gradflow.train_replicas(sets=group_sets, out=tmp_path / "part", handle_signals=False)
    newest = list_checkpoints(tmp_path / "part" / replica_name(1) / "checkpoint")[-1][1]
    shutil.rmtree(newest)  # replica 1 has step 200 only: all resume there
    group = ReplicatedTrainer.resume(tmp_path / "part", steps=600)
    assert group.step == 200 and any("step 200" in note for note in group.notes)
    runs = gradflow.resume_replicas(tmp_path / "part", steps=600, handle_signals=False)
    for r, run in enumerate(runs):
        assert run.status == "completed"
        assert ((tmp_path / "part" / replica_name(r) / "metrics.jsonl").read_bytes()
                == (tmp_path / "whole" / replica_name(r) / "metrics.jsonl").read_bytes())
        np.testing.assert_array_equal(run.theta, whole[r].theta)


def test_an_interrupted_replicated_run_resumes_bit_for_bit(tmp_path: Path) -> None:
    """SIGINT in the middle of a metrics window (step 300 of the window 201…400): every replica
    checkpoints at that step, and the resumed group ends with the files of an uninterrupted
    one."""
    sets = [*_sets("nobacktrack", "rnn"), "run.replicas=3", f"run.replica_seeds={SEEDS}",
            "run.log_every=200"]

    def interrupt(step: int, record: Any) -> None:
        if step == 300:  # a progress tick between two metrics lines
            assert record is None
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(gradflow.TrainingInterrupted, match=r"at step 300 of 400; every "
                       r"replica's checkpoint saved; resume with: gradflow train --resume "):
        gradflow.train_replicas(sets=sets, out=tmp_path / "cut", progress=interrupt)
    cut = tmp_path / "cut"
    for r in range(3):
        assert list_checkpoints(cut / replica_name(r) / "checkpoint")[-1][0] == 300
    runs = gradflow.resume_replicas(cut, handle_signals=False)
    ref = gradflow.train_replicas(sets=sets, out=tmp_path / "ref", handle_signals=False)
    for r in range(3):
        assert ((cut / replica_name(r) / "metrics.jsonl").read_bytes()
                == (tmp_path / "ref" / replica_name(r) / "metrics.jsonl").read_bytes())
        np.testing.assert_array_equal(runs[r].theta, ref[r].theta)


def test_a_replica_resumes_alone(tmp_path: Path) -> None:
    """A replica's directory is an ordinary run directory: extended on its own, it continues as
    the run made alone would."""
    sets = _sets("uoro", "rnn")
    gradflow.train_replicas(sets=[*sets, "run.replicas=3", f"run.replica_seeds={SEEDS}"],
                            out=tmp_path / "group", handle_signals=False)
    member = tmp_path / "group" / replica_name(2)
    extended = gradflow.resume(member, steps=600, handle_signals=False)
    alone = gradflow.train(sets=[*sets, f"run.seed={SEEDS[2]}", "run.steps=600"],
                           out=tmp_path / "alone", handle_signals=False)
    assert (member / "metrics.jsonl").read_bytes() == (tmp_path / "alone" /
                                                       "metrics.jsonl").read_bytes()
    np.testing.assert_array_equal(extended.theta, alone.theta)


def test_a_diverging_replica_stops_alone(tmp_path: Path, monkeypatch, capsys) -> None:
    """One replica at a learning rate that explodes: it stops as diverged (its summary says so),
    the others complete, and the command exits 3 naming it."""
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(
        monkeypatch, capsys, "train", "--replicas", "3", "--steps", "400", "--quiet",
        "--optimizer", "sgd", "--out", "g", "--set", "optimizer.replica_lrs=[0.01, 1e12, 0.01]",
        "--set", "run.log_every=100", "--set", "model.n_hidden=5")
    assert code == 3 and out == "" and "Traceback" not in err
    assert err.startswith("error: 1 of 3 replicas diverged (replica-001); the others completed."
                          " replica-001: training diverged at step 100")
    statuses = [json.loads((tmp_path / "g" / replica_name(r) / "summary.json").read_text())
                ["status"] for r in range(3)]
    assert statuses == ["completed", "diverged", "completed"]


def test_replicated_runs_through_the_cli(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(monkeypatch, capsys, "train", "--replicas", "2", "--steps", "200",
                             "--quiet", "--out", "g", "--set", "run.log_every=100",
                             "--set", "model.n_hidden=4", "--estimator", "uoro")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].startswith("replica-000: seed 0, lr 0.01, final loss ")
    assert lines[1].startswith("replica-001: seed 1, lr 0.01, final loss ")
    assert lines[2].startswith("mean final loss ") and lines[3] == "run directory: g"
    record = json.loads((tmp_path / "g" / "replicas.json").read_text())
    assert record["members"] == ["replica-000", "replica-001"]
    code, out, err = run_cli(monkeypatch, capsys, "train", "--resume", "g", "--steps", "300",
                             "--quiet")
    assert code == 0, err
    assert [json.loads(line)["step"] for line in
            (tmp_path / "g" / "replica-001" / "metrics.jsonl").read_text().splitlines()] == \
        [100, 200, 300]


@pytest.mark.parametrize(("args", "message"), [
    (["--replicas", "3", "--set", "optimizer.replica_lrs=[0.1, 0.2]"],
     "error: invalid config: (config): optimizer.replica_lrs has 2 rates for run.replicas = 3"),
    (["--replicas", "2", "--set", "run.replica_seeds=[1]"],
     "error: invalid config: (config): run.replica_seeds has 1 seeds for run.replicas = 2"),
    (["--replicas", "0"], "error: invalid config: run.replicas: "),
])
def test_bad_replica_settings_are_one_line(args: list[str], message: str, tmp_path: Path,
                                          monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(monkeypatch, capsys, "train", *args, "--out", "g")
    assert code == 2 and out == "" and err.startswith(message), err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "g").exists()


def test_the_python_api_says_which_function(tmp_path: Path) -> None:
    with pytest.raises(gradflow.ConfigError, match=r"use gradflow\.train_replicas"):
        gradflow.train(sets=["run.replicas=2"], out=tmp_path / "x")
    gradflow.train_replicas(sets=["run.replicas=2", "run.steps=100", "run.log_every=50",
                                  "model.n_hidden=3"], out=tmp_path / "g", handle_signals=False)
    with pytest.raises(gradflow.RunDirError, match=r"is a replicated run: continue it with "
                       r"gradflow\.resume_replicas"):
        gradflow.resume(tmp_path / "g")
    with pytest.raises(gradflow.ConfigError, match="a Trainer is one run"):
        gradflow.Trainer(build_config(None, ["run.replicas=2"]))


def test_bench_times_replicas_against_one_run(monkeypatch, capsys) -> None:
    code, out, err = run_cli(monkeypatch, capsys, "bench", "--replicas", "3", "-e",
                             "readout-only,rtrl", "-n", "4", "--repeat", "1", "--min-time",
                             "0.002", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["replicas"] == 3
    rows = {row["estimator"]: row for row in data["rows"]}
    assert rows["readout-only"]["batched"] and not rows["rtrl"]["batched"]
    for row in rows.values():
        assert row["us_per_replica"] == pytest.approx(row["us_group"] / 3)
        assert row["throughput"] == pytest.approx(3 * row["us_one"] / row["us_group"])
    code, out, err = run_cli(monkeypatch, capsys, "bench", "--replicas", "1", "-n", "4")
    assert code == 2 and err == "error: --replicas must be at least 2, got 1\n"
