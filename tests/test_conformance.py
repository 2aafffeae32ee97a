"""Every registered estimator × every model that fits it through the public conformance suite
(gradflow.testing), and the suite's own honesty: it fails on wrong, truncated, biased, forgetful,
state-hiding and buffer-keeping estimators, naming the check.

The lists come from the registry, filtered by the estimators' declared ``kind``: a new built-in
(or an installed third-party plugin) is covered without editing this file. With θ frozen, exact
estimators equal per-step BPTT (≤ 1e-10 relative for RTRL on gru and lstm, n = 12, T = 40), and
TBPTT with truncation ≥ T equals BPTT; the unbiased ones are unbiased; every one passes the
structural checks (reset, snapshot, seed, returned buffer).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from gradflow_plugins.estimators.readout_only import ReadoutOnly

import gradflow
from gradflow.testing import check_estimator, estimator_checks
from tests.helpers import fits, pairs, registered, small_model, without

STEPS = 12


# -- every registered estimator ------------------------------------------------------------------
@pytest.mark.parametrize(("estimator", "model_name"), pairs(kind="exact"))
def test_exact_estimators_equal_bptt(estimator: str, model_name: str,
                                     backend64: gradflow.Backend) -> None:
    report = check_estimator(estimator, small_model(model_name, backend64), steps=STEPS)
    assert report["max_rel_error"] < 1e-9
    assert set(report["checks"]) == {"directions", "matches_reference", "same_seed_same_numbers",
                                     "reset_restores_fresh_state", "snapshot_continues",
                                     "direction_not_kept"}


@pytest.mark.parametrize(("estimator", "model_name"), pairs(kind="unbiased"))
def test_unbiased_estimators_are_unbiased(estimator: str, model_name: str) -> None:
    report = check_estimator(estimator, small_model(model_name), steps=STEPS, n_samples=500)
    assert report["ratio"] <= 5.0 and report["max_step_ratio"] <= 20.0


@pytest.mark.parametrize(("estimator", "model_name"), pairs(kind="biased"))
def test_biased_estimators_pass_the_structural_checks(estimator: str, model_name: str) -> None:
    report = check_estimator(estimator, small_model(model_name), steps=STEPS)
    assert report == {"kind": "biased", "checked": False, "checks": report["checks"]}


@pytest.mark.parametrize("estimator", registered("estimator"))
def test_every_estimator_on_array_api_strict(estimator: str) -> None:
    """On the lstm (state [h; c], four gates) unless the estimator needs a primitive it lacks
    (RFLO's leak): then on the first registered model that has them all."""
    name = next(m for m in ("lstm", *registered("model")) if fits(estimator, m))
    model = small_model(name, "array_api_strict", n_hidden=3)
    check_estimator(estimator, model, steps=6, n_samples=200)


def test_every_kind_is_covered_by_a_built_in() -> None:
    for kind in gradflow.KINDS:
        assert registered("estimator", kind=kind), kind


# -- the algorithms' own properties, on top of their kind ---------------------------------------
@pytest.mark.parametrize("model_name", registered("model"))
def test_tbptt_covering_the_trajectory_is_exact(model_name: str) -> None:
    model = small_model(model_name)
    report = check_estimator("tbptt", model, options={"truncation": STEPS}, steps=STEPS,
                             kind="exact")
    assert report["max_rel_error"] < 1e-9 and report["returned_steps"] == [STEPS - 1]
    report = check_estimator("tbptt", model, options={"truncation": STEPS, "interval": 5},
                             steps=STEPS, kind="exact")
    assert report["returned_steps"] == [4, 9, 11]  # two windows and the flush


def test_rtrl_returns_every_step_and_bptt_at_the_end() -> None:
    model = small_model("gru")
    assert check_estimator("rtrl", model, steps=STEPS)["returned_steps"] == list(range(STEPS))
    # stream 0 alone restarts mid-way: bptt updates only when every stream ends a sequence
    assert check_estimator("bptt", model, steps=STEPS)["returned_steps"] == [STEPS - 1]


@pytest.mark.parametrize("model_name", ["gru", "lstm"])
def test_rtrl_equals_bptt_to_1e10_on_gated_cells(model_name: str) -> None:
    """Issue 5: n = 12, T = 40, relative error ≤ 1e-10 at every step."""
    model = small_model(model_name, n_hidden=12)
    report = check_estimator("rtrl", model, steps=40, batch=2, rtol=1e-10)
    assert report["max_rel_error"] <= 1e-10


def test_tbptt_shorter_than_the_trajectory_is_not_exact() -> None:
    with pytest.raises(AssertionError, match=r"'tbptt' on model 'gru': check 'matches_reference'"
                                             r": step 11 .*relative error"):
        check_estimator("tbptt", small_model("gru"), options={"truncation": 6}, steps=STEPS,
                        kind="exact")


def test_readout_only_equals_its_definition() -> None:
    """readout-only is biased: its defining formula is [0, ∂ℓ_t/∂θ_out] at every step."""
    model = small_model("lstm")

    def definition(traj: Any) -> dict[int, np.ndarray]:
        out = {}
        for t, record in enumerate(traj.records()):
            g = np.zeros(model.layout.size)
            g[model.layout.n_rec:] = model.backend.to_numpy(record.grad_out)
            out[t] = g
        return out

    report = check_estimator("readout-only", model, steps=STEPS, expect=definition)
    assert report["checked"] and report["max_rel_error"] == 0.0


# -- the suite is honest: toy estimators with known behaviour -----------------------------------
class ToyRTRL(gradflow.Estimator):
    """Exact RTRL written out, optionally forgetting its sensitivity at one step."""

    name = "toy-rtrl"
    kind = "exact"
    requires = frozenset({gradflow.JVP_STATE, gradflow.PARAM_JACOBIAN})
    forget_at: int | None = None

    def state_fields(self) -> list[Any]:
        return [gradflow.PerStream("G", (self.model.n_state, self.layout.n_rec)),
                gradflow.Scalar("t", 0)]

    def sensitivity(self, record: gradflow.StepRecord) -> Any:
        state, model = self.state, self.model
        old = state.G if state.t != self.forget_at else self.xp.zeros_like(state.G)
        state.G = model.jvp_state(record.theta, record.cache, old) + model.param_jacobian(
            record.theta, record.cache)
        state.t += 1
        return self.xp.sum(record.delta[:, None, :] @ state.G, axis=(0, 1))

    def step(self, record: gradflow.StepRecord) -> Any:
        return self.xp.concat([self.sensitivity(record), record.grad_out])


class NoisyRTRL(ToyRTRL):
    """RTRL's exact direction plus zero-mean noise of a chosen size and an optional bias."""

    name = "noisy-rtrl"
    kind = "unbiased"
    stochastic = True
    noise = 1.0
    bias = 0.0

    def step(self, record: gradflow.StepRecord) -> Any:
        g_rec = self.sensitivity(record)
        scale = self.noise * self.xp.sqrt(self.xp.sum(g_rec * g_rec) / g_rec.shape[0])
        signs = self.rng.signs((g_rec.shape[0],), self.dtype)
        return self.xp.concat([g_rec * (1.0 + self.bias) + scale * signs, record.grad_out])


class BiasedRTRL(NoisyRTRL):
    name = "biased-rtrl"
    bias = 0.15  # 15% too long, hidden in noise about 7× larger than the bias


class ForgetfulRTRL(ToyRTRL):
    """A wrong 'exact' estimator: RTRL that forgets its sensitivity at step 5."""

    name = "forgetful-rtrl"
    forget_at = 5


class DroppingTBPTT(ToyRTRL):
    """Returns every 4 steps what it owes for the last step only, and flushes nothing."""

    name = "dropping"

    def step(self, record: gradflow.StepRecord) -> Any:
        direction = super().step(record)
        return direction if self.state.t % 4 == 0 else None


class DelayedRTRL(ToyRTRL):
    """Exact, one step late: returns at step t the gradient of step t − 1, the last at flush."""

    name = "delayed-rtrl"

    def state_fields(self) -> list[Any]:
        return [*super().state_fields(), gradflow.Shared("owed", (self.layout.size,)),
                gradflow.Scalar("owing", False)]

    def step(self, record: gradflow.StepRecord) -> Any:
        state = self.state
        previous = self.xp.asarray(state.owed, copy=True) if state.owing else None
        state.owed[...] = super().step(record)
        state.owing = True
        return previous

    def flush(self, theta: Any) -> Any:
        return self.xp.asarray(self.state.owed, copy=True) if self.state.owing else None


def test_an_estimator_may_return_at_the_start_of_the_next_step() -> None:
    report = check_estimator(DelayedRTRL, small_model("gru"), steps=STEPS)
    assert report["returned_steps"] == list(range(1, STEPS))
    assert report["max_rel_error"] < 1e-12


def test_unbiased_noise_passes() -> None:
    report = check_estimator(NoisyRTRL, small_model("gru"), steps=STEPS)
    assert report["kind"] == "unbiased" and report["ratio"] < 2.0


@pytest.mark.parametrize("model_name", ["gru", "influence"])
def test_a_small_bias_hidden_in_noise_is_caught(model_name: str) -> None:
    with pytest.raises(AssertionError, match=r"'biased-rtrl' on model .*biased"):
        check_estimator(BiasedRTRL, small_model(model_name), steps=STEPS)


def test_a_wrong_exact_estimator_is_named_with_its_step() -> None:
    with pytest.raises(AssertionError,
                       match=r"'forgetful-rtrl' on model 'lstm': check 'matches_reference': "
                             r"step 5 \(accounting for steps 5\.\.5\): relative error"):
        check_estimator(ForgetfulRTRL, small_model("lstm"), steps=STEPS)


def test_steps_never_returned_are_an_error() -> None:
    with pytest.raises(AssertionError, match=r"steps .* were never returned"):
        check_estimator(DroppingTBPTT, small_model("rnn"), steps=10)


# -- broken plugins fail the check that names what they break ------------------------------------
class IgnoresReset(ToyRTRL):
    """Keeps G across a sequence boundary."""

    name = "ignores-reset"

    def reset(self, mask: Any) -> None:
        return None


class ForgetsToDeclareReset(ToyRTRL):
    """Declares G as a per-stream array that survives sequence boundaries."""

    name = "keeps-g-across-boundaries"

    def state_fields(self) -> list[Any]:
        return [gradflow.PerStream("G", (self.model.n_state, self.layout.n_rec), reset=False),
                gradflow.Scalar("t", 0)]


class HiddenState(ToyRTRL):
    """Keeps G in an attribute of its own instead of its declared state."""

    name = "hidden-state"

    def state_fields(self) -> list[Any]:
        return []

    def setup_workspace(self) -> None:
        self.G = self.xp.zeros((self.batch, self.model.n_state, self.layout.n_rec),
                               dtype=self.dtype)

    def step(self, record: gradflow.StepRecord) -> Any:
        model = self.model
        self.G = model.jvp_state(record.theta, record.cache, self.G) + model.param_jacobian(
            record.theta, record.cache)
        g_rec = self.xp.sum(record.delta[:, None, :] @ self.G, axis=(0, 1))
        return self.xp.concat([g_rec, record.grad_out])


class NoStateDict(ToyRTRL):
    """Returns no state: its snapshot is empty."""

    name = "no-state-dict"

    def state_dict(self) -> dict[str, Any]:
        return {}


class KeepsDirection(ToyRTRL):
    """Accumulates its directions in the buffer it returns: reads back what it handed out."""

    name = "keeps-direction"

    def step(self, record: gradflow.StepRecord) -> Any:
        buf = self.direction_buffer()
        buf *= 0.5
        buf += super().step(record)
        return buf


class Unseeded(NoisyRTRL):
    """Draws its noise from NumPy's global generator instead of its own."""

    name = "unseeded"

    def step(self, record: gradflow.StepRecord) -> Any:
        g_rec = self.sensitivity(record)
        noise = self.backend.asarray(np.random.default_rng().standard_normal(g_rec.shape[0]))
        return self.xp.concat([g_rec + 0.01 * noise, record.grad_out])


BROKEN = [
    (IgnoresReset, "reset_restores_fresh_state", "the masked streams' rows of 'G'"),
    (ForgetsToDeclareReset, "matches_reference", "relative error"),
    (HiddenState, "snapshot_continues", "does not continue as the original"),
    (NoStateDict, "snapshot_continues", "raised KeyError"),
    (KeepsDirection, "direction_not_kept", "keeps a reference to what it returns"),
    (Unseeded, "same_seed_same_numbers", "two runs with seed 0 differ"),
]


@pytest.mark.parametrize(("cls", "check", "why"), BROKEN, ids=[c.name for c, _, _ in BROKEN])
def test_a_broken_estimator_fails_the_check_that_names_it(cls: type, check: str,
                                                          why: str) -> None:
    model = small_model("rnn")
    with pytest.raises(AssertionError, match=rf"{cls.name}.*check '{check}': .*{why}"):
        check_estimator(cls, model, steps=STEPS, n_samples=100)
    named = {c.name: c for c in estimator_checks(cls, model, steps=STEPS, n_samples=100)}
    with pytest.raises(AssertionError, match=rf"check '{check}'"):
        named[check].run()


def test_the_honest_twin_of_each_broken_estimator_passes() -> None:
    model = small_model("rnn")
    assert check_estimator(ToyRTRL, model, steps=STEPS)["max_rel_error"] < 1e-9
    check_estimator(NoisyRTRL, model, steps=STEPS, n_samples=100)


# -- how estimators are given --------------------------------------------------------------------
def test_estimator_given_as_an_instance_on_a_float64_model() -> None:
    model = small_model("gru")
    est = gradflow.create_estimator("rtrl", model)
    assert check_estimator(est)["max_rel_error"] < 1e-9
    with pytest.raises(ValueError, match="float64"):
        check_estimator(gradflow.create_estimator("rtrl", small_model("gru", dtype="float32")))


def test_capabilities_are_checked() -> None:
    model = without(small_model("rnn"), gradflow.JVP_STATE, gradflow.PARAM_JACOBIAN)
    with pytest.raises(gradflow.CapabilityError, match="rtrl"):
        check_estimator("rtrl", model)


def test_preconditioned_estimators_are_checked_raw() -> None:
    """An estimator whose step applies a preconditioner is checked on its raw estimate ĝ."""

    class Scaled(ToyRTRL):
        name = "scaled"
        kind = "unbiased"
        precondition = True

        def step(self, record: gradflow.StepRecord) -> Any:
            direction = super().step(record)
            return 3.0 * direction if self.precondition else direction

    est = Scaled(small_model("rnn"), Scaled.Options())
    report = check_estimator(est, n_samples=100)
    assert report["ratio"] == 0.0 and report["mean_rel_error"] < 1e-12
    assert est.precondition is True  # the instance checked is left as it was


class MixesReplicas(ReadoutOnly):
    """Declares replicas but lets the replicas' readout gradients leak into each other."""

    name = "mixes-replicas"
    replicas = True

    def step(self, record: gradflow.StepRecord) -> Any:
        direction = super().step(record)
        if direction.ndim > 1:  # replicated: every replica gets the mean of all of them
            direction[...] = self.xp.mean(direction, axis=0)
        return direction


def test_replicas_that_do_not_match_the_runs_alone_are_named() -> None:
    """replicas_match_alone runs for an estimator and a model that declare replicas, and finds
    a replica whose direction is not its run's own."""
    model = small_model("rnn")
    names = [c.name for c in estimator_checks("readout-only", model)]
    assert names[-2:] == ["replicas_match_alone", "matches_reference"]
    assert "replicas_match_alone" not in [c.name for c in estimator_checks("rtrl", model)]
    est = MixesReplicas(model, MixesReplicas.Options())
    check = next(c for c in estimator_checks(est) if c.name == "replicas_match_alone")
    with pytest.raises(AssertionError, match=r"estimator 'mixes-replicas' on model 'rnn': check "
                       r"'replicas_match_alone': step 0, replica 0: the direction differs from "
                       r"the run alone's by \S+ \(tolerance 1e-12\)"):
        check.run()
