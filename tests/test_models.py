"""The models: every primitive of every registered model against finite differences
(gradflow.testing.check_model), the equations and conventions of docs/architecture.md §4, and the
influence-balancing facts.

docs/architecture.md §4 / issue 5: relative error < 1e-6 in float64, B = 1 and B = 3, numpy and
array_api_strict.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

import gradflow
from gradflow.testing import check_model
from tests.helpers import registered, small_model

SIZES = {"n_in": 3, "n_hidden": 5, "n_out": 2}
#: every registered model at its defaults, and the rnn's options that change its equations
MODELS = {**{name: (name, {}) for name in registered("model")},
          "rnn-leaky": ("rnn", {"alpha": 0.5}), "rnn-orthogonal": ("rnn", {"init": "orthogonal"})}
HAS_TORCH = importlib.util.find_spec("torch") is not None


def _model(key: str, backend: gradflow.Backend | str = "numpy") -> gradflow.Model:
    name, options = MODELS[key]
    return small_model(name, backend, **options)


# -- finite differences, through the public conformance suite ----------------------------------
@pytest.mark.parametrize("key", list(MODELS))
def test_every_primitive_matches_finite_differences(key: str,
                                                    backend64: gradflow.Backend) -> None:
    model = _model(key, backend64)
    errors = check_model(model, batch_sizes=(1, 3))
    checked = {  # what check_model measures for each primitive the model implements
        gradflow.READOUT: {"readout_vjp (state part)"},
        gradflow.JVP_STATE: {"jvp_state (B, n)", "jvp_state (B, n, K)"},
        gradflow.VJP: {"vjp (state part)", "vjp (θ_rec part)", "vjp_accumulate (B, P_rec)"},
        gradflow.PARAM_JACOBIAN: {"param_jacobian"},
        gradflow.PARAM_ROW_SQNORMS: {"param_row_sqnorms", "param_row_sqnorms (inv_metric)"},
        gradflow.VJP_PARAM_SQNORMS: {"vjp_param_sqnorms"},
        gradflow.STATE_JACOBIAN: {"state_jacobian"},
        gradflow.PARAM_JACOBIAN_ACCUMULATE: {"param_jacobian_accumulate"},
    }
    expected = set().union(*(checked.get(c, set()) for c in model.capabilities))
    assert expected <= set(errors)
    assert max(errors.values()) < 1e-6


def test_check_model_rebuilds_a_float32_model_in_float64() -> None:
    model = gradflow.create_model("gru", dtype="float32", **SIZES)
    assert max(check_model(model, batch_sizes=(2,)).values()) < 1e-6


# -- the suite can fail: broken primitives are named --------------------------------------------
def _broken(base: type[gradflow.Model], method: str, fn) -> type[gradflow.Model]:
    return type(f"Broken{base.__name__}", (base,), {method: fn})


def _gru_cls() -> type[gradflow.Model]:
    return gradflow.get_registry().get("model", "gru").cls


def _lstm_cls() -> type[gradflow.Model]:
    return gradflow.get_registry().get("model", "lstm").cls


BREAKAGES = {
    # forgets the z ⊙ V term of the GRU's state Jacobian, on (B, n, K) tangents only
    "jvp_state (B, n, K)": (_gru_cls, "jvp_state", lambda self, th, c, v: (
        _gru_cls().jvp_state(self, th, c, v) - (c["z"][:, :, None] * v if v.ndim == 3 else 0))),
    # drops the c-part of the LSTM's cotangent in the parameter product
    "vjp (θ_rec part)": (_lstm_cls, "vjp", lambda self, th, c, u: (
        _lstm_cls().vjp(self, th, c, u)[0],
        _lstm_cls().vjp(self, th, c, u * self.xp.concat(
            [self.xp.ones_like(u[:, :5]), self.xp.zeros_like(u[:, 5:])], axis=1))[1])),
    # ignores the inverse metric
    "param_row_sqnorms (inv_metric)": (_gru_cls, "param_row_sqnorms",
                                       lambda self, th, c, inv_metric=None:
                                       _gru_cls().param_row_sqnorms(self, th, c)),
    # the recurrent step reads a readout weight
    "forward": (_gru_cls, "forward", lambda self, th, h, x: (
        lambda out: (out[0] + th[-1] * 1e-3, out[1]))(_gru_cls().forward(self, th, h, x))),
}


@pytest.mark.parametrize("primitive", list(BREAKAGES))
def test_check_model_names_a_broken_primitive(primitive: str) -> None:
    base, method, fn = BREAKAGES[primitive]
    cls = _broken(base(), method, fn)
    model = cls(cls.Options(**SIZES), gradflow.get_backend())
    with pytest.raises(AssertionError) as info:
        check_model(model)
    message = str(info.value)
    assert message.startswith(f"model {model.name!r}: {primitive}")
    if primitive != "forward":
        assert "relative error" in message


# -- equations, names, initialisation -----------------------------------------------------------
@pytest.mark.parametrize(("name", "shapes"), [
    ("gru", {"W_ih": (15, 3), "W_hh": (15, 5), "b_ih": (15,), "b_hh": (15,), "W_hy": (2, 5),
             "b_y": (2,)}),
    ("lstm", {"W_ih": (20, 3), "W_hh": (20, 5), "b_ih": (20,), "b_hh": (20,), "W_hy": (2, 5),
              "b_y": (2,)}),
])
def test_parameter_names_and_shapes(name: str, shapes: dict) -> None:
    model = gradflow.create_model(name, **SIZES)
    assert {s.name: s.shape for s in model.layout.specs.values()} == shapes
    assert model.layout.n_out == 2 * 5 + 2  # θ = [θ_rec | θ_out]
    assert model.n_state == (10 if name == "lstm" else 5)


@pytest.mark.parametrize("name", ["gru", "lstm"])
def test_initialisation_is_uniform_like_the_torch_cells(name: str) -> None:
    model = gradflow.create_model(name, n_in=3, n_hidden=16, n_out=2)
    theta = np.asarray(model.init_params(7))
    rec = theta[model.layout.rec]
    bound = 1 / 4.0
    assert np.all(np.abs(rec) <= bound) and np.abs(rec).max() > 0.95 * bound
    assert abs(rec.mean()) < 0.02 and abs(rec.std() - bound / np.sqrt(3)) < 0.01
    params = model.layout.unflatten(theta)
    assert np.all(params["b_y"] == 0) and np.all(np.abs(params["W_hy"]) <= bound)
    assert not np.array_equal(theta, np.asarray(model.init_params(8)))
    assert np.array_equal(theta, np.asarray(model.init_params(7)))


def _gru_reference(p: dict, h: np.ndarray, x: np.ndarray) -> np.ndarray:
    n = h.shape[1]
    gi, gh = x @ p["W_ih"].T + p["b_ih"], h @ p["W_hh"].T + p["b_hh"]
    sig = lambda a: 1 / (1 + np.exp(-a))  # noqa: E731
    r, z = sig(gi[:, :n] + gh[:, :n]), sig(gi[:, n:2 * n] + gh[:, n:2 * n])
    c = np.tanh(gi[:, 2 * n:] + r * gh[:, 2 * n:])
    return (1 - z) * c + z * h


def _lstm_reference(p: dict, s: np.ndarray, x: np.ndarray) -> np.ndarray:
    n = s.shape[1] // 2
    h, c = s[:, :n], s[:, n:]
    a = x @ p["W_ih"].T + p["b_ih"] + h @ p["W_hh"].T + p["b_hh"]
    sig = lambda a: 1 / (1 + np.exp(-a))  # noqa: E731
    i, f, g, o = sig(a[:, :n]), sig(a[:, n:2 * n]), np.tanh(a[:, 2 * n:3 * n]), sig(a[:, 3 * n:])
    c = f * c + i * g
    return np.concatenate([o * np.tanh(c), c], axis=1)


@pytest.mark.parametrize("name", ["gru", "lstm"])
def test_forward_matches_the_equations(name: str, backend64: gradflow.Backend) -> None:
    model = gradflow.create_model(name, backend64, **SIZES)
    theta = model.init_params(1)
    params = model.layout.unflatten(backend64.to_numpy(theta))
    rng = np.random.default_rng(0)
    h = rng.normal(size=(3, model.n_state))
    x = rng.normal(size=(3, 3))
    out, _ = model.forward(theta, backend64.asarray(h), backend64.asarray(x))
    ref = (_gru_reference if name == "gru" else _lstm_reference)(params, h, x)
    np.testing.assert_allclose(backend64.to_numpy(out), ref, rtol=1e-13, atol=1e-14)


def test_lstm_readout_sees_h_only() -> None:
    model = gradflow.create_model("lstm", **SIZES)
    theta = model.init_params(0)
    s = np.random.default_rng(0).normal(size=(2, 10))
    moved = s.copy()
    moved[:, 5:] += 1.0
    np.testing.assert_array_equal(model.readout(theta, s), model.readout(theta, moved))
    gh, _ = model.readout_vjp(theta, s, np.ones((2, 2)))
    assert np.all(np.asarray(gh)[:, 5:] == 0) and np.any(np.asarray(gh)[:, :5] != 0)


@pytest.mark.parametrize("name", ["gru", "lstm", "influence"])
def test_float32_runs_in_float32(name: str) -> None:
    model = gradflow.create_model(name, dtype="float32",
                                  **({} if name == "influence" else SIZES))
    theta = model.init_params(0)
    h, cache = model.forward(theta, model.initial_state(2), np.zeros((2, model.n_in), np.float32))
    assert theta.dtype == np.float32 and h.dtype == np.float32
    assert model.param_jacobian(theta, cache).dtype == np.float32


# -- PyTorch's cells with the same weights give the same numbers --------------------------------
@pytest.mark.skipif(not HAS_TORCH, reason="PyTorch is not installed (not a dependency)")
@pytest.mark.parametrize("name", ["gru", "lstm"])
def test_same_numbers_as_torch_cells(name: str) -> None:
    """Forward over T steps and the gradient of Σ_t ℓ_t (BPTT) equal torch's with autograd."""
    import torch

    T, B = 6, 3
    model = gradflow.create_model(name, **SIZES)
    theta = np.asarray(model.init_params(2)) * 2.0  # larger weights: saturating gates
    params = model.layout.unflatten(theta)
    cell = (torch.nn.GRUCell if name == "gru" else torch.nn.LSTMCell)(3, 5, dtype=torch.float64)
    with torch.no_grad():
        for ours, theirs in (("W_ih", "weight_ih"), ("W_hh", "weight_hh"), ("b_ih", "bias_ih"),
                             ("b_hh", "bias_hh")):
            getattr(cell, theirs).copy_(torch.from_numpy(params[ours].copy()))
    w_hy = torch.tensor(params["W_hy"], requires_grad=True)
    b_y = torch.tensor(params["b_y"], requires_grad=True)
    rng = np.random.default_rng(3)
    xs, ys = rng.normal(size=(T, B, 3)), rng.normal(size=(T, B, 2))

    h = torch.zeros(B, 5, dtype=torch.float64)
    c = torch.zeros(B, 5, dtype=torch.float64)
    s_ours = model.initial_state(B)
    total = torch.zeros((), dtype=torch.float64)
    for t in range(T):
        x = torch.from_numpy(xs[t])
        if name == "gru":
            h = cell(x, h)
            state = h
        else:
            h, c = cell(x, (h, c))
            state = torch.cat([h, c], dim=1)
        s_ours, _ = model.forward(theta, s_ours, xs[t])
        np.testing.assert_allclose(np.asarray(s_ours), state.detach().numpy(), rtol=1e-12,
                                   atol=1e-13)
        yhat = h @ w_hy.T + b_y
        total = total + 0.5 * ((yhat - torch.from_numpy(ys[t])) ** 2).sum() / B
    total.backward()
    grads = {"W_ih": cell.weight_ih.grad, "W_hh": cell.weight_hh.grad, "b_ih": cell.bias_ih.grad,
             "b_hh": cell.bias_hh.grad, "W_hy": w_hy.grad, "b_y": b_y.grad}
    ours = model.layout.unflatten(gradflow.bptt_gradients(model, theta, xs, ys).sum(axis=0))
    for key, grad in grads.items():
        np.testing.assert_allclose(ours[key], grad.numpy(), rtol=1e-10, atol=1e-13,
                                   err_msg=key)


# -- influence balancing --------------------------------------------------------------------------
def test_influence_definition() -> None:
    model = gradflow.create_model("influence")
    assert (model.n_state, model.layout.n_rec, model.layout.n_out, model.n_in) == (23, 1, 0, 0)
    assert np.asarray(model.init_params()).tolist() == [0.5]
    np.testing.assert_array_equal(model.initial_state(2), np.ones((2, 23)))
    _, g_out = model.readout_vjp(model.init_params(), model.initial_state(2), np.ones((2, 1)))
    assert g_out.shape == (0,)
    with pytest.raises(gradflow.PluginError, match="p"):
        gradflow.create_model("influence", n=5, p=5)


@pytest.mark.parametrize("theta", [0.5, -1 / 6, 2.0])
def test_influence_fixed_point_of_s1_is_minus_six_theta(theta: float,
                                                        backend64: gradflow.Backend) -> None:
    model = gradflow.create_model("influence", backend64)
    th = backend64.asarray(np.array([theta]))
    s = model.initial_state(1)
    x = backend64.asarray(np.zeros((1, 0)))
    for _ in range(400):  # A's eigenvalues are all ½: the error shrinks ≥ 2× per n steps
        s, _ = model.forward(th, s, x)
    assert backend64.to_float(model.readout(th, s)[0, 0]) == pytest.approx(-6 * theta, abs=1e-9)
    assert backend64.to_float(model.fixed_point(th)[0]) == pytest.approx(-6 * theta, rel=1e-12)


def _long_run_gradient(name: str, **options: int) -> float:
    """The θ-gradient estimate at θ = 0.5 once the system has settled (s¹ ≈ −3, target 1)."""
    model = gradflow.create_model("influence")
    T = 300
    est = gradflow.create_estimator(name, model, **options)
    rows = gradflow.frozen_gradients(model, est, model.init_params(), np.zeros((T, 1, 0)),
                                     np.ones((T, 1, 1)))
    return float(rows[T // 2:, 0].sum())


def test_influence_truncation_points_the_wrong_way() -> None:
    """RTRL sees the long-run sensitivity ∂s*¹/∂θ = −6: per step (s¹ − 1)(−6) = 24 at θ = ½;
    TBPTT with truncation 10 sees +Σ sensitivities of ≤ 10 steps and gets the opposite sign."""
    rtrl = _long_run_gradient("rtrl")
    assert rtrl == pytest.approx(150 * 24.0, rel=1e-6)
    assert _long_run_gradient("tbptt", truncation=10) < 0
    # the crossover of docs/architecture.md §4: backpropagating every loss through k steps is
    # wrong up to 40
    assert _long_run_gradient("tbptt", truncation=40, interval=1) < 0
    assert _long_run_gradient("tbptt", truncation=41, interval=1) > 0


def test_check_model_names_a_replica_that_is_not_its_own_run() -> None:
    """A model that declares replicas is called with θ (R, P): a forward step that lets one
    replica's state leak into the others fails the replica check, naming the primitive."""
    from gradflow_plugins.models.rnn import RNN

    class Leaky(RNN):
        name = "leaky-replicas"
        replicas = True

        def forward(self, theta, h, x):
            h_next, cache = super().forward(theta, h, x)
            if theta.ndim > 1:
                h_next = h_next + 1e-3 * self.xp.mean(h_next, axis=0)
            return h_next, cache

    model = Leaky(Leaky.Options(n_in=3, n_hidden=5, n_out=2), gradflow.get_backend())
    with pytest.raises(AssertionError, match=r"model 'leaky-replicas': forward with a replicated "
                       r"θ: replica 0 differs from the call on its own θ by \S+ \(tolerance "
                       r"1e-12\)"):
        check_model(model)
    report = check_model(small_model("rnn"))
    assert report["forward (replicas)"] == 0.0 and report["vjp_accumulate (scale)"] < 1e-6
