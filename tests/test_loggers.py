"""Metrics loggers: the built-in TensorBoard and MLflow loggers, read back with those tools' own
readers (TensorBoard's event accumulator, MLflow's client), hold metrics.jsonl line for line —
after a resume too, whatever an earlier process left in their stores; a third-party logger gets
open / log / close; a missing dependency or a misspelled name is one line before any step."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import gradflow
from gradflow.runfiles.rundir import read_metrics
from tests.helpers import plugin_registered, run_cli

SETS = ["run.steps=600", "run.log_every=100", "run.eval_every=300", "run.checkpoint_every=300",
        "model.n_hidden=4"]


def _train(out: Path, loggers: list[str], *sets: str) -> gradflow.Run:
    return gradflow.train(sets=[*SETS, f"run.loggers={json.dumps(loggers)}", *sets], out=out,
                          handle_signals=False)


def _lines(run_dir: Path) -> list[dict[str, Any]]:
    return read_metrics(run_dir)


def _numbers(lines: list[dict[str, Any]], key: str) -> list[tuple[int, float]]:
    return [(r["step"], float(r[key])) for r in lines
            if isinstance(r.get(key), int | float) and not isinstance(r.get(key), bool)]


def _tensorboard(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of the run's event files, by tag, as TensorBoard reads them."""
    accumulator = pytest.importorskip(
        "tensorboard.backend.event_processing.event_accumulator",
        reason="TensorBoard's event reader (the dev extra) is not installed")
    acc = accumulator.EventAccumulator(str(run_dir / "tensorboard"))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _mlflow(run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Any]:
    """MLflow's client on the run's local store, and the one MLflow run in it."""
    tracking = pytest.importorskip("mlflow.tracking",
                                   reason="MLflow (the mlflow extra) is not installed")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    client = tracking.MlflowClient(tracking_uri=(run_dir / "mlruns").resolve().as_uri())
    experiment = client.get_experiment_by_name("gradflow")
    (run,) = client.search_runs([experiment.experiment_id])
    return client, run


def _assert_hold_the_lines(run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lines = _lines(run_dir)
    keys = sorted({k for r in lines for k in r if k != "step" and _numbers(lines, k)})
    assert {"loss", "bits", "grad_norm", "lr", "eval_loss", "eval_bits"} <= set(keys)
    events = _tensorboard(run_dir)
    assert sorted(events) == keys
    for key in keys:  # TensorBoard keeps float32 scalars
        want = _numbers(lines, key)
        assert [s for s, _ in events[key]] == [s for s, _ in want], key
        np.testing.assert_array_equal([v for _, v in events[key]],
                                      np.float32([v for _, v in want]), err_msg=key)
    client, run = _mlflow(run_dir, monkeypatch)
    for key in keys:  # MLflow keeps the float64 values themselves
        history = [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, key)]
        assert sorted(history) == _numbers(lines, key), key


def test_tensorboard_and_mlflow_hold_metrics_jsonl_line_for_line(tmp_path: Path, monkeypatch,
                                                                 capsys) -> None:
    """Through the real CLI: ``gradflow train --logger tensorboard --logger mlflow``."""
    pytest.importorskip("tensorboardX", reason="the tensorboard extra is not installed")
    pytest.importorskip("mlflow", reason="the mlflow extra is not installed")
    monkeypatch.chdir(tmp_path)
    sets = [arg for item in SETS for arg in ("--set", item)]
    code, _, err = run_cli(monkeypatch, capsys, "train", "--logger", "tensorboard", "--logger",
                           "mlflow", *sets, "--out", "run", "--quiet")
    assert (code, err) == (0, "")
    run_dir = tmp_path / "run"
    assert json.loads((run_dir / "config.json").read_text())["run"]["loggers"] == [
        "tensorboard", "mlflow"]
    _assert_hold_the_lines(run_dir, monkeypatch)
    _, mlrun = _mlflow(run_dir, monkeypatch)
    assert mlrun.info.status == "FINISHED" and mlrun.info.run_name == "run"
    assert mlrun.data.params["estimator.name"] == "rtrl"
    assert mlrun.data.params["run.steps"] == "600"


def test_a_resumed_run_rebuilds_the_stores_from_metrics_jsonl(tmp_path: Path,
                                                              monkeypatch) -> None:
    """What an earlier process left in the stores (here: scalars of a step that metrics.jsonl
    does not have) is gone after a resume: the stores hold the lines of metrics.jsonl only."""
    pytest.importorskip("tensorboardX", reason="the tensorboard extra is not installed")
    mlflow_tracking = pytest.importorskip("mlflow.tracking",
                                          reason="the mlflow extra is not installed")
    from tensorboardX import SummaryWriter

    run = _train(tmp_path / "run", ["tensorboard", "mlflow"])
    with SummaryWriter(logdir=str(run.path / "tensorboard")) as stale:
        stale.add_scalar("loss", 42.0, 650)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    client, mlrun = _mlflow(run.path, monkeypatch)
    client.log_metric(mlrun.info.run_id, "loss", 42.0, step=650)
    assert isinstance(client, mlflow_tracking.MlflowClient)

    resumed = gradflow.resume(run.path, steps=900, handle_signals=False)
    assert resumed.status == "completed"
    assert [r["step"] for r in _lines(run.path)] == list(range(100, 901, 100))
    _assert_hold_the_lines(run.path, monkeypatch)


class _Recorder(gradflow.Logger):
    """A third-party logger: remembers every call."""

    name = "recorder-test"
    description = "keeps what it is told"
    calls: list[tuple[str, Any]] = []  # noqa: RUF012 - shared by the test and the trainer

    def open(self, run: gradflow.RunRecord) -> None:
        self.calls.append(("open", (run.path, run.config, list(run.records))))

    def log(self, record: dict[str, Any]) -> None:
        self.calls.append(("log", dict(record)))

    def close(self, status: str) -> None:
        self.calls.append(("close", status))


@pytest.fixture
def recorder():
    _Recorder.calls.clear()
    with plugin_registered("logger-test", loggers=[_Recorder]):
        yield _Recorder.calls


def test_a_logger_plugin_is_told_every_line(tmp_path: Path, recorder) -> None:
    run = _train(tmp_path / "run", ["recorder-test"])
    kinds = [kind for kind, _ in recorder]
    assert kinds == ["open"] + ["log"] * 6 + ["close"]
    path, config, records = recorder[0][1]
    assert path == run.path and records == []
    assert config["run"]["loggers"] == ["recorder-test"] and "provenance" in config
    assert [line for kind, line in recorder if kind == "log"] == _lines(run.path)
    assert recorder[-1] == ("close", "completed")
    info = gradflow.get_registry().get("logger", "recorder-test")
    assert info.plugin == "logger-test" and info.description == "keeps what it is told"

    recorder.clear()  # a resumed run's logger opens on the lines up to the checkpoint
    gradflow.resume(run.path, steps=900, handle_signals=False)
    _, _, records = recorder[0][1]
    assert records == _lines(run.path)[:6]
    assert [kind for kind, _ in recorder] == ["open"] + ["log"] * 3 + ["close"]


def test_a_missing_dependency_is_one_line_before_any_step(tmp_path: Path, monkeypatch,
                                                          capsys) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # import tensorboardX -> ImportError
    code, out, err = run_cli(monkeypatch, capsys, "train", "--set", 'run.loggers=["tensorboard"]',
                             "--out", "run")
    assert (code, out) == (2, "")
    assert err == ("error: logger 'tensorboard' needs tensorboardX: pip install "
                   "'gradflow[tensorboard]'\n")
    assert not (tmp_path / "run").exists()


def test_an_unknown_or_repeated_logger_is_one_line(tmp_path: Path, monkeypatch,
                                                   capsys) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(monkeypatch, capsys, "train", "--set",
                           'run.loggers=["tensorbord"]')
    assert code == 2 and err.startswith(
        "error: unknown logger 'tensorbord' (did you mean 'tensorboard'?); available: ")
    code, _, err = run_cli(monkeypatch, capsys, "train", "--set",
                           'run.loggers=["mlflow", "mlflow"]')
    assert code == 2 and err == ("error: run.loggers names a logger twice: "
                                 "['mlflow', 'mlflow']\n")
