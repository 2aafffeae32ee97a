"""Gradient alignment along training (``run.align_every``; issue 17, item 4): the estimator's
direction against the exact online gradient of an RTRL carried alongside, as metrics.

* RTRL against itself: cosine 1 and relative error 0 to 1e-12, with several streams and resets;
* TBPTT on `add` (dependencies at lags 5 and 9): the alignment rises with the truncation;
* lines without a measurement hold ``None``; a run stopped and resumed writes the same lines, the
  reference's state included; refusals are one line.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pytest

import gradflow
from gradflow import TrainingInterrupted
from gradflow.runfiles.config import build_config
from gradflow.training.trainer import Trainer
from tests.helpers import run_cli

BASE = ["model.n_hidden=12", "run.log_every=250", "run.eval_every=0",
        "run.checkpoint_every=0", "run.final_window=250"]


def _train(tmp_path: Path, name: str, *sets: str) -> gradflow.Run:
    return gradflow.train(build_config(sets=[*BASE, *sets]), out=tmp_path / name)


def test_rtrl_is_aligned_with_itself(tmp_path: Path) -> None:
    """Two RTRLs on the same records compute the same gradients: cos 1, relerr 0 (to 1e-12),
    through sequence boundaries (the `anbn` task resets its streams) and with 3 streams."""
    run = _train(tmp_path, "rtrl", "estimator.name=rtrl", "task.name=anbn", "run.batch=3",
                 "run.steps=1000", "run.align_every=7")
    cos, err = run.metrics["align_cos"], run.metrics["align_relerr"]
    assert len(cos) == 4 and np.all(np.abs(cos - 1.0) <= 1e-12) and np.all(err <= 1e-12)


def test_tbptt_alignment_rises_with_the_truncation(tmp_path: Path) -> None:
    """On `add` the targets depend on inputs 5 and 9 steps back: a window of 2 steps misses
    both, one of 16 holds them, and its directions point closer to the exact online gradient.
    Measured (n = 12, 3,000 steps, every 10): mean cos 0.68 (k = 2), 0.59 (4), 0.85 (8), 0.94
    (16) — not monotone while the window misses both lags, clearly higher once it holds them."""
    means = {}
    for k in (2, 16):
        run = _train(tmp_path, f"k{k}", "estimator.name=tbptt", f"estimator.truncation={k}",
                     "run.steps=3000", "run.align_every=10")
        means[k] = float(np.mean(run.metrics["align_cos"]))
    assert means[16] > means[2] + 0.15 and 0.85 < means[16] <= 1.0


def test_lines_without_a_measurement_hold_none(tmp_path: Path) -> None:
    run = _train(tmp_path, "sparse", "estimator.name=uoro", "run.steps=1000",
                 "run.align_every=500")
    cos = run.metrics["align_cos"]  # lines at 250, 500, 750, 1000: measured at 500 and 1000
    assert np.isnan(cos[0]) and np.isnan(cos[2]) and np.isfinite(cos[[1, 3]]).all()
    plain = _train(tmp_path, "plain", "estimator.name=uoro", "run.steps=250")
    assert "align_cos" not in plain.metrics  # off by default: no columns


class SignalAt(Trainer):
    """A trainer that sends its own process SIGTERM right after step ``at``."""

    at = 0

    def advance(self):
        out = super().advance()
        if self.step == self.at:
            os.kill(os.getpid(), signal.SIGTERM)
        return out


def test_a_resumed_run_writes_the_same_alignment(tmp_path: Path) -> None:
    sets = [*BASE, "estimator.name=tbptt", "estimator.truncation=8", "run.steps=1500",
            "run.align_every=10", "run.checkpoint_every=500"]
    whole = gradflow.train(build_config(sets=sets), out=tmp_path / "whole")
    trainer = SignalAt(build_config(sets=sets))
    trainer.at = 777  # mid-window, and mid-way between two measurements
    with pytest.raises(TrainingInterrupted):
        trainer.run(tmp_path / "stopped")
    gradflow.resume(tmp_path / "stopped")
    assert (tmp_path / "stopped" / "metrics.jsonl").read_bytes() == \
        (tmp_path / "whole" / "metrics.jsonl").read_bytes()
    assert np.isfinite(whole.metrics["align_cos"]).all()


@pytest.mark.parametrize(("sets", "message"), [
    (["run.align_every=10", "run.replicas=2"],
     "run.align_every measures one run; it cannot be combined with run.replicas = 2"),
    (["run.align_every=-1"], "run.align_every"),
])
def test_refusals_are_one_line(tmp_path, monkeypatch, capsys, sets, message) -> None:
    args = [a for s in sets for a in ("--set", s)]
    code, _, err = run_cli(monkeypatch, capsys, "train", "--steps", "10", "--out",
                           str(tmp_path / "r"), *args)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()
