"""One writer per run directory, with real processes: a second ``gradflow train`` on a run
directory that is being written refuses (naming the writer); once the writer is dead (SIGKILL)
its stale lock is recognised and taken over; the same holds where ``flock`` is unavailable (the
pid in the lock file is then the lock)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gradflow.runfiles.rundir import read_metrics
from tests.helpers import PAUSED_TRAIN

SETS = ["--set", "run.log_every=100", "--set", "run.checkpoint_every=200", "--set",
        "run.eval_every=0", "--set", "model.n_hidden=4"]



def start(run: Path, *args: str, pause: int = 10**9, **env: str) -> subprocess.Popen:
    environ = {**os.environ, **env}
    return subprocess.Popen([sys.executable, "-c", PAUSED_TRAIN, str(pause), "train", *args, "-q"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=environ, cwd=run.parent)


def finish(proc: subprocess.Popen, timeout: float = 120) -> tuple[int, str]:
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err


def wait_for_step(run: Path, step: int, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while not ((run / "metrics.jsonl").exists()
               and any(r["step"] >= step for r in read_metrics(run))):
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def kill(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL


@pytest.mark.parametrize("noflock", [False, True], ids=["flock", "pid-file"])
def test_second_writer_refused_then_stale_lock_taken_over(tmp_path: Path, noflock: bool) -> None:
    run = tmp_path / "run"
    env = {"NOFLOCK": "1"} if noflock else {}
    first = start(run, "--steps", "1000", "--out", "run", *SETS, pause=450, **env)
    try:
        wait_for_step(run, 400, first)
        holder = f"(pid {first.pid} on {socket.gethostname()})"
        before = (run / "metrics.jsonl").read_bytes()
        # a second writer, while the first is alive: --resume, then --force into the directory
        for args in (["--resume", "run"], ["--steps", "1000", "--out", "run", "--force"]):
            code, err = finish(start(run, *args, **env))
            assert code == 2 and "Traceback" not in err, err
            assert err.strip().splitlines()[-1] == (
                f"error: run directory 'run' is being written by another gradflow process "
                f"{holder}")
        assert (run / "metrics.jsonl").read_bytes() == before  # nothing interleaved
        assert (run / ".lock").read_text().split()[0] == str(first.pid)
    finally:
        kill(first)  # a crash: the lock file keeps the dead writer's pid
    code, err = finish(start(run, "--resume", "run", **env))
    assert code == 0, err
    assert (f"warning: took over the stale lock of run directory 'run': process {first.pid} on "
            f"{socket.gethostname()}, which held it, is no longer running (killed or crashed)"
            ) in err.splitlines()
    assert json.loads((run / "summary.json").read_text())["status"] == "completed"
    assert [r["step"] for r in read_metrics(run)] == list(range(100, 1001, 100))
    assert (run / ".lock").read_text() == ""  # a clean end leaves no holder behind
    code, err = finish(start(run, "--resume", "run", "--steps", "1200", **env))
    assert code == 0 and "stale lock" not in err, err


def test_two_fresh_runs_into_one_directory(tmp_path: Path) -> None:
    """Started at the same moment with the same --out: one trains, the other is refused (by the
    lock or because the directory is no longer empty); the winner's run is whole."""
    run = tmp_path / "run"
    procs = [start(run, "--steps", "600", "--out", "run", *SETS) for _ in range(2)]
    results = [finish(p) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    loser = next(err for code, err in results if code == 2).strip().splitlines()[-1]
    assert loser.startswith(("error: run directory 'run' is being written by another gradflow "
                             "process", "error: run directory 'run' already exists and is not "
                             "empty"))
    assert [r["step"] for r in read_metrics(run)] == list(range(100, 601, 100))
    assert json.loads((run / "summary.json").read_text())["status"] == "completed"
