"""Every primitive of the `rnn` model against central finite differences in float64.

docs/architecture.md §4: relative error < 1e-6, for α = 1 and α = 0.5, B = 1 and B = 3, on every
backend.
"""

from __future__ import annotations

import numpy as np
import pytest

import gradflow
from tests.helpers import central_jacobian, rel_err

TOL = 1e-6
N_IN, N_HID, N_OUT = 3, 6, 2


@pytest.fixture(params=[(1.0, 1), (1.0, 3), (0.5, 1), (0.5, 3)],
                ids=["alpha1-B1", "alpha1-B3", "alpha.5-B1", "alpha.5-B3"])
def setup(request: pytest.FixtureRequest, backend64: gradflow.Backend):
    alpha, batch = request.param
    model = gradflow.create_model("rnn", backend=backend64, n_in=N_IN, n_hidden=N_HID,
                                  n_out=N_OUT, alpha=alpha)
    rng = np.random.default_rng(42)
    theta = backend64.to_numpy(model.init_params(3)) * 2.0  # larger weights: visible curvature
    h = rng.normal(size=(batch, N_HID)) * 0.8
    x = rng.normal(size=(batch, N_IN))
    return model, backend64, theta, h, x


def _forward_np(model, be, theta, h, x):
    h_next, _ = model.forward(be.asarray(theta), be.asarray(h), be.asarray(x))
    return be.to_numpy(h_next)


def test_forward_matches_equation(setup) -> None:
    model, be, theta, h, x = setup
    p = model.layout.unflatten(theta)
    a = h @ p["W_hh"].T + x @ p["W_xh"].T + p["b_h"]
    expected = (1 - model.alpha) * h + model.alpha * np.tanh(a)
    np.testing.assert_allclose(_forward_np(model, be, theta, h, x), expected, rtol=1e-13)
    y = be.to_numpy(model.readout(be.asarray(theta), be.asarray(h)))
    np.testing.assert_allclose(y, h @ p["W_hy"].T + p["b_y"], rtol=1e-13)


def _per_stream_fd(model, be, theta, h, x):
    """FD Jacobians J[b] = ∂h'_b/∂h_b (n, n) and F[b] = ∂h'_b/∂θ_rec (n, P_rec)."""
    n_rec = model.layout.n_rec
    J, F = [], []
    for b in range(h.shape[0]):
        def f_h(hb, b=b):
            hh = h.copy()
            hh[b] = hb
            return _forward_np(model, be, theta, hh, x)[b]

        def f_t(trec, b=b):
            th = theta.copy()
            th[:n_rec] = trec
            return _forward_np(model, be, th, h, x)[b]

        J.append(central_jacobian(f_h, h[b]))
        F.append(central_jacobian(f_t, theta[:n_rec]))
    return np.stack(J), np.stack(F)


def test_state_and_parameter_primitives(setup) -> None:
    model, be, theta, h, x = setup
    J, F = _per_stream_fd(model, be, theta, h, x)
    B, n = h.shape
    th = be.asarray(theta)
    _, cache = model.forward(th, be.asarray(h), be.asarray(x))
    rng = np.random.default_rng(1)

    v = rng.normal(size=(B, n))
    got = be.to_numpy(model.jvp_state(th, cache, be.asarray(v)))
    assert rel_err(got, np.einsum("bij,bj->bi", J, v)) < TOL, "jvp_state (B, n)"

    V = rng.normal(size=(B, n, 4))
    got = be.to_numpy(model.jvp_state(th, cache, be.asarray(V)))
    assert rel_err(got, J @ V) < TOL, "jvp_state (B, n, K)"

    U = rng.normal(size=(B, n))
    u_h, u_theta = model.vjp(th, cache, be.asarray(U))
    assert rel_err(be.to_numpy(u_h), np.einsum("bi,bij->bj", U, J)) < TOL, "vjp state part"
    assert u_theta.shape == (B, model.layout.n_rec)
    assert rel_err(be.to_numpy(u_theta), np.einsum("bi,bij->bj", U, F)) < TOL, "vjp per stream"

    got = be.to_numpy(model.param_jacobian(th, cache))
    assert got.shape == F.shape and rel_err(got, F) < TOL, "param_jacobian"

    got = be.to_numpy(model.param_row_sqnorms(th, cache))
    assert rel_err(got, np.sum(F**2, axis=2)) < TOL, "param_row_sqnorms"
    inv_metric = rng.uniform(0.1, 3.0, size=model.layout.n_rec)
    got = be.to_numpy(model.param_row_sqnorms(th, cache, be.asarray(inv_metric)))
    assert rel_err(got, np.sum(F**2 * inv_metric, axis=2)) < TOL, "param_row_sqnorms metric"


def test_readout_vjp(setup) -> None:
    model, be, theta, h, _ = setup
    B = h.shape[0]
    out = model.layout.out
    u = np.random.default_rng(2).normal(size=(B, N_OUT))

    def y_of_h(hflat):
        return be.to_numpy(model.readout(be.asarray(theta), be.asarray(hflat.reshape(h.shape))))

    def y_of_out(tout):
        th = theta.copy()
        th[out] = tout
        return be.to_numpy(model.readout(be.asarray(th), be.asarray(h)))

    Jh = central_jacobian(y_of_h, h.ravel())  # (B*k, B*n)
    Jo = central_jacobian(y_of_out, theta[out])  # (B*k, P_out)
    gh, gout = model.readout_vjp(be.asarray(theta), be.asarray(h), be.asarray(u))
    assert rel_err(be.to_numpy(gh).ravel(), u.ravel() @ Jh) < TOL
    assert gout.shape == (model.layout.n_out,)
    assert rel_err(be.to_numpy(gout), u.ravel() @ Jo) < TOL


def test_init_params_seeded_and_orthogonal(backend64: gradflow.Backend) -> None:
    model = gradflow.create_model("rnn", backend=backend64, n_in=2, n_hidden=8, n_out=1)
    a = backend64.to_numpy(model.init_params(5))
    np.testing.assert_array_equal(a, backend64.to_numpy(model.init_params(5)))
    assert not np.array_equal(a, backend64.to_numpy(model.init_params(6)))
    bound = 1 / np.sqrt(8)
    assert np.all(np.abs(a[model.layout.rec]) <= bound)
    ortho = gradflow.create_model("rnn", backend=backend64, n_in=2, n_hidden=8, n_out=1,
                                  init="orthogonal")
    w = ortho.layout.view(backend64.to_numpy(ortho.init_params(1)), "W_hh")
    np.testing.assert_allclose(w @ w.T, np.eye(8), atol=1e-12)


def test_float32_forward_close_to_float64() -> None:
    m64 = gradflow.create_model("rnn", n_in=3, n_hidden=16, n_out=2)
    m32 = gradflow.create_model("rnn", dtype="float32", n_in=3, n_hidden=16, n_out=2)
    th64, th32 = m64.init_params(0), m32.init_params(0)
    assert th32.dtype == np.float32
    x = np.random.default_rng(0).normal(size=(4, 3))
    h64, _ = m64.forward(th64, m64.initial_state(4), x)
    h32, _ = m32.forward(th32, m32.initial_state(4), x.astype(np.float32))
    assert h32.dtype == np.float32
    np.testing.assert_allclose(h32, h64, atol=1e-6)


@pytest.mark.parametrize("bad", [{"alpha": 0.0}, {"alpha": 1.5}, {"n_hidden": 0}, {"leak": 1}])
def test_rnn_rejects_bad_options(bad: dict) -> None:
    with pytest.raises(gradflow.PluginError, match="model 'rnn': invalid options"):
        gradflow.create_model("rnn", **bad)
