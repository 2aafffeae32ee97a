"""The online trainer and its run directory: files, reproducibility, checkpoints, learning."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from gradflow_plugins.estimators.readout_only import ReadoutOnly

import gradflow
from gradflow import CheckpointError, ConfigError, RunDirError, TrainingError
from gradflow.runfiles.checkpoint import load_checkpoint
from gradflow.runfiles.config import build_config, run_config
from gradflow.runfiles.rundir import read_metrics
from gradflow.training.trainer import Trainer
from tests.helpers import plugin_registered


def config(*sets: str, steps: int = 600, estimator: str = "tbptt") -> gradflow.TrainConfig:
    return build_config(sets=[f"run.steps={steps}", f"estimator.name={estimator}",
                              "run.log_every=100", "run.eval_every=300", "run.eval_steps=50",
                              "run.checkpoint_every=300", "run.final_window=200",
                              "model.n_hidden=8", *sets])


def metrics_bytes(run: Path) -> bytes:
    return (run / "metrics.jsonl").read_bytes()


def test_run_directory(tmp_path: Path) -> None:
    out = tmp_path / "run"
    trainer = Trainer(config())
    summary = trainer.run(out)
    assert sorted(p.name for p in out.iterdir()) == [
        ".lock", "checkpoint", "config.json", "metrics.jsonl", "summary.json", "timing.jsonl"]

    resolved = json.loads((out / "config.json").read_text())
    assert resolved["run"]["out"] == str(out)
    assert resolved["model"] == {"name": "rnn", "n_in": 2, "n_hidden": 8, "n_out": 2,
                                 "alpha": 1.0, "init": "uniform", "density": 1.0, "mask_seed": 0}
    assert resolved["estimator"] == {"name": "tbptt", "truncation": 10, "interval": None}
    assert resolved["task"] == {"name": "add", "lag1": 5, "lag2": 9, "targets": "soft"}
    assert resolved["optimizer"]["lr"] == 0.003  # the default, spelled out
    # the resolved config rebuilds the same run; its provenance says what it ran with
    assert run_config(resolved) == trainer.config
    record = resolved["provenance"]
    assert record["gradflow"] == gradflow.__version__ and record["numpy"] == np.__version__
    assert record["plugins"]["gradflow"] == gradflow.__version__  # the built-ins' distribution
    assert {"python", "platform", "host", "git", "command", "time", "cupy"} <= set(record)
    assert summary["provenance"]["gradflow"] == gradflow.__version__

    records = read_metrics(out)
    assert [r["step"] for r in records] == list(range(100, 601, 100))
    for r in records:
        assert set(r) >= {"step", "loss", "bits", "grad_norm", "lr"}
        assert r["bits"] == pytest.approx(r["loss"] / gradflow.LN2)
        assert r["grad_norm"] > 0
    timing = [json.loads(line) for line in (out / "timing.jsonl").read_text().splitlines()]
    assert [t["step"] for t in timing] == [r["step"] for r in records]
    assert all(t["steps_per_s"] > 0 for t in timing)
    assert [t["wall"] for t in timing] == sorted(t["wall"] for t in timing)
    assert [r["step"] for r in records if "eval_loss" in r] == [300, 600]

    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk == summary
    assert summary["status"] == "completed" and summary["steps"] == 600
    assert summary["optimum"] == pytest.approx(0.4545, abs=1e-4)
    assert summary["best_loss"] == min(r["loss"] for r in records)
    assert summary["eval_loss"] == records[-1]["eval_loss"]
    last_two = [r["loss"] for r in records[-2:]]  # final window 200 = the last two lines
    assert summary["final_loss"] == pytest.approx(sum(last_two) / 2, rel=1e-12)


def test_same_seed_same_metrics(tmp_path: Path) -> None:
    for name in ("a", "b"):
        Trainer(config("estimator.name=rtrl", "run.seed=5")).run(tmp_path / name)
    assert metrics_bytes(tmp_path / "a") == metrics_bytes(tmp_path / "b")  # bit-identical
    Trainer(config("estimator.name=rtrl", "run.seed=6")).run(tmp_path / "c")
    assert metrics_bytes(tmp_path / "a") != metrics_bytes(tmp_path / "c")


def test_checkpoint_loads_without_pickle(tmp_path: Path) -> None:
    trainer = Trainer(config(steps=250))
    trainer.run(tmp_path)
    arrays, meta = load_checkpoint(tmp_path / "checkpoint")
    assert meta["format"] == "gradflow-checkpoint" and meta["version"] == 2
    assert meta["step"] == 250 and meta["state"]["trainer"]["step"] == 250
    # checkpoint_every=300 > 250 steps: only the final one; one directory per checkpoint
    assert [p.name for p in (tmp_path / "checkpoint").iterdir()] == ["step-000000000250"]
    ckpt = tmp_path / "checkpoint" / "step-000000000250"
    assert meta["path"] == str(ckpt) and meta["skipped"] == []
    assert sorted(p.name for p in ckpt.iterdir()) == ["arrays.npz", "meta.json"]
    with np.load(ckpt / meta["arrays"], allow_pickle=False) as npz:
        assert set(npz.files) == set(arrays)
        np.testing.assert_array_equal(npz["theta"], trainer.parts.backend.to_numpy(trainer.theta))
    assert {"theta", "h", "optimizer.m", "optimizer.v", "task.history",
            "estimator.array.g_out", "loop.loss_sum", "loop.final_sum"} <= set(arrays)
    est = meta["state"]["estimator"]
    assert est["rng.seed"] == trainer.parts.seeds["estimator"] and est["hist.length"] == 10
    assert meta["config"] == trainer.config.model_dump(mode="json")
    # the task state round-trips into a fresh task: it continues the same stream
    task = gradflow.create_task("add", seed=123)
    task.load_state_dict({**meta["state"]["task"], "history": arrays["task.history"]})
    np.testing.assert_array_equal(task.next().targets, trainer.parts.task.next().targets)


def test_checkpoint_damage_is_detected(tmp_path: Path) -> None:
    Trainer(config(steps=100)).run(tmp_path)
    ckpt = tmp_path / "checkpoint" / "step-000000000100"
    meta = json.loads((ckpt / "meta.json").read_text())
    npz = ckpt / meta["arrays"]
    npz.write_bytes(npz.read_bytes()[:-10])
    with pytest.raises(CheckpointError, match="damaged"):
        load_checkpoint(ckpt)
    with pytest.raises(CheckpointError, match="damaged"):  # the newest, and no older one
        load_checkpoint(tmp_path / "checkpoint")
    (ckpt / "meta.json").write_text(json.dumps({**meta, "version": 99}))
    with pytest.raises(CheckpointError, match="version 99"):
        load_checkpoint(ckpt)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path)


def test_refuses_to_overwrite_a_run(tmp_path: Path) -> None:
    out = tmp_path / "run"
    Trainer(config(steps=100)).run(out)
    before = (out / "metrics.jsonl").read_text()
    with pytest.raises(RunDirError, match="already exists and is not empty; pass --force"):
        Trainer(config(steps=100)).run(out)
    assert (out / "metrics.jsonl").read_text() == before  # untouched
    (out / "notes.txt").write_text("mine")
    Trainer(config(steps=200)).run(out, force=True)
    assert (out / "notes.txt").read_text() == "mine"  # --force replaces only gradflow's files
    assert [r["step"] for r in read_metrics(out)] == [100, 200]
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunDirError, match="not a directory"):
        Trainer(config(steps=100)).run(tmp_path / "file", force=True)


def test_backends_agree(tmp_path: Path) -> None:
    lines = {}
    for name in ("numpy", "array_api_strict"):
        Trainer(config(f"run.backend={name}", "estimator.name=rtrl", steps=300)).run(
            tmp_path / name)
        lines[name] = read_metrics(tmp_path / name)
    for a, b in zip(lines["numpy"], lines["array_api_strict"], strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-12)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-10)


def test_float32_and_batch(tmp_path: Path) -> None:
    summary = Trainer(config("run.dtype=float32", "run.batch=4", steps=200)).run(tmp_path)
    assert summary["status"] == "completed" and np.isfinite(summary["final_loss"])


def test_sizes_come_from_the_task(tmp_path: Path) -> None:
    with pytest.raises(gradflow.PluginError, match=r"model.n_in = 3 does not match task 'add'"):
        Trainer(config("model.n_in=3"))
    trainer = Trainer(config("model.n_in=2"))
    assert trainer.parts.model.n_in == 2
    if "influence" in gradflow.get_registry().names("model"):  # a model with one output only
        with pytest.raises(gradflow.PluginError, match=r"model 'influence'.*n_out.*the trainer "
                           r"sets n_in = 2 and n_out = 2 from task 'add'"):
            Trainer(config("model.name=influence", "model.n_hidden=8"))


def test_plugin_errors_name_what_is_wrong() -> None:
    with pytest.raises(gradflow.PluginError, match=r"unknown estimator 'nope'; available: .*rtrl"):
        Trainer(config("estimator.name=nope"))
    with pytest.raises(gradflow.PluginError,
                       match=r"estimator 'tbptt': invalid options \(truncaton: unknown option\)"):
        Trainer(config("estimator.truncaton=5"))
    with pytest.raises(gradflow.PluginError, match=r"model 'rnn'.*n_hidden"):
        Trainer(config("model.n_hidden=0"))
    with pytest.raises(ConfigError, match=r"optimizer.lr: Input should be greater than 0"):
        config("optimizer.lr=-1")
    with pytest.raises(ConfigError, match="must be a multiple of log_every"):
        config("run.eval_every=150")


class _Noisy(ReadoutOnly):
    name = "noisy-test"
    optimizer_defaults = {"clip_rec": 0.25, "lr": 0.02}  # noqa: RUF012


class _Broken(ReadoutOnly):
    """Returns NaN from step 150 on."""

    name = "broken-test"

    def state_fields(self):
        return [gradflow.Scalar("count", 0)]

    def step(self, record):
        self.state.count += 1
        direction = super().step(record)
        return direction * float("nan") if self.state.count >= 150 else direction


@pytest.fixture
def test_plugins():
    with plugin_registered("trainer-test-plugin", estimators=[_Noisy, _Broken]):
        yield


def test_estimator_optimizer_defaults(test_plugins) -> None:
    opt = Trainer(config("estimator.name=noisy-test")).config.optimizer
    assert (opt.clip_rec, opt.lr) == (0.25, 0.02)
    opt = Trainer(config("estimator.name=noisy-test", "optimizer.clip_rec=1.0")).config.optimizer
    assert (opt.clip_rec, opt.lr) == (1.0, 0.02)  # what the user sets wins


def test_divergence_keeps_the_last_good_checkpoint(tmp_path: Path, test_plugins) -> None:
    cfg = config("estimator.name=broken-test", "run.checkpoint_every=100", steps=1000)
    with pytest.raises(TrainingError, match=r"training diverged at step 200: the loss is not "
                       r"finite .*the last good checkpoint \(step 100\)"):
        Trainer(cfg).run(tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "diverged" and summary["steps"] == 200
    last = (tmp_path / "metrics.jsonl").read_text().splitlines()[-1]
    assert json.loads(last)["loss"] is None and "NaN" not in last  # strict JSON
    arrays, meta = load_checkpoint(tmp_path / "checkpoint")
    assert meta["step"] == 100 and np.isfinite(arrays["theta"]).all()


def test_rtrl_learns_the_first_lag(tmp_path: Path) -> None:
    """A few thousand steps: RTRL beats the first-lag level 0.5192; the readout alone does not."""
    losses = {}
    for est in ("rtrl", "readout-only"):
        cfg = build_config(sets=["run.steps=6000", f"estimator.name={est}", "run.eval_every=0",
                                 "run.final_window=2000"])
        losses[est] = Trainer(cfg).run(tmp_path / est)["final_loss"]
    assert losses["rtrl"] < 0.50, losses
    assert losses["readout-only"] > 0.55, losses


def _english(tmp_path: Path, chars: int | None = None) -> Path:
    """English prose that is always there: the documentation topics of Python's pydoc."""
    from pydoc_data.topics import topics

    text = "\n\n".join(topics[k] for k in sorted(topics))
    path = tmp_path / "english.txt"
    path.write_text(text[:chars], encoding="utf-8")
    return path


def test_text_learns_below_unigram_entropy(tmp_path: Path) -> None:
    path = _english(tmp_path, 200_000)
    cfg = build_config(sets=["task.name=text", f"task.path={path!s}", "estimator.name=tbptt",
                             "run.steps=10000", "run.eval_every=5000", "run.eval_steps=500",
                             "task.held_out=0.05", "run.final_window=3000"])
    summary = Trainer(cfg).run(tmp_path / "run")
    unigram = summary["references"]["unigram"]
    assert summary["final_loss"] < unigram - 0.3, summary
    evals = [r["eval_loss"] for r in read_metrics(tmp_path / "run") if "eval_loss" in r]
    assert len(evals) == 2 and evals[1] < evals[0]  # the held-out text, evaluated twice


# -- the acceptance runs (minutes): pytest -m slow ------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("estimator", ["rtrl", "tbptt"])
def test_add_reaches_the_optimum(tmp_path: Path, estimator: str) -> None:
    """Defaults, 100k steps: within 0.02 nats of 0.4545 (mean of the last 5,000 steps)."""
    summary = Trainer(build_config(sets=[f"estimator.name={estimator}"])).run(tmp_path)
    assert summary["steps"] == 100_000
    assert summary["final_loss"] - summary["optimum"] < 0.02, summary


@pytest.mark.slow
def test_readout_only_stays_above_the_first_lag_level(tmp_path: Path) -> None:
    summary = Trainer(build_config(sets=["estimator.name=readout-only"])).run(tmp_path)
    assert summary["final_loss"] > summary["references"]["first lag only"], summary


@pytest.mark.slow
@pytest.mark.parametrize("estimator", ["rtrl", "tbptt"])
def test_text_bits_below_unigram_in_50k_steps(tmp_path: Path, estimator: str) -> None:
    path = _english(tmp_path)
    cfg = build_config(sets=["task.name=text", f"task.path={path!s}", "run.steps=50000",
                             f"estimator.name={estimator}", "run.eval_every=0"])
    summary = Trainer(cfg).run(tmp_path / "run")
    unigram = summary["references"]["unigram"]
    assert summary["final_loss"] < 0.8 * unigram, summary


# -- an estimator that would never update is refused before a run directory is made ---------------
@pytest.mark.parametrize(("task", "batch", "refused"), [
    ("add", 1, "is one endless stream (no step starts a new sequence)"),
    ("influence", 1, "is one endless stream (no step starts a new sequence)"),
    ("text", 2, "ends the sequences of its 2 streams at different steps"),
    ("copy", 3, None), ("text", 1, None),
])
def test_an_offline_estimator_needs_sequences_it_can_end(tmp_path: Path, monkeypatch, task: str,
                                                        batch: int, refused: str | None) -> None:
    """bptt (online = False) returns a direction only when every stream ends a sequence at the
    same step: on a stream without such steps it would train nothing and say nothing."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "t.txt").write_text("abcabd " * 8, encoding="utf-8")  # wraps every ~50 steps
    sets = [f"task.name={task}", "estimator.name=bptt", f"run.batch={batch}", "run.steps=200",
            "run.log_every=50", "run.eval_every=0", "run.checkpoint_every=100"]
    sets += ({"text": ["task.path=t.txt"], "influence": ["model.name=influence"]}.get(task, [])
             or ["model.n_hidden=3"])
    if refused is not None:
        with pytest.raises(ConfigError, match=re.escape(
                f"estimator 'bptt' returns a direction only when every stream ends a sequence "
                f"at the same step, and task {task!r} {refused}: it would never update")):
            Trainer(build_config(sets=sets))
        return
    summary = Trainer(build_config(sets=sets)).run(tmp_path / "run")
    lines = read_metrics(tmp_path / "run")
    assert summary["status"] == "completed" and any(r["grad_norm"] for r in lines)


def test_tasks_declare_their_sequences() -> None:
    assert gradflow.create_task("add").sequences == "none"
    assert gradflow.create_task("copy").sequences == "aligned"
    assert gradflow.create_task("copy", reset=False).sequences == "none"
