"""Numerics: saturated units and zero states give no NaN; a run whose numbers go non-finite
stops with a message naming the step and the estimator, and never writes a non-finite
checkpoint.

The rank-one estimators divide by norms that vanish when every tanh unit is saturated
(J_t = 0, F_t = 0) or when the state is zero: ρ = sqrt((|w| + ε)/(|v| + ε)) keeps ε in both
norms, and the Kalman filter inverts J_θ + λ with λ > 0 (J_θ ≥ 0, so (J_θ + λ)⁻¹ ≤ 1/λ). These
tests run the estimators where those denominators are exactly zero.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import gradflow
from gradflow import NumericalError, TrainingDiverged
from gradflow.contracts.estimator import StepRecord
from gradflow.runfiles.checkpoint import list_checkpoints, load_checkpoint
from gradflow.runfiles.config import build_config
from gradflow.training.step import online_step
from gradflow.training.trainer import Trainer
from tests.helpers import pairs, plugin_registered, small_model

#: every registered online estimator with every model that fits it
PAIRS = pairs(online=True)
#: (θ scale, inputs): saturated units (|pre-activation| in the hundreds: tanh' and σ' are 0 in
#: floating point), saturated units with all-zero inputs, and a zero state that stays zero
SCENARIOS = {
    "saturated": (1000.0, "normal"),
    "saturated-zero-inputs": (1000.0, "zeros"),
    "zero-state": (0.0, "zeros"),
}


def _finite_run(model_name: str, estimator: str, dtype: str, scale: float, inputs: str,
                steps: int = 300, batch: int = 3) -> None:
    """Run ``estimator`` for ``steps`` online steps with θ × ``scale`` and assert that every
    direction and every state array stays finite."""
    model = small_model(model_name, dtype=dtype, n_hidden=6)
    be, m, k = model.backend, model.n_in, model.n_out
    est = gradflow.create_estimator(estimator, model)
    est.start(batch, seed=4)
    theta = model.init_params(1) * scale
    h0 = h = model.initial_state(batch)
    loss = gradflow.get_loss("mse")
    rng = np.random.default_rng(0)
    returned = 0
    for t in range(steps):
        x = rng.normal(size=(batch, m)) if inputs == "normal" else np.zeros((batch, m))
        batch_t = gradflow.Batch(be.asarray(x), be.asarray(rng.normal(size=(batch, k))))
        out = online_step(model, loss, theta, h, batch_t, h0, est)
        h = out.h
        if out.direction is not None:
            returned += 1
            assert np.isfinite(be.to_numpy(out.direction)).all(), (t, "direction")
        for key, value in est.state_dict().items():
            if hasattr(value, "shape"):
                assert np.isfinite(be.to_numpy(value)).all(), (t, key)
    assert returned == steps // est.update_interval  # every update it owes, all finite


@pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")
@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize(("estimator", "model_name"), PAIRS)
def test_no_nan_with_saturated_units_or_zero_states(model_name: str, estimator: str, dtype: str,
                                                    scenario: str) -> None:
    scale, inputs = SCENARIOS[scenario]
    _finite_run(model_name, estimator, dtype, scale, inputs)


def test_the_saturated_scenario_does_saturate() -> None:
    """θ × 1000 really puts the tanh units of rnn out of their linear range (tanh' = 0 in
    float64), so the test above exercises zero Jacobians, and zero inputs keep a zero state."""
    be = gradflow.get_backend("numpy", "float64")
    model = gradflow.create_model("rnn", backend=be, n_in=3, n_hidden=6, n_out=2)
    theta = model.init_params(1) * 1000.0
    h, cache = model.forward(theta, model.initial_state(2),
                             be.asarray(np.random.default_rng(0).normal(size=(2, 3))))
    jv = model.jvp_state(theta, cache, be.asarray(np.ones((2, 6))))
    assert np.count_nonzero(np.abs(np.asarray(h)) == 1.0) >= 6  # tanh = ±1 exactly
    assert np.count_nonzero(np.asarray(jv)) <= 6  # most rows of J_t are exactly zero
    zero = model.init_params(1) * 0.0
    h0, _ = model.forward(zero, model.initial_state(2), be.asarray(np.zeros((2, 3))))
    assert not np.any(np.asarray(h0))


# -- the trainer: non-finite numbers stop the run ------------------------------------------------
class _Spoiler(gradflow.Estimator):
    """The exact readout gradient; from step ``bad`` on it spoils one thing (``how``): the
    direction (×inf), θ itself (NaN written in place, as a buggy estimator might), or its own
    state (NaN, θ staying finite)."""

    name = "spoiler-test"
    how, bad = "theta", 0

    def state_fields(self) -> list[Any]:
        return [gradflow.Shared("memory", (3,)), gradflow.Scalar("count", 0)]

    def step(self, record: StepRecord) -> Any:
        state = self.state
        state.count += 1
        direction = self.fill_direction(0.0, record.grad_out)
        if state.count == self.bad and self.how == "gradient":
            direction = direction * float("inf")
        if state.count == self.bad and self.how == "theta":
            record.theta[0] = float("nan")  # the loss of this step was already computed
        if state.count == self.bad and self.how == "explode":
            record.theta[self.layout.n_rec] = 1e9  # a huge logit: a huge, finite loss
        if state.count >= self.bad and self.how == "state":
            state.memory = state.memory * float("nan")
        return direction


@pytest.fixture
def spoiler():
    with plugin_registered("numerics-test", estimators=[_Spoiler]):
        yield _Spoiler


def _config(*sets: str) -> gradflow.TrainConfig:
    return build_config(sets=["estimator.name=spoiler-test", "run.steps=600",
                              "run.log_every=100", "run.checkpoint_every=200",
                              "run.eval_every=0", "model.n_hidden=4", *sets])


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize(("how", "what"), [
    ("gradient", "the gradient estimate is not finite"),
    ("theta", "θ is not finite (1 of 38 entries, in W_hh)"),
])
def test_non_finite_at_a_metrics_line(tmp_path: Path, spoiler, how: str, what: str) -> None:
    """The direction of step 300 is ±inf (so its norm is), or θ turns NaN after the loss of
    step 300: the metrics line of step 300 stops the run; the message names what, the step,
    the granularity of the check, the estimator and the last good checkpoint, which stays."""
    spoiler.how, spoiler.bad = how, 300
    with pytest.raises(TrainingDiverged) as info:
        Trainer(_config()).run(tmp_path / "run")
    assert str(info.value) == (
        f"training diverged at step 300: {what} (checked at every metrics line, every 100 "
        "steps; all finite at step 200), with estimator 'spoiler-test' (plugin "
        "'numerics-test', registered in-process); lower optimizer.lr or set optimizer.clip; "
        f"the last good checkpoint (step 200) is in {tmp_path / 'run' / 'checkpoint'}")
    assert isinstance(info.value, NumericalError) and info.value.exit_code == 3
    arrays, meta = load_checkpoint(tmp_path / "run" / "checkpoint")
    assert meta["step"] == 200 and np.isfinite(arrays["theta"]).all()
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "diverged"
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert json.loads(lines[-1])["step"] == 300 and "NaN" not in lines[-1]  # strict JSON


def test_a_loss_that_explodes_while_finite_stops_the_run(tmp_path: Path, spoiler) -> None:
    """A readout weight jumps to 1e9 after the loss of step 250: the losses of 251…300 are
    huge but finite; the metrics line of step 300 compares their mean with run.divergence_factor
    (100) × the task's reference level (add: ln 2, the uniform prediction, above its other
    references) and stops the run as diverged, naming the last good checkpoint."""
    spoiler.how, spoiler.bad = "explode", 250
    with pytest.raises(TrainingDiverged) as info:
        Trainer(_config()).run(tmp_path / "run")
    assert re.fullmatch(
        r"training diverged at step 300: the loss exploded: \S+ nats, the mean of the last 100 "
        r"steps, exceeds 100 × the reference loss 0\.6931 nats of task 'add' "
        r"\(run\.divergence_factor\) \(checked at every metrics line, every 100 steps; all "
        r"below the bound at step 200\), with estimator 'spoiler-test' .*; the last good "
        r"checkpoint \(step 200\) is in " + re.escape(str(tmp_path / "run" / "checkpoint")),
        str(info.value))
    assert info.value.exit_code == 3
    assert [s for s, _ in list_checkpoints(tmp_path / "run" / "checkpoint")] == [200]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "diverged"
    assert gradflow.create_task("add").reference_level() == pytest.approx(math.log(2))
    # without the bound (divergence_factor = 0) the same run completes, finite and useless
    spoiler.how, spoiler.bad = "explode", 250
    done = Trainer(_config("run.divergence_factor=0")).run(tmp_path / "unbounded")
    assert done["status"] == "completed" and done["final_loss"] > 1e6


def test_a_non_finite_state_is_never_checkpointed(tmp_path: Path, spoiler) -> None:
    """The estimator's state turns NaN at step 250 while θ and the loss stay finite: the
    metrics line at 300 cannot see it, the checkpoint at 400 refuses to write it."""
    spoiler.how, spoiler.bad = "state", 250
    with pytest.raises(TrainingDiverged, match=r"training diverged at step 400: "
                       r"estimator\.array\.memory not finite \(checked before writing a "
                       r"checkpoint\), with estimator 'spoiler-test' .*the last good "
                       r"checkpoint \(step 200\) is in "):
        Trainer(_config()).run(tmp_path / "run")
    assert [s for s, _ in list_checkpoints(tmp_path / "run" / "checkpoint")] == [200]
    _, meta = load_checkpoint(tmp_path / "run" / "checkpoint")
    assert meta["state"]["loop"]["last_good"] == 200
    # the resumed run meets the same NaN at the same place: deterministic, and still exit 3
    with pytest.raises(TrainingDiverged, match="at step 400"):
        gradflow.resume(tmp_path / "run")
    assert [s for s, _ in list_checkpoints(tmp_path / "run" / "checkpoint")] == [200]


def test_a_checkpoint_holding_nan_is_refused(tmp_path: Path) -> None:
    """Belt and braces: a checkpoint altered to hold NaN (with a matching SHA-256) is refused
    on load, naming the array."""
    from gradflow.runfiles.checkpoint import save_checkpoint

    run = gradflow.train(build_config(sets=["run.steps=200", "run.log_every=100",
                                            "run.checkpoint_every=100", "run.eval_every=0",
                                            "model.n_hidden=4"]), out=tmp_path / "run")
    arrays, meta = load_checkpoint(run.path / "checkpoint")
    arrays["optimizer.m"] = arrays["optimizer.m"] * np.nan
    keep = {k: v for k, v in meta.items() if k not in ("format", "version", "step", "arrays",
                                                      "sha256", "path", "skipped")}
    for step in (100, 200):
        save_checkpoint(run.path / "checkpoint", step, arrays, keep)
    with pytest.raises(gradflow.GradflowError, match=r"optimizer\.m holds NaN or infinite "
                       r"values; gradflow never writes such a checkpoint"):
        Trainer.resume(run.path, steps=300)
