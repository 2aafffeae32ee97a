"""Exact estimators: RTRL = BPTT with θ frozen, TBPTT against windows built by hand, BPTT."""

from __future__ import annotations

import numpy as np
import pytest

import gradflow
from tests.helpers import central_jacobian, registered, rel_err


def _problem(backend, T=60, B=3, n=16, m=3, k=2, alpha=1.0, seed=0, loss="mse"):
    model = gradflow.create_model("rnn", backend=backend, n_in=m, n_hidden=n, n_out=k,
                                  alpha=alpha)
    rng = np.random.default_rng(seed)
    theta = model.backend.to_numpy(model.init_params(seed)) * 3.0  # a non-trivial regime
    inputs = rng.normal(size=(T, B, m))
    targets = rng.integers(0, k, size=(T, B)) if loss == "ce" else rng.normal(size=(T, B, k))
    return model, theta, inputs, targets


@pytest.mark.parametrize("loss", ["mse", "ce"])
def test_rtrl_equals_bptt_per_step(backend64: gradflow.Backend, loss: str) -> None:
    model, theta, X, Y = _problem(backend64, loss=loss)
    ref = gradflow.bptt_gradients(model, theta, X, Y, loss=loss)
    rtrl = gradflow.frozen_gradients(model, gradflow.create_estimator("rtrl", model), theta,
                                     X, Y, loss=loss)
    assert rtrl.shape == (60, model.layout.size) and isinstance(rtrl, np.ndarray)
    for t in range(60):
        assert rel_err(rtrl[t], ref[t]) <= 1e-10, f"step {t}"
    # the gradients really depend on the past (otherwise the test would prove little)
    assert rel_err(ref[-1, model.layout.rec], 0 * ref[-1, model.layout.rec]) > 0
    bptt = gradflow.frozen_gradients(model, gradflow.create_estimator("bptt", model), theta,
                                     X, Y, loss=loss)
    assert np.all(bptt[:-1] == 0) and rel_err(bptt[-1], ref.sum(axis=0)) <= 1e-10


def test_rtrl_equals_bptt_with_leak_and_resets(backend64: gradflow.Backend) -> None:
    model, theta, X, Y = _problem(backend64, T=30, alpha=0.5)
    resets = np.zeros((30, 3), dtype=bool)
    resets[10, 0] = resets[17, 1] = resets[17, 2] = True
    ref = gradflow.bptt_gradients(model, theta, X, Y, resets=resets)
    got = gradflow.frozen_gradients(model, gradflow.create_estimator("rtrl", model), theta, X,
                                    Y, resets=resets)
    assert rel_err(got, ref) <= 1e-10
    no_reset = gradflow.bptt_gradients(model, theta, X, Y)
    assert rel_err(no_reset, ref) > 1e-3  # the resets matter
    tb = gradflow.frozen_gradients(model, gradflow.create_estimator("tbptt", model,
                                                                    truncation=30, interval=1),
                                   theta, X, Y, resets=resets)
    assert rel_err(tb, ref) <= 1e-10


@pytest.mark.parametrize("truncation", [60, 100])
def test_tbptt_with_long_truncation_equals_bptt(backend64: gradflow.Backend,
                                                truncation: int) -> None:
    model, theta, X, Y = _problem(backend64)
    ref = gradflow.bptt_gradients(model, theta, X, Y)
    est = gradflow.create_estimator("tbptt", model, truncation=truncation)
    rows = gradflow.frozen_gradients(model, est, theta, X, Y)
    assert rel_err(rows.sum(axis=0), ref.sum(axis=0)) <= 1e-10
    assert np.all(rows[:-1] == 0)  # one update, at the end of the data


def test_tbptt_windows_by_hand(backend64: gradflow.Backend) -> None:
    """TBPTT(k1 = k2 = 5) on 20 steps equals the gradients of the four windows, each computed
    here by central finite differences of Σ_{s in window} ℓ_s with the state entering the
    window held fixed."""
    be = backend64
    model, theta, X, Y = _problem(be, T=20, B=2, n=6)
    est = gradflow.create_estimator("tbptt", model, truncation=5, interval=5)
    rows = gradflow.frozen_gradients(model, est, theta, X, Y)

    mse = gradflow.get_loss("mse")

    def run(th, h, start, stop):
        """h after step stop-1 and the summed losses of steps start..stop-1."""
        total = 0.0
        for t in range(start, stop):
            h, _ = model.forward(be.asarray(th), h, be.asarray(X[t]))
            total += be.to_float(mse(model.readout(be.asarray(th), h), be.asarray(Y[t]))[0])
        return h, total

    h = model.initial_state(2)
    for end in (5, 10, 15, 20):
        start = end - 5
        h_in = h

        def window_loss(th, h_in=h_in, start=start, end=end):
            return np.array([run(th, h_in, start, end)[1]])

        fd = central_jacobian(window_loss, theta, eps=1e-5)[0]
        assert rel_err(rows[end - 1], fd) < 1e-7, f"window ending at step {end - 1}"
        for t in range(start, end - 1):
            assert np.all(rows[t] == 0)
        h, _ = run(theta, h, start, end)


def test_tbptt_interval_shorter_than_truncation(backend64: gradflow.Backend) -> None:
    """k1 = 2, k2 = 4: each update is Σ over the last 2 losses, each backpropagated through
    the last 4 transitions of the window (equal to per-step BPTT truncated by hand)."""
    model, theta, X, Y = _problem(backend64, T=12, B=1, n=5)
    rows = gradflow.frozen_gradients(
        model, gradflow.create_estimator("tbptt", model, truncation=4, interval=2), theta, X, Y)
    # Reference built from single-loss TBPTT runs: ℓ_s through a chosen number of transitions.
    one = gradflow.create_estimator("tbptt", model, truncation=4, interval=1)
    short = gradflow.create_estimator("tbptt", model, truncation=3, interval=1)
    r4 = gradflow.frozen_gradients(model, one, theta, X, Y)   # ℓ_s through 4 transitions
    r3 = gradflow.frozen_gradients(model, short, theta, X, Y)  # ℓ_s through 3 transitions
    for t in range(1, 12, 2):  # updates at steps 1, 3, 5, ...: losses t-1 and t
        # ℓ_t flows through transitions t-3..t (4); ℓ_{t-1} through t-3..t-1 (3)
        expected = r4[t] + r3[t - 1]
        assert rel_err(rows[t], expected) <= 1e-12, f"update at step {t}"
        assert np.all(rows[t - 1] == 0)


def test_tbptt_rejects_interval_beyond_truncation() -> None:
    model = gradflow.create_model("rnn")
    with pytest.raises(gradflow.PluginError, match=r"interval.*must not exceed truncation"):
        gradflow.create_estimator("tbptt", model, truncation=3, interval=5)
    with pytest.raises(gradflow.PluginError, match=r"estimator 'tbptt'.*window: unknown option"):
        gradflow.create_estimator("tbptt", model, window=3)


@pytest.mark.parametrize("name", registered("estimator"))
def test_state_dict_resume_is_exact(name: str) -> None:
    """Stopping after 13 steps and restoring the state into a fresh estimator continues
    bit for bit."""
    model, theta, X, Y = _problem("numpy", T=25, B=2, n=5)
    be, mse = model.backend, gradflow.get_loss("mse")

    def steps(est, h, ts):
        out = []
        for t in ts:
            h, cache = model.forward(theta, h, X[t])
            _, dy = mse(model.readout(theta, h), Y[t])
            delta, g_out = model.readout_vjp(theta, h, dy)
            d = est.step(gradflow.StepRecord(theta, cache, delta, g_out))
            out.append(None if d is None else be.to_numpy(d).copy())
        return h, out

    options = {"truncation": 7} if name == "tbptt" else {}  # a window that ends mid-way
    full = gradflow.create_estimator(name, model, **options)
    full.start(2, seed=3)
    _, ref = steps(full, model.initial_state(2), range(25))

    first = gradflow.create_estimator(name, model, **options)
    first.start(2, seed=3)
    h, a = steps(first, model.initial_state(2), range(13))
    state = first.state_dict()
    second = gradflow.create_estimator(name, model, **options)
    second.start(2, seed=99)
    second.load_state_dict(state)
    _, b = steps(second, h, range(13, 25))
    for t, (x, y) in enumerate(zip(ref, a + b, strict=True)):
        assert (x is None) == (y is None), t
        if x is not None:
            np.testing.assert_array_equal(x, y)


def test_readout_only_returns_exact_readout_gradient() -> None:
    model, theta, X, Y = _problem("numpy", T=10)
    ref = gradflow.bptt_gradients(model, theta, X, Y)
    rows = gradflow.frozen_gradients(model, gradflow.create_estimator("readout-only", model),
                                     theta, X, Y)
    assert np.all(rows[:, model.layout.rec] == 0)
    np.testing.assert_allclose(rows[:, model.layout.out], ref[:, model.layout.out], rtol=1e-13)


def test_frozen_gradients_checks_shapes() -> None:
    model = gradflow.create_model("rnn", n_in=3, n_out=2)
    est = gradflow.create_estimator("rtrl", model)
    theta = model.init_params(0)
    with pytest.raises(gradflow.ShapeError, match=r"inputs must have shape \(T, B, 3\)"):
        gradflow.frozen_gradients(model, est, theta, np.zeros((5, 3)), np.zeros((5, 1, 2)))
    with pytest.raises(gradflow.ShapeError, match="targets must have shape"):
        gradflow.frozen_gradients(model, est, theta, np.zeros((5, 1, 3)), np.zeros((4, 1, 2)))
