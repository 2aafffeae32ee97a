"""SIGKILL at random moments, then ``gradflow train --resume``: the same run, bit for bit.

One run is killed again and again — during a step, while a metrics line is written, while a
checkpoint's files are written, just before and just after the rename that commits a checkpoint,
while the checkpoint before the last two is deleted, while a JSON file is replaced, and from
outside at a random wall-clock moment — and resumed after every kill. After each kill the newest
checkpoint must hold exactly the θ an uninterrupted run had at that step, the metrics lines on
disk must be a prefix of the uninterrupted run's, and the resume must recognise the dead
process's lock; at the end the final θ (bitwise), ``metrics.jsonl`` (byte for byte) and the
summary equal those of the run that was never interrupted. 3 kills in the default run, 20 under
``-m slow``.

The kills land where they are aimed because the process under test is ``gradflow train`` with
one function wrapped (KILLER below) to SIGKILL its own process at the chosen call — a real
SIGKILL, nothing is cleaned up — plus kills sent from the test process at random times.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gradflow.runfiles.checkpoint import list_checkpoints, load_checkpoint
from gradflow.runfiles.config import build_config
from gradflow.runfiles.rundir import read_metrics
from gradflow.training.trainer import Trainer

STEPS, LOG, CKPT = 4000, 50, 100
SETS = [f"run.steps={STEPS}", f"run.log_every={LOG}", f"run.checkpoint_every={CKPT}",
        "run.eval_every=500", "run.eval_steps=40", "run.final_window=300", "run.batch=2",
        "model.n_hidden=8"]
#: summary keys that depend on the clock, the directory or the process (provenance: time, command)
UNSTABLE = {"seconds", "steps_per_s", "run_dir", "provenance"}

# `gradflow train ARGS` that SIGKILLs itself where PLAN (JSON) says; "signal" patches nothing
# (the test kills it from outside).
KILLER = r"""
import json, os, shutil, signal, sys
plan, args = json.loads(sys.argv[1]), sys.argv[2:]
import gradflow
import gradflow.runfiles.checkpoint as ck
import gradflow.runfiles.rundir as rd

def die():
    os.kill(os.getpid(), signal.SIGKILL)

kind, at = plan["kind"], plan["at"]
count = [0]

def due():
    count[0] += 1
    return count[0] == at

if kind == "in-write":  # a checkpoint file half written (a fraction of its bytes on disk)
    def write_synced(path, data):
        if due():
            with open(path, "wb") as fh:
                fh.write(data[: int(len(data) * plan["fraction"])])
                fh.flush()
                os.fsync(fh.fileno())
            die()
        rd.write_synced(path, data)
    ck.write_synced = write_synced
elif kind in ("before-commit", "after-commit"):  # around the rename that commits a checkpoint
    replace = os.replace
    def commit(src, dst):
        aimed = ck._NAME.fullmatch(os.path.basename(os.fspath(dst))) and due()
        if aimed and kind == "before-commit":
            die()
        replace(src, dst)
        if aimed:
            die()
    os.replace = commit
elif kind == "in-cleanup":  # half way through deleting the checkpoint before the last two
    rmtree = shutil.rmtree
    def delete(path, *a, **k):
        if ck._NAME.fullmatch(os.path.basename(os.fspath(path))) and due():
            os.unlink(os.path.join(path, ck.META))
            die()
        rmtree(path, *a, **k)
    shutil.rmtree = delete
elif kind == "mid-step":  # inside step k: after forward and loss, before estimator and update
    cls = gradflow.get_registry().get("model", "rnn").cls
    readout_vjp = cls.readout_vjp
    def vjp(self, *a, **k):
        if due():
            die()
        return readout_vjp(self, *a, **k)
    cls.readout_vjp = vjp
elif kind == "in-line":  # half of a metrics line written
    append = rd.RunDir._append
    def half(self, name, record):
        if name == rd.METRICS and due():
            fh = open(self.path / name, "a", encoding="utf-8")
            text = json.dumps(record)
            fh.write(text[: len(text) // 2])
            fh.flush()
            die()
        append(self, name, record)
    rd.RunDir._append = half
elif kind == "in-json":  # a JSON file (summary, or a metrics file cut back) half replaced
    atomic = rd.atomic_write_bytes
    def write(path, data):
        if path.name in (rd.SUMMARY, rd.METRICS, rd.TIMING) and due():
            with open(path.with_name("." + path.name + ".tmp-" + str(os.getpid())), "wb") as fh:
                fh.write(data[: len(data) // 2])
            die()
        atomic(path, data)
    rd.atomic_write_bytes = write

from gradflow_cli.app import main
sys.argv = ["gradflow", *args]
main()
"""


@dataclass
class Reference:
    """The uninterrupted run: its directory and θ (bytes) at every checkpoint."""

    path: Path
    thetas: dict[int, bytes]


class Recording(Trainer):
    """A trainer that remembers θ at every checkpoint it writes."""

    thetas: dict[int, bytes]

    def save_checkpoint(self, directory: str | Path, state: Any = None) -> Path:
        path = super().save_checkpoint(directory, state)
        self.thetas[self.step] = self.parts.backend.to_numpy(self.theta).tobytes()
        return path


def reference_run(tmp: Path, estimator: str) -> Reference:
    trainer = Recording(build_config(sets=[*SETS, f"estimator.name={estimator}"]))
    trainer.thetas = {}
    trainer.run(tmp / "whole", handle_signals=False)
    return Reference(tmp / "whole", trainer.thetas)


def args(estimator: str, out: Path, resume: bool) -> list[str]:
    if resume:
        return ["train", "--resume", str(out), "-q"]
    sets = [x for item in [*SETS, f"estimator.name={estimator}"] for x in ("--set", item)]
    return ["train", *sets, "--out", str(out), "-q"]


def progress(run: Path) -> tuple[int, int]:
    """(the newest checkpoint's step, the last complete metrics line's step) of ``run``."""
    found = list_checkpoints(run / "checkpoint")
    done = found[-1][0] if found else 0
    lines = read_metrics(run) if (run / "metrics.jsonl").exists() else []
    return done, max((r["step"] for r in lines), default=0)


def plan_kill(rng: random.Random, run: Path, kinds: list[str] | None) -> dict[str, Any]:
    """A kill that will happen in the next process, given how far ``run`` has got."""
    done, logged = progress(run)
    left = STEPS - done  # steps the next process will run
    ckpts = left // CKPT  # checkpoints it will write (the last at the final step)
    pending = logged > done  # lines beyond the checkpoint: the resume cuts them back
    possible = ["in-write", "before-commit", "after-commit", "mid-step", "in-line"]
    if ckpts >= 3 and len(list_checkpoints(run / "checkpoint")) >= 2:
        possible.append("in-cleanup")  # the process deletes an old checkpoint at its 1st one
    if left >= 10 * LOG:
        possible.append("signal")
    if pending or left <= 4 * CKPT:
        possible.append("in-json")
    wanted = [k for k in kinds or () if k in possible]
    kind = rng.choice(wanted or possible)
    if kind == "in-write":
        return {"kind": kind, "at": rng.randint(1, 2 * min(3, ckpts)),
                "fraction": rng.random()}
    if kind in ("before-commit", "after-commit", "in-cleanup"):
        return {"kind": kind, "at": rng.randint(1, min(3, ckpts))}
    if kind == "mid-step":
        return {"kind": kind, "at": rng.randint(1, min(5 * CKPT // 2, left))}
    if kind == "in-line":
        return {"kind": kind, "at": rng.randint(1, min(5, left // LOG))}
    if kind == "in-json":
        return {"kind": kind, "at": 1}
    return {"kind": "signal", "at": 0, "lines": rng.randint(1, 3), "delay": rng.random() * 0.02}


def kill_once(run: Path, estimator: str, plan: dict[str, Any], resume: bool) -> str:
    """Start ``gradflow train`` (fresh or ``--resume``) with ``plan`` and make sure it dies by
    SIGKILL; return its standard error."""
    proc = subprocess.Popen([sys.executable, "-c", KILLER, json.dumps(plan),
                             *args(estimator, run, resume)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        if plan["kind"] == "signal":
            start = progress(run)[1]
            deadline = time.monotonic() + 120
            while progress(run)[1] < start + plan["lines"] * LOG and proc.poll() is None:
                assert time.monotonic() < deadline, "the run made no progress"
                time.sleep(0.005)
            time.sleep(plan["delay"])
            os.kill(proc.pid, signal.SIGKILL)  # from another process, at a random moment
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == -signal.SIGKILL, f"{plan}: exit {proc.returncode}: {err}"
    return err


def check_after_kill(run: Path, ref: Reference, plan: dict[str, Any]) -> None:
    """What a kill may leave: the newest checkpoint is one the uninterrupted run wrote, with
    the same θ, and the complete metrics lines are the uninterrupted run's."""
    found = list_checkpoints(run / "checkpoint")
    if found:
        arrays, meta = load_checkpoint(run / "checkpoint")
        assert meta["skipped"] == [], (plan, meta["skipped"])  # committed = whole
        assert arrays["theta"].tobytes() == ref.thetas[meta["step"]], (plan, meta["step"])
    whole = (ref.path / "metrics.jsonl").read_text().splitlines()
    text = (run / "metrics.jsonl").read_text() if (run / "metrics.jsonl").exists() else ""
    complete = [line for line in text.splitlines(keepends=True) if line.endswith("\n")]
    assert [line.rstrip("\n") for line in complete] == whole[:len(complete)], plan


def kill_and_resume(tmp: Path, estimator: str, kills: int, seed: int,
                    kinds: list[list[str] | None]) -> list[dict[str, Any]]:
    """Kill a run ``kills`` times (the i-th kill of a kind in ``kinds[i]``, None: any), resuming
    after each, then resume it to the end; compare with the uninterrupted run."""
    ref = reference_run(tmp, estimator)
    run, rng, plans = tmp / "killed", random.Random(seed), []
    for i in range(kills):
        plan = plan_kill(rng, run, kinds[i] if i < len(kinds) else None)
        plans.append(plan)
        resume = (run / "config.json").exists()
        err = kill_once(run, estimator, plan, resume)
        if resume:  # the killed process before it left its lock behind
            assert "warning: took over the stale lock of run directory" in err, (plan, err)
        check_after_kill(run, ref, plan)
    proc = subprocess.run([sys.executable, "-m", "gradflow_cli.app", *args(estimator, run, True)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr

    arrays, meta = load_checkpoint(run / "checkpoint")
    assert meta["step"] == STEPS and arrays["theta"].tobytes() == ref.thetas[STEPS]  # bitwise
    assert (run / "metrics.jsonl").read_bytes() == (ref.path / "metrics.jsonl").read_bytes()
    assert [r["step"] for r in read_metrics(run, "timing.jsonl")] == \
        [r["step"] for r in read_metrics(ref.path)]
    summaries = [json.loads((d / "summary.json").read_text()) for d in (ref.path, run)]
    assert summaries[1]["status"] == "completed"
    whole, resumed = ({k: v for k, v in s.items() if k not in UNSTABLE} for s in summaries)
    assert whole == resumed
    assert not [p for p in (run / "checkpoint").iterdir() if p.name.startswith(".")]
    assert not [p for p in run.iterdir() if ".tmp-" in p.name]  # no temporaries left
    return plans


def test_three_kills_then_resume_is_bitwise_the_same_run(tmp_path: Path) -> None:
    """One kill inside a checkpoint's file write, one from outside at a random moment, one
    inside a step (where and when: seeded random)."""
    plans = kill_and_resume(tmp_path, "uoro", kills=3, seed=9,
                            kinds=[["in-write"], ["signal"], ["mid-step"]])
    assert [p["kind"] for p in plans] == ["in-write", "signal", "mid-step"]


@pytest.mark.slow
@pytest.mark.parametrize(("estimator", "seed"), [("kalman-nobacktrack", 1), ("tbptt", 2)])
def test_twenty_kills_then_resume_is_bitwise_the_same_run(tmp_path: Path, estimator: str,
                                                          seed: int) -> None:
    """20 kills of every kind (each kind at least once), resumed after each."""
    every = ["in-write", "before-commit", "after-commit", "mid-step", "in-line", "signal",
             "in-cleanup", "in-json"]
    plans = kill_and_resume(tmp_path, estimator, kills=20, seed=seed,
                            kinds=[[k] for k in every[:6]] + [None] * 14)
    assert len(plans) == 20 and len({p["kind"] for p in plans}) >= 6
