"""Checkpoints every N steps (the last two kept), clean stops on SIGINT/SIGTERM, and
``gradflow train --resume`` continuing a run bit for bit: the same final θ (bitwise) and the same
``metrics.jsonl`` lines as a run that was never stopped."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from gradflow_cli.app import main

import gradflow
from gradflow import GradflowWarning, TrainingInterrupted
from gradflow.runfiles.checkpoint import list_checkpoints, load_checkpoint
from gradflow.runfiles.config import build_config
from gradflow.runfiles.rundir import RunDir, read_metrics
from gradflow.training.trainer import Trainer
from tests.helpers import PAUSED_TRAIN, registered

SETS = ["run.log_every=100", "run.eval_every=500", "run.eval_steps=50",
        "run.checkpoint_every=1000", "run.final_window=300", "model.n_hidden=8"]
#: fields of summary.json that depend on the wall clock or the directory
#: summary keys that depend on the clock, the directory or the process (provenance: time, command)
UNSTABLE = {"seconds", "steps_per_s", "run_dir", "provenance"}

# `gradflow train` in a subprocess that sends itself SIGNAL right after step AT.
SIGNALLED_TRAIN = """
import os, signal, sys
from gradflow.training.trainer import Trainer
from gradflow_cli.app import main
at, signum, args = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
advance = Trainer.advance
def advance_then_signal(self):
    out = advance(self)
    if self.step == at:
        os.kill(os.getpid(), signum)
    return out
Trainer.advance = advance_then_signal
sys.argv = ["gradflow", *args]
main()
"""


def cli(monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    monkeypatch.setattr(sys, "argv", ["gradflow", *args])
    try:
        main()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def train_args(estimator: str, out: Path, steps: int = 2000) -> list[str]:
    args = ["train", "--estimator", estimator, "--steps", str(steps), "--out", str(out), "-q"]
    for item in SETS:
        args += ["--set", item]
    return args


def final_theta(run: Path) -> bytes:
    arrays, meta = load_checkpoint(run / "checkpoint")
    assert meta["step"] == 2000
    return arrays["theta"].tobytes()


def stable(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if k not in UNSTABLE}


def assert_same_run(a: Path, b: Path) -> None:
    assert final_theta(a) == final_theta(b)  # bitwise
    lines_a = (a / "metrics.jsonl").read_text().splitlines()
    lines_b = (b / "metrics.jsonl").read_text().splitlines()
    assert len(lines_a) == 20 and lines_a == lines_b  # line for line, byte for byte
    assert [json.loads(t)["step"] for t in (b / "timing.jsonl").read_text().splitlines()] == \
        [json.loads(m)["step"] for m in lines_b]
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (a, b))
    assert sb["status"] == "completed" and stable(sa) == stable(sb)


def wait_for(condition, proc: subprocess.Popen, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"the training process ended ({proc.returncode}) before "
                                 f"{what}: {proc.stderr.read() if proc.stderr else ''}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@pytest.mark.parametrize("estimator", registered("estimator", online=True))
def test_sigkill_then_resume_equals_one_go(tmp_path: Path, monkeypatch, estimator: str) -> None:
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert cli(monkeypatch, *train_args(estimator, whole)) == 0

    # gradflow train standing still after step 1,150 (past the checkpoint at 1,000 and the metrics
    # lines up to 1,100), so that the SIGKILL does not race the end of the run
    proc = subprocess.Popen([sys.executable, "-c", PAUSED_TRAIN, "1150",
                             *train_args(estimator, killed)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        def past_checkpoint() -> bool:
            lines = read_metrics(killed) if (killed / "metrics.jsonl").exists() else []
            return (bool(list_checkpoints(killed / "checkpoint"))
                    and any(r["step"] >= 1100 for r in lines))

        wait_for(past_checkpoint, proc, "the checkpoint at step 1,000")
        os.kill(proc.pid, signal.SIGKILL)  # from another process, mid-run
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()

    assert [s for s, _ in list_checkpoints(killed / "checkpoint")] == [1000]
    assert not (killed / "summary.json").exists()
    assert [r["step"] for r in read_metrics(killed)][-1] == 1100  # lines beyond the checkpoint
    with (killed / "metrics.jsonl").open("a") as fh:
        fh.write('{"step": 1200, "loss": 0.6')  # as if killed in the middle of a line

    assert cli(monkeypatch, "train", "--resume", str(killed), "-q") == 0
    assert_same_run(whole, killed)


def test_sigint_mid_window_checkpoints_and_exits_cleanly(tmp_path: Path, monkeypatch) -> None:
    """Ctrl-C at step 1,234 (between metrics lines, with 4 losses pending in TBPTT's window):
    the step finishes, a checkpoint is written, the exit status is 130 and the message says how
    to resume; the resumed run equals one that was never interrupted."""
    whole, stopped = tmp_path / "whole", tmp_path / "stopped"
    assert cli(monkeypatch, *train_args("tbptt", whole)) == 0
    proc = subprocess.run([sys.executable, "-c", SIGNALLED_TRAIN, "1234",
                           str(int(signal.SIGINT)), *train_args("tbptt", stopped)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 130, proc.stderr
    message = proc.stderr.strip().splitlines()[-1]
    assert message == (f"error: training stopped by SIGINT at step 1,234 of 2,000; checkpoint "
                       f"saved; resume with: gradflow train --resume {stopped}")
    assert "Traceback" not in proc.stderr
    assert [s for s, _ in list_checkpoints(stopped / "checkpoint")] == [1000, 1234]
    summary = json.loads((stopped / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["steps"] == 1234
    _, meta = load_checkpoint(stopped / "checkpoint")
    assert meta["state"]["loop"]["window_steps"] == 34
    assert meta["state"]["estimator"]["pending"] == 4

    assert cli(monkeypatch, "train", "--resume", str(stopped), "-q") == 0
    assert_same_run(whole, stopped)


def test_a_second_sigint_stops_at_once(tmp_path: Path, monkeypatch) -> None:
    """Ctrl-C twice: no checkpoint at the interruption, exit status 130 — and still nothing lost
    but the steps since the last checkpoint."""
    whole, stopped = tmp_path / "whole", tmp_path / "stopped"
    assert cli(monkeypatch, *train_args("uoro", whole)) == 0
    script = SIGNALLED_TRAIN.replace("os.kill(os.getpid(), signum)",
                                     "os.kill(os.getpid(), signum); os.kill(os.getpid(), signum)")
    proc = subprocess.run([sys.executable, "-c", script, "1234", str(int(signal.SIGINT)),
                           *train_args("uoro", stopped)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 130 and proc.stderr.strip() == "aborted"
    assert [s for s, _ in list_checkpoints(stopped / "checkpoint")] == [1000]
    assert cli(monkeypatch, "train", "--resume", str(stopped), "-q") == 0
    assert_same_run(whole, stopped)


class SignalAt(Trainer):
    """A trainer that sends its own process a signal right after a given step."""

    at, signum = 0, signal.SIGTERM

    def advance(self):
        out = super().advance()
        if self.step == self.at:
            os.kill(os.getpid(), self.signum)
        return out


@pytest.mark.parametrize("estimator", registered("estimator", online=True))
@pytest.mark.parametrize("extra", [[], ["run.dtype=float32", "run.batch=3"]])
def test_sigterm_through_the_python_api(tmp_path: Path, estimator: str, extra: list) -> None:
    cfg = build_config(sets=[*SETS, "run.steps=2000", f"estimator.name={estimator}", *extra])
    whole = gradflow.train(cfg, out=tmp_path / "whole")
    before = signal.getsignal(signal.SIGTERM)
    trainer = SignalAt(cfg)
    trainer.at = 1577
    with pytest.raises(TrainingInterrupted, match="stopped by SIGTERM at step 1,577") as info:
        trainer.run(tmp_path / "stopped")
    assert info.value.exit_code == 143
    assert signal.getsignal(signal.SIGTERM) is before  # the handlers are put back
    resumed = gradflow.resume(tmp_path / "stopped")
    assert resumed.status == "completed"
    assert_same_run(whole.path, resumed.path)
    np.testing.assert_array_equal(resumed.metrics["loss"], whole.metrics["loss"])


def test_a_curriculum_resumes_too(tmp_path: Path) -> None:
    """`copy` lengthens its sequences on the losses the trainer shows it (Task.observe); its
    length is in the metrics lines, and a run stopped in the middle resumes to the same lines."""
    cfg = build_config(sets=["task.name=copy", "task.window=5", "model.name=gru",
                             "model.n_hidden=8", "estimator.name=rtrl", "optimizer.lr=0.03",
                             "run.seed=1", "run.steps=3000", "run.log_every=100",
                             "run.eval_every=0", "run.checkpoint_every=1000"])
    whole = gradflow.train(cfg, out=tmp_path / "whole")
    lengths = whole.metrics["copy_length"]
    assert lengths[0] == 1 and lengths[-1] >= 3  # the curriculum moved on
    trainer = SignalAt(cfg)
    trainer.at = 1777
    with pytest.raises(TrainingInterrupted):
        trainer.run(tmp_path / "stopped")
    resumed = gradflow.resume(tmp_path / "stopped")
    assert (tmp_path / "stopped" / "metrics.jsonl").read_bytes() == \
        (tmp_path / "whole" / "metrics.jsonl").read_bytes()
    assert resumed.theta.tobytes() == whole.theta.tobytes()


def test_keeps_the_last_two_checkpoints(tmp_path: Path) -> None:
    cfg = build_config(sets=[*SETS, "run.steps=2000", "run.checkpoint_every=500",
                             "estimator.name=tbptt"])
    run = gradflow.train(cfg, out=tmp_path / "run")
    ckpt = tmp_path / "run" / "checkpoint"
    assert sorted(p.name for p in ckpt.iterdir()) == ["step-000000001500", "step-000000002000"]
    # a damaged newest checkpoint: the one before it is used, and the run can be redone from it
    newest = ckpt / "step-000000002000" / "arrays.npz"
    newest.write_bytes(newest.read_bytes()[:100])
    _, meta = load_checkpoint(ckpt)
    assert meta["step"] == 1500 and "damaged" in meta["skipped"][0]
    with pytest.warns(GradflowWarning, match="skipped an unusable checkpoint: .*damaged"):
        again = gradflow.resume(tmp_path / "run")
    assert again.status == "completed" and again["final_loss"] == run["final_loss"]
    assert np.array_equal(again.theta, run.theta)


def test_extend_a_finished_run(tmp_path: Path, monkeypatch, capsys) -> None:
    whole, short = tmp_path / "whole", tmp_path / "short"
    assert cli(monkeypatch, *train_args("rtrl", whole)) == 0
    assert cli(monkeypatch, *train_args("rtrl", short, steps=1000)) == 0
    capsys.readouterr()
    assert cli(monkeypatch, "train", "--resume", str(short)) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: run '{short}' has already reached step 1,000 of 1,000; pass --steps N to "
        "train it further")
    # the final window (300 steps) cannot start before the checkpoint at 1,000
    assert cli(monkeypatch, "train", "--resume", str(short), "--steps", "1200") == 2
    assert "use at least 1,300 steps" in capsys.readouterr().err
    assert cli(monkeypatch, "train", "--resume", str(short), "--steps", "2000", "-q") == 0
    assert json.loads((short / "config.json").read_text())["run"]["steps"] == 2000
    assert_same_run(whole, short)


@pytest.mark.parametrize(("args", "message"), [
    (["--estimator", "uoro"], "cannot be combined with --estimator"),
    (["--set", "run.seed=3"], "cannot be combined with --set"),
])
def test_resume_takes_no_config(tmp_path, monkeypatch, capsys, args, message) -> None:
    assert cli(monkeypatch, "train", "--resume", str(tmp_path), *args) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_one_writer_per_run_directory(tmp_path: Path, monkeypatch, capsys) -> None:
    run = tmp_path / "run"
    assert cli(monkeypatch, *train_args("tbptt", run, steps=1000)) == 0
    capsys.readouterr()
    held = RunDir.reopen(run, 1000)  # as a running `gradflow train --resume` holds it
    try:
        before = (run / "metrics.jsonl").read_bytes()
        assert cli(monkeypatch, "train", "--resume", str(run), "--steps", "2000") == 2
        assert capsys.readouterr().err.strip().splitlines()[-1] == (
            f"error: run directory '{run}' is being written by another gradflow process (pid "
            f"{os.getpid()} on {socket.gethostname()})")
        assert cli(monkeypatch, *train_args("tbptt", run), "--force") == 2
        assert "being written by another gradflow process" in capsys.readouterr().err
        assert (run / "metrics.jsonl").read_bytes() == before
    finally:
        held.close()
    assert cli(monkeypatch, "train", "--resume", str(run), "--steps", "2000", "-q") == 0


def test_resume_errors(tmp_path: Path, monkeypatch, capsys) -> None:
    assert cli(monkeypatch, "train", "--resume", str(tmp_path / "nope")) == 2
    assert "no such run directory" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert cli(monkeypatch, "train", "--resume", str(tmp_path / "empty")) == 2
    assert "no checkpoint in" in capsys.readouterr().err
