"""Every built-in model × estimator pair through the public conformance suite (gradflow.testing),
and the suite's own honesty: it fails on wrong, truncated or biased estimators.

DESIGN §6 / issue 5: with θ frozen RTRL equals BPTT (≤ 1e-10 relative on gru and lstm, n = 12,
T = 40); TBPTT with truncation ≥ T equals BPTT; the stochastic estimators are unbiased.
"""

from __future__ import annotations

from typing import Any

import pytest

import gradflow
from gradflow.testing import check_estimator

SIZES = {"n_in": 3, "n_hidden": 5, "n_out": 2}
MODELS = ["rnn", "gru", "lstm", "influence"]
STEPS = 12
EXACT = {
    "rtrl": {},
    "tbptt": {"truncation": STEPS},
    "tbptt-interval": {"truncation": STEPS, "interval": 5},
    "bptt": {},
}


def _model(name: str, backend: Any = "numpy", **sizes: int) -> gradflow.Model:
    if name == "influence":
        return gradflow.create_model(name, backend)
    return gradflow.create_model(name, backend, **{**SIZES, **sizes})


def _stochastic() -> list[str]:
    """The registered stochastic estimators: tests below run for each, as soon as it exists."""
    reg = gradflow.get_registry()
    return [name for name in reg.names("estimator") if reg.get("estimator", name).cls.stochastic]


# -- exact estimators ---------------------------------------------------------------------------
@pytest.mark.parametrize("key", list(EXACT))
@pytest.mark.parametrize("model_name", MODELS)
def test_exact_estimators_equal_bptt(model_name: str, key: str,
                                     backend64: gradflow.Backend) -> None:
    model = _model(model_name, backend64)
    report = check_estimator(key.split("-")[0], model, options=EXACT[key], steps=STEPS)
    assert report["max_rel_error"] < 1e-9
    if key == "rtrl":
        assert report["returned_steps"] == list(range(STEPS))
    elif key == "tbptt-interval":
        assert report["returned_steps"] == [4, 9, 11]  # two windows and the flush
    else:
        assert report["returned_steps"] == [STEPS - 1]


@pytest.mark.parametrize("model_name", ["gru", "lstm"])
def test_rtrl_equals_bptt_to_1e10_on_gated_cells(model_name: str) -> None:
    """Issue 5: n = 12, T = 40, relative error ≤ 1e-10 at every step."""
    model = _model(model_name, n_hidden=12)
    report = check_estimator("rtrl", model, steps=40, batch=2, rtol=1e-10)
    assert report["max_rel_error"] <= 1e-10


def test_tbptt_shorter_than_the_trajectory_is_not_exact() -> None:
    with pytest.raises(AssertionError, match=r"'tbptt' on model 'gru': step 11 .*relative error"):
        check_estimator("tbptt", _model("gru"), options={"truncation": 6}, steps=STEPS)


# -- stochastic estimators: unbiased ------------------------------------------------------------
@pytest.mark.parametrize("estimator", _stochastic())
@pytest.mark.parametrize("model_name", MODELS)
def test_stochastic_estimators_are_unbiased(estimator: str, model_name: str) -> None:
    report = check_estimator(estimator, _model(model_name), steps=STEPS, n_samples=500)
    assert report["ratio"] <= 5.0 and report["max_step_ratio"] <= 20.0


@pytest.mark.parametrize("estimator", _stochastic())
def test_stochastic_estimators_are_unbiased_on_array_api_strict(estimator: str) -> None:
    model = _model("lstm", "array_api_strict", n_hidden=3)
    check_estimator(estimator, model, steps=6, n_samples=200)


# -- the suite is honest: toy estimators with known behaviour -----------------------------------
class NoisyRTRL(gradflow.Estimator):
    """RTRL's exact direction plus zero-mean noise of a chosen size and an optional bias."""

    name = "noisy-rtrl"
    stochastic = True
    requires = frozenset({gradflow.JVP_STATE, gradflow.PARAM_JACOBIAN})
    noise = 1.0
    bias = 0.0

    def _allocate(self, batch: int) -> None:
        self.G = self.xp.zeros((batch, self.model.n_state, self.layout.n_rec), dtype=self.dtype)

    def step(self, record: gradflow.StepRecord) -> Any:
        xp, model = self.xp, self.model
        self.G = (model.jvp_state(record.theta, record.cache, self.G)
                  + model.param_jacobian(record.theta, record.cache))
        g_rec = xp.sum(record.delta[:, None, :] @ self.G, axis=(0, 1))
        scale = self.noise * xp.sqrt(xp.sum(g_rec * g_rec) / g_rec.shape[0])
        signs = self.rng.signs((g_rec.shape[0],), self.dtype)
        return self.full_direction(g_rec * (1.0 + self.bias) + scale * signs, record.grad_out)


class BiasedRTRL(NoisyRTRL):
    name = "biased-rtrl"
    bias = 0.15  # 15% too long, hidden in noise about 7× larger than the bias


class ToyRTRL(gradflow.Estimator):
    """Exact RTRL written out, optionally forgetting its sensitivity at one step."""

    name = "toy-rtrl"
    requires = frozenset({gradflow.JVP_STATE, gradflow.PARAM_JACOBIAN})
    forget_at: int | None = None

    def _allocate(self, batch: int) -> None:
        self.G = self.xp.zeros((batch, self.model.n_state, self.layout.n_rec), dtype=self.dtype)
        self.t = 0

    def step(self, record: gradflow.StepRecord) -> Any:
        model = self.model
        old = self.G if self.t != self.forget_at else self.xp.zeros_like(self.G)
        self.G = model.jvp_state(record.theta, record.cache, old) + model.param_jacobian(
            record.theta, record.cache)
        self.t += 1
        g_rec = self.xp.sum(record.delta[:, None, :] @ self.G, axis=(0, 1))
        return self.full_direction(g_rec, record.grad_out)


class ForgetfulRTRL(ToyRTRL):
    """A wrong 'exact' estimator: RTRL that forgets its sensitivity at step 5."""

    name = "forgetful-rtrl"
    forget_at = 5


class DroppingTBPTT(ToyRTRL):
    """Returns every 4 steps what it owes for the last step only, and flushes nothing."""

    name = "dropping"

    def step(self, record: gradflow.StepRecord) -> Any:
        direction = super().step(record)
        return direction if self.t % 4 == 0 else None


class DelayedRTRL(ToyRTRL):
    """Exact, one step late: returns at step t the gradient of step t − 1, the last at flush."""

    name = "delayed-rtrl"

    def _allocate(self, batch: int) -> None:
        super()._allocate(batch)
        self.pending = None

    def step(self, record: gradflow.StepRecord) -> Any:
        previous, self.pending = self.pending, super().step(record)
        return previous

    def flush(self, theta: Any) -> Any:
        return self.pending


def test_an_estimator_may_return_at_the_start_of_the_next_step() -> None:
    report = check_estimator(DelayedRTRL, _model("gru"), steps=STEPS)
    assert report["returned_steps"] == list(range(1, STEPS))
    assert report["max_rel_error"] < 1e-12


def test_unbiased_noise_passes() -> None:
    report = check_estimator(NoisyRTRL, _model("gru"), steps=STEPS)
    assert report["kind"] == "stochastic" and report["ratio"] < 2.0


@pytest.mark.parametrize("model_name", ["gru", "influence"])
def test_a_small_bias_hidden_in_noise_is_caught(model_name: str) -> None:
    with pytest.raises(AssertionError, match=r"'biased-rtrl' on model .*biased"):
        check_estimator(BiasedRTRL, _model(model_name), steps=STEPS)


def test_a_wrong_exact_estimator_is_named_with_its_step() -> None:
    with pytest.raises(AssertionError,
                       match=r"'forgetful-rtrl' on model 'lstm': step 5 \(accounting for steps "
                             r"5\.\.5\): relative error"):
        check_estimator(ForgetfulRTRL, _model("lstm"), steps=STEPS)


def test_steps_never_returned_are_an_error() -> None:
    with pytest.raises(AssertionError, match=r"steps .* were never returned"):
        check_estimator(DroppingTBPTT, _model("rnn"), steps=10)


def test_estimator_given_as_an_instance_on_a_float64_model() -> None:
    model = _model("gru")
    est = gradflow.create_estimator("rtrl", model)
    assert check_estimator(est)["max_rel_error"] < 1e-9
    with pytest.raises(ValueError, match="float64"):
        check_estimator(gradflow.create_estimator(
            "rtrl", gradflow.create_model("gru", dtype="float32", **SIZES)))


def test_capabilities_are_checked() -> None:
    model = _model("rnn")
    model.capabilities = frozenset({gradflow.FORWARD, gradflow.READOUT, gradflow.VJP})
    with pytest.raises(gradflow.CapabilityError, match="rtrl"):
        check_estimator("rtrl", model)


def test_preconditioned_estimators_are_checked_raw() -> None:
    """An estimator whose step applies a preconditioner is checked on its raw estimate ĝ."""

    class Scaled(NoisyRTRL):
        name = "scaled"
        noise = 0.0
        precondition = True

        def step(self, record: gradflow.StepRecord) -> Any:
            direction = super().step(record)
            return 3.0 * direction if self.precondition else direction

    est = Scaled(_model("rnn"), Scaled.Options())
    report = check_estimator(est, n_samples=100)
    assert report["ratio"] == 0.0 and report["mean_rel_error"] < 1e-12
    assert est.precondition is True  # restored
