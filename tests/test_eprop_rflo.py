"""rflo (Murray 2019) and e-prop (Bellec et al. 2020): each against its defining formula written
out in plain NumPy (≤ 1e-12 relative), against RTRL where they must equal it (W_hh = 0), against
each other on the ``rnn`` (the same numbers), with random feedback (deterministic, resumable,
N(0, 1/k)), on array_api_strict, and refused where the model lacks a primitive."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import gradflow
from gradflow.testing import check_estimator
from gradflow.verification.estimator_checks import random_trajectory
from tests.helpers import small_model

STEPS = 12
RTOL = 1e-12


def host(model: gradflow.Model, x: Any) -> np.ndarray:
    return np.array(model.backend.to_numpy(x), dtype=np.float64)


def weights(model: gradflow.Model, theta: np.ndarray) -> dict[str, np.ndarray]:
    """θ's named pieces (NumPy copies)."""
    lay = model.layout
    return {name: theta[spec.offset:spec.offset + int(np.prod(spec.shape))].reshape(spec.shape)
            for name, spec in lay.specs.items()}


def without_recurrence(model: gradflow.Model, seed: int = 0) -> np.ndarray:
    """init_params(seed) with W_hh = 0."""
    theta = host(model, model.init_params(seed))
    spec = model.layout.specs["W_hh"]
    theta[spec.offset:spec.offset + int(np.prod(spec.shape))] = 0.0
    return theta


def trajectory_arrays(traj: Any) -> tuple[np.ndarray, ...]:
    model = traj.model
    resets = (np.zeros(traj.inputs.shape[:2], dtype=bool) if traj.resets is None
              else np.asarray(model.backend.to_numpy(traj.resets), dtype=bool))
    return (host(model, traj.theta), host(model, traj.inputs), host(model, traj.targets), resets)


def feedback_of(estimator: gradflow.Estimator) -> np.ndarray | None:
    matrix = estimator.signal.matrix
    return None if matrix is None else host(estimator.model, matrix)


# -- the defining formulas, in plain NumPy -------------------------------------------------------
def rflo_formula(model: gradflow.Model, feedback: np.ndarray | None = None):
    """Murray's RFLO for the leaky tanh RNN, step by step: e ← (1 − α) e + α φ'(a) x̂ᵀ per unit,
    x̂ = [h_{t−1}; x_t; 1]; g_rec = Σ_b L_b ⊙ e_b with L = δ (readout) or dy Bᵀ (random);
    g_out the exact readout gradient of the mean squared error."""
    alpha = model.alpha
    n, k = model.n_state, model.n_out

    def formula(traj: Any) -> dict[int, np.ndarray]:
        theta, xs, ys, resets = trajectory_arrays(traj)
        w = weights(model, theta)
        W = np.concatenate([w["W_hh"], w["W_xh"], w["b_h"][:, None]], axis=1)  # (n, n + m + 1)
        batch = xs.shape[1]
        h = np.zeros((batch, n))
        e = np.zeros((batch, n, W.shape[1]))
        out = {}
        for t in range(xs.shape[0]):
            h[resets[t]] = 0.0
            e[resets[t]] = 0.0
            xhat = np.concatenate([h, xs[t], np.ones((batch, 1))], axis=1)
            s = np.tanh(xhat @ W.T)
            h = (1.0 - alpha) * h + alpha * s
            e = (1.0 - alpha) * e + alpha * (1.0 - s * s)[:, :, None] * xhat[:, None, :]
            dy = (h @ w["W_hy"].T + w["b_y"] - ys[t]) / batch
            signal = dy @ w["W_hy"] if feedback is None else dy @ feedback.T
            g = np.einsum("bk,bkj->kj", signal, e)
            out[t] = np.concatenate([g[:, :n].ravel(), g[:, n:-1].ravel(), g[:, -1],
                                     (dy.T @ h).ravel(), dy.sum(axis=0)])
        assert out[0].size == model.layout.size and k == w["b_y"].size
        return out

    return formula


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def eprop_lstm_formula(model: gradflow.Model, feedback: np.ndarray | None = None):
    """Bellec et al.'s e-prop for the LSTM from its gate values: for the i, f, g gate rows of unit
    j and input z = [x_t; h_{t−1}; 1; 1], the eligibility vector ε^c ← f_j ε^c + ∂c_j/∂a z
    (∂c/∂a = g i(1 − i), c_{t−1} f(1 − f), i(1 − g²); 0 for o), the eligibility trace
    e = o_j (1 − tanh² c_j) ε^c, plus tanh(c_j) o_j(1 − o_j) z on the o rows;
    g_rec = Σ_b L_b,j e."""
    n = model.n_state // 2

    def formula(traj: Any) -> dict[int, np.ndarray]:
        theta, xs, ys, resets = trajectory_arrays(traj)
        w = weights(model, theta)
        batch, m = xs.shape[1], xs.shape[2]
        h, c = np.zeros((batch, n)), np.zeros((batch, n))
        eps = np.zeros((batch, 4 * n, m + n + 2))
        out = {}
        for t in range(xs.shape[0]):
            for arr in (h, c, eps):
                arr[resets[t]] = 0.0
            z = np.concatenate([xs[t], h, np.ones((batch, 2))], axis=1)
            a = xs[t] @ w["W_ih"].T + w["b_ih"] + h @ w["W_hh"].T + w["b_hh"]
            i, f = sigmoid(a[:, :n]), sigmoid(a[:, n:2 * n])
            g, o = np.tanh(a[:, 2 * n:3 * n]), sigmoid(a[:, 3 * n:])
            dc = np.concatenate([g * i * (1 - i), c * f * (1 - f), i * (1 - g * g),
                                 np.zeros_like(o)], axis=1)
            eps = np.tile(f, 4)[:, :, None] * eps + dc[:, :, None] * z[:, None, :]
            c = f * c + i * g
            tc = np.tanh(c)
            h = o * tc
            trace = np.tile(o * (1 - tc * tc), 4)[:, :, None] * eps
            trace[:, 3 * n:, :] += (tc * o * (1 - o))[:, :, None] * z[:, None, :]
            dy = (h @ w["W_hy"].T + w["b_y"] - ys[t]) / batch
            signal = dy @ w["W_hy"] if feedback is None else dy @ feedback[:n].T
            grad = np.einsum("br,brj->rj", np.tile(signal, 4), trace)
            out[t] = np.concatenate([grad[:, :m].ravel(), grad[:, m:m + n].ravel(),
                                     grad[:, -2], grad[:, -1], (dy.T @ h).ravel(),
                                     dy.sum(axis=0)])
        return out

    return formula


# -- rflo ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("alpha", [1.0, 0.3])
def test_rflo_follows_its_formula(alpha: float) -> None:
    model = small_model("rnn", alpha=alpha)
    report = check_estimator("rflo", model, steps=STEPS, batch=3, expect=rflo_formula(model),
                             rtol=RTOL)
    assert report["checked"] and report["max_rel_error"] < RTOL
    assert report["returned_steps"] == list(range(STEPS))


def test_rflo_with_random_feedback_follows_its_formula() -> None:
    model = small_model("rnn", alpha=0.4)
    options = {"feedback": "random", "feedback_seed": 7}
    matrix = feedback_of(gradflow.create_estimator("rflo", model, **options))
    report = check_estimator("rflo", model, options=options, steps=STEPS, batch=2,
                             expect=rflo_formula(model, matrix), rtol=RTOL)
    assert report["max_rel_error"] < RTOL
    # the structural checks ran too: the matrix is rebuilt from the options, so a fresh estimator
    # loaded with a snapshot (started with another seed) continues bit for bit
    assert "snapshot_continues" in report["checks"]


@pytest.mark.parametrize("alpha", [1.0, 0.5])
def test_rflo_equals_rtrl_without_recurrent_weights(alpha: float) -> None:
    model = small_model("rnn", alpha=alpha)
    report = check_estimator("rflo", model, theta=without_recurrence(model), steps=STEPS,
                             kind="exact", rtol=1e-12)
    assert report["max_rel_error"] < 1e-12


def test_rflo_is_not_rtrl_with_recurrent_weights() -> None:
    with pytest.raises(AssertionError, match=r"'rflo' on model 'rnn': check 'matches_reference'"):
        check_estimator("rflo", small_model("rnn", alpha=0.5), steps=STEPS, kind="exact")


@pytest.mark.parametrize("model_name", ["lstm", "gru"])
def test_rflo_needs_a_leak(model_name: str) -> None:
    with pytest.raises(gradflow.CapabilityError, match="leak"):
        gradflow.create_estimator("rflo", small_model(model_name))


# -- e-prop --------------------------------------------------------------------------------------
def frozen(name: str, model: gradflow.Model, theta: Any = None, seed: int = 0,
           **options: Any) -> np.ndarray:
    """The estimator's directions (T, P) along the checks' random trajectory."""
    traj = random_trajectory(model, theta, STEPS, 3, "mse", seed)
    est = gradflow.create_estimator(name, model, **options)
    return gradflow.frozen_gradients(model, est, traj.theta, traj.inputs, traj.targets,
                                     resets=traj.resets)


@pytest.mark.parametrize("feedback", ["readout", "random"])
@pytest.mark.parametrize("alpha", [1.0, 0.3])
def test_eprop_is_rflo_on_the_rnn(alpha: float, feedback: str) -> None:
    model = small_model("rnn", alpha=alpha)
    mine = frozen("e-prop", model, feedback=feedback, feedback_seed=3)
    theirs = frozen("rflo", model, feedback=feedback, feedback_seed=3)
    assert np.array_equal(mine, theirs)  # the same operations: bit for bit
    assert np.abs(mine).max() > 0


@pytest.mark.parametrize("feedback", ["readout", "random"])
def test_eprop_on_lstm_follows_the_papers_lstm_traces(feedback: str) -> None:
    model = small_model("lstm")
    options = {"feedback": feedback, "feedback_seed": 11}
    matrix = feedback_of(gradflow.create_estimator("e-prop", model, **options))
    report = check_estimator("e-prop", model, options=options, steps=STEPS, batch=3,
                             expect=eprop_lstm_formula(model, matrix), rtol=RTOL)
    assert report["max_rel_error"] < RTOL


@pytest.mark.parametrize("model_name", ["lstm", "gru", "rnn"])
def test_eprop_equals_rtrl_without_recurrent_weights(model_name: str) -> None:
    """With W_hh = 0, J_t is block-diagonal and equal to the internal blocks."""
    model = small_model(model_name, **({"alpha": 0.5} if model_name == "rnn" else {}))
    report = check_estimator("e-prop", model, theta=without_recurrence(model), steps=STEPS,
                             kind="exact", rtol=1e-12)
    assert report["max_rel_error"] < 1e-12


@pytest.mark.parametrize("model_name", ["lstm", "gru"])
def test_eprop_is_not_rtrl_with_recurrent_weights(model_name: str) -> None:
    with pytest.raises(AssertionError, match=rf"'e-prop' on model '{model_name}': check "
                                             r"'matches_reference'"):
        check_estimator("e-prop", small_model(model_name), steps=STEPS, kind="exact")


def test_eprop_on_lstm_traces_run_through_the_cell() -> None:
    """The lstm's internal blocks (what e-prop's traces follow): the forget gate on c, nothing
    from h_{t−1} (it reaches the unit only through W_hh); two traces per parameter."""
    model = small_model("lstm")
    est = gradflow.create_estimator("e-prop", model)
    traj = random_trajectory(model, None, 3, 2, "mse", 0)
    record = traj.records()[1]
    blocks = host(model, model.internal_jacobian_blocks(record.theta, record.cache))
    assert np.all(blocks[:, :, :, 0] == 0.0)  # nothing through h_{t−1} but W_hh
    assert np.all(blocks[:, :, 1, 1] > 0.0)  # f
    assert est.state_fields()[0].shape == (2, model.layout.n_rec)


# -- random feedback -----------------------------------------------------------------------------
def test_random_feedback_is_seeded_scaled_and_reads_the_visible_state() -> None:
    lstm = small_model("lstm", n_hidden=300, n_out=4)
    a = feedback_of(gradflow.create_estimator("e-prop", lstm, feedback="random"))
    b = feedback_of(gradflow.create_estimator("e-prop", lstm, feedback="random"))
    c = feedback_of(gradflow.create_estimator("e-prop", lstm, feedback="random",
                                              feedback_seed=1))
    n = 300
    assert a.shape == (2 * n, 4) and np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.all(a[n:] == 0.0) and np.all(a[:n] != 0.0)  # no feedback to the cell state c
    assert abs(a[:n].var() - 1 / 4) < 0.03 and abs(a[:n].mean()) < 0.03  # N(0, 1/k)
    assert feedback_of(gradflow.create_estimator("e-prop", lstm)) is None
    rnn = small_model("rnn", n_hidden=300, n_out=4)
    d = feedback_of(gradflow.create_estimator("rflo", rnn, feedback="random"))
    assert np.all(d != 0.0) and np.array_equal(d, a[:n])  # the same draws, every row read


def test_random_feedback_needs_the_output_error() -> None:
    model = small_model("rnn")
    est = gradflow.create_estimator("rflo", model, feedback="random")
    est.start(3)
    record = random_trajectory(model, None, 2, 3, "mse", 0).records()[0]
    record.dy = None
    with pytest.raises(ValueError, match="output error"):
        est.step(record)


# -- structural checks, backends -----------------------------------------------------------------
@pytest.mark.parametrize(("name", "model_name"), [("rflo", "rnn"), ("e-prop", "rnn"),
                                                  ("e-prop", "gru"), ("e-prop", "lstm")])
def test_on_array_api_strict(name: str, model_name: str) -> None:
    options = {"alpha": 0.5} if model_name == "rnn" else {}
    strict = small_model(model_name, "array_api_strict", **options)
    check_estimator(name, strict, steps=6, options={"feedback": "random"})
    reference = small_model(model_name, **options)
    theta = host(reference, reference.init_params(0))
    got = frozen(name, strict, strict.backend.asarray(theta))
    want = frozen(name, reference, theta)
    assert np.abs(got - want).max() <= 1e-13 * np.abs(want).max()


def test_state_is_s_numbers_per_recurrent_parameter() -> None:
    for name, model_name, s in (("rflo", "rnn", 1), ("e-prop", "gru", 1), ("e-prop", "lstm", 2)):
        model = small_model(model_name)
        est = gradflow.create_estimator(name, model)
        est.start(3)
        assert est.state.e.shape == (3, s, model.layout.n_rec)
        assert est.kind == "biased" and not est.stochastic
