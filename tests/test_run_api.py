"""The Python API: gradflow.train(config) -> Run with the metrics as arrays; load_run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import gradflow
from gradflow import ConfigError, RunDirError
from gradflow.runfiles.rundir import read_metrics

SMALL = {"run": {"steps": 600, "log_every": 100, "eval_every": 300, "eval_steps": 50,
                 "checkpoint_every": 300, "final_window": 200},
         "model": {"n_hidden": 8}, "estimator": {"name": "tbptt"}}


def test_train_returns_a_run_with_arrays(tmp_path: Path) -> None:
    run = gradflow.train(SMALL, out=tmp_path / "run")
    assert isinstance(run, gradflow.Run) and run.status == "completed"
    assert run.path == tmp_path / "run" and run.name == "tbptt/rnn/add"
    # a Run reads like the summary dict that gradflow.train used to return
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert dict(run) == summary and run["final_loss"] == summary["final_loss"]
    m = run.metrics
    assert m["step"].dtype == np.int64 and m["step"].tolist() == list(range(100, 601, 100))
    records = read_metrics(tmp_path / "run")
    assert m["loss"].tolist() == [r["loss"] for r in records]
    assert m["bits"] == pytest.approx(m["loss"] / gradflow.LN2)
    assert np.isnan(m["eval_loss"]).tolist() == [True, True, False, True, True, False]
    assert run.timing["step"].tolist() == m["step"].tolist()
    assert run.timing["steps_per_s"].min() > 0
    assert run.theta.shape == (run["n_params"],)
    assert run.config.estimator.name == "tbptt" and run.config.run.out == str(run.path)

    again = gradflow.load_run(tmp_path / "run")
    assert dict(again) == dict(run) and again.config == run.config
    np.testing.assert_array_equal(again.theta, run.theta)
    for key in m:
        np.testing.assert_array_equal(again.metrics[key], m[key])
    assert "status='completed'" in repr(again)


def test_the_forms_of_a_config(tmp_path: Path) -> None:
    toml = tmp_path / "run.toml"
    toml.write_text('[run]\nsteps = 200\nlog_every = 100\neval_every = 0\n'
                    '[model]\nn_hidden = 4\n[estimator]\nname = "uoro"\n')
    from_file = gradflow.train(toml, out=tmp_path / "a", sets=["run.seed=2"])
    assert from_file.config.run.seed == 2 and from_file.config.run.steps == 200
    # a TrainConfig with overrides: what it does not set keeps its defaults, including the
    # estimator's optimizer defaults (uoro clips θ_rec at 0.1)
    cfg = gradflow.build_config(toml)
    from_config = gradflow.train(cfg, out=tmp_path / "b", sets=["run.seed=2"])
    assert from_config.config.optimizer.clip_rec == 0.1
    assert from_config.metrics["loss"].tolist() == from_file.metrics["loss"].tolist()
    with pytest.raises(ConfigError, match="a config is a TrainConfig, a dict or a TOML path"):
        gradflow.train(42)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="unknown key"):
        gradflow.train({"run": {"stepz": 3}})


def test_load_run_of_something_else(tmp_path: Path) -> None:
    with pytest.raises(RunDirError, match="not a gradflow run directory"):
        gradflow.load_run(tmp_path)
    (tmp_path / "config.json").write_text("{")
    with pytest.raises(RunDirError, match="cannot be read as a gradflow config"):
        gradflow.load_run(tmp_path)
    # a run that was killed before writing its summary is still readable
    run = gradflow.train(SMALL, out=tmp_path / "run")
    (run.path / "summary.json").unlink()
    partial = gradflow.load_run(run.path)
    assert partial.status == "incomplete" and len(partial.metrics["loss"]) == 6
