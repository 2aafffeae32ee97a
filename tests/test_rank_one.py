"""UORO, NoBackTrack and Kalman-NoBackTrack: equations, state, resets, memory, robustness."""

from __future__ import annotations

import json
import math
from typing import Any

import array_api_compat.numpy as npx
import numpy as np
import pytest
from gradflow_plugins.estimators.rank_one import RankOneEstimator

import gradflow
from gradflow.verification.statistics import random_trajectory
from tests.helpers import registered, without

#: the registered members of the rank-one family (UORO, NoBackTrack, Kalman-NoBackTrack, and any
#: estimator built on the same base)
RANK_ONE = [name for name in registered("estimator")
            if issubclass(gradflow.get_registry().get("estimator", name).cls, RankOneEstimator)]


def _records(model: gradflow.Model, theta: Any, inputs: np.ndarray,
             targets: np.ndarray) -> list[gradflow.StepRecord]:
    be, loss = model.backend, gradflow.get_loss("mse")
    theta = be.asarray(theta)
    h = model.initial_state(inputs.shape[1])
    out = []
    for t in range(inputs.shape[0]):
        h, cache = model.forward(theta, h, be.asarray(inputs[t]))
        _, dy = loss(model.readout(theta, h), be.asarray(targets[t]))
        delta, g_out = model.readout_vjp(theta, h, dy)
        out.append(gradflow.StepRecord(theta=theta, cache=cache, delta=delta, grad_out=g_out))
    return out


def _problem(backend: Any = "numpy", B: int = 3, T: int = 12, scale: float = 2.0,
             n: int = 6, dtype: str = "float64") -> tuple[gradflow.Model, list]:
    model = gradflow.create_model("rnn", backend=backend, dtype=dtype, n_in=3, n_hidden=n,
                                  n_out=2)
    theta, x, y = random_trajectory(model, T, seed=4)
    rng = np.random.default_rng(4)
    inputs = np.concatenate([x, rng.normal(size=(T, B - 1, 3))], axis=1)
    targets = np.concatenate([y, rng.normal(size=(T, B - 1, 2))], axis=1)
    return model, _records(model, model.backend.to_numpy(theta) * scale, inputs, targets)


# -- the equations of docs/architecture.md §6, written densely (F_t from param_jacobian) --------
class _Dense:
    """The three estimators with dense J_t and F_t, per stream, in NumPy."""

    def __init__(self, model: gradflow.Model, name: str, seed: int, batch: int,
                 eps: float = 1e-7, t0: float = 100.0, lam: float = 1e-3, beta: float = 1e-3,
                 jh0: float = 1e-2, kappa: float = 1.0) -> None:
        self.model, self.name, self.eps = model, name, eps
        self.t0, self.lam, self.beta, self.kappa = t0, lam, beta, kappa
        self.rng = gradflow.CounterRNG(npx, seed)
        n, p = model.n_state, model.layout.n_rec
        self.v, self.w = np.zeros((batch, n)), np.zeros((batch, p))
        self.Jh, self.Jt, self.t = np.full((batch, n), jh0), np.zeros(model.layout.size), 0

    def step(self, rec: gradflow.StepRecord) -> np.ndarray:
        m, eps = self.model, self.eps
        B, n = self.v.shape
        F = np.asarray(m.param_jacobian(rec.theta, rec.cache))  # (B, n, P_rec)
        J = np.asarray(m.jvp_state(rec.theta, rec.cache, np.broadcast_to(np.eye(n), (B, n, n))))
        delta = np.asarray(rec.delta)
        vp = np.einsum("bij,bj->bi", J, self.v)
        if self.name == "kalman-nobacktrack":
            self.Jh = (1 - self.beta) * self.Jh + self.beta * (B * delta) ** 2
            inv = 1.0 / (self.Jt[: m.layout.n_rec] + self.lam)
        else:
            inv = np.ones(m.layout.n_rec)
        hw = np.sqrt(np.sum(self.w ** 2 * inv, axis=1))
        if self.name == "kalman-nobacktrack":  # M_h = J_h + κ mean_k J_h, per stream
            unit = self.Jh + self.kappa * np.mean(self.Jh, axis=1, keepdims=True)
        else:
            unit = np.ones((B, n))
        hv = np.sqrt(np.sum(unit * vp ** 2, axis=1))
        rho0 = np.sqrt((hw + eps) / (hv + eps))[:, None]
        signs = np.asarray(self.rng.signs((B, n), np.float64))
        if self.name == "uoro":
            dtheta = np.einsum("bi,bij->bj", signs, F)
            rho1 = np.sqrt((np.linalg.norm(dtheta, axis=1) + eps) / (math.sqrt(n) + eps))[:, None]
            a, b = rho1 * signs, dtheta / rho1
        else:
            rows = np.sqrt(np.sum(F ** 2 * inv, axis=2))
            rho = np.sqrt((rows + eps) / (np.sqrt(unit) + eps))
            a, b = signs * rho, np.einsum("bi,bij->bj", signs / rho, F)
        self.v, self.w = rho0 * vp + a, self.w / rho0 + b
        g = np.concatenate([np.einsum("b,bj->j", np.sum(delta * self.v, axis=1), self.w),
                            np.asarray(rec.grad_out)])
        if self.name != "kalman-nobacktrack":
            return g
        self.t += 1
        gamma = 1.0 / (self.t + self.t0)
        self.Jt = (1 - gamma) * self.Jt + gamma * g ** 2
        return g / (self.Jt + self.lam)


@pytest.mark.parametrize("name", RANK_ONE)
def test_equations_as_in_the_design(name: str) -> None:
    """The O(P) implementation gives the numbers of the dense equations (same signs)."""
    model, records = _problem()
    est = gradflow.create_estimator(name, model)
    est.start(3, seed=11)
    dense = _Dense(model, name, seed=11, batch=3)
    for t, rec in enumerate(records):
        got, want = np.asarray(est.step(rec)), dense.step(rec)
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12, err_msg=f"step {t}")
    np.testing.assert_allclose(np.asarray(est.state.v), dense.v, rtol=1e-10, atol=1e-12)
    w_tilde = np.asarray(est.state.w * est.state.w_scale)  # w̃ = σ w
    np.testing.assert_allclose(w_tilde, dense.w, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", RANK_ONE)
def test_backends_give_the_same_numbers(backend64: gradflow.Backend, name: str) -> None:
    """Same seed, same signs on every backend (the counter-based generator)."""
    ref_model, ref_records = _problem("numpy")
    model, records = _problem(backend64)
    ref, est = (gradflow.create_estimator(name, m) for m in (ref_model, model))
    ref.start(3, seed=5)
    est.start(3, seed=5)
    for rec_ref, rec in zip(ref_records, records, strict=True):
        a = np.asarray(ref.step(rec_ref))
        b = backend64.to_numpy(est.step(rec))
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-14)


def _stepped(backend: Any, name: str, seed: int, steps: int) -> tuple[Any, list, Any]:
    """The model, the records and the estimator ``name`` after ``steps`` steps (3 streams)."""
    model, records = _problem(backend)
    est = gradflow.create_estimator(name, model)
    est.start(3, seed=seed)
    for rec in records[:steps]:
        est.step(rec)
    return model, records, est


@pytest.mark.parametrize("name", RANK_ONE)
def test_state_dict_round_trip_is_bit_for_bit(backend64: gradflow.Backend, name: str) -> None:
    model, records, est = _stepped(backend64, name, seed=9, steps=5)
    state = est.state_dict()
    # what a checkpoint keeps: arrays on the host, scalars through JSON
    arrays = {k: np.array(backend64.to_numpy(v)) for k, v in state.items()
              if k.startswith("array.")}
    scalars = json.loads(json.dumps({k: v for k, v in state.items() if k not in arrays}))
    resumed = gradflow.create_estimator(name, model)
    resumed.load_state_dict({**scalars, **arrays})
    for rec in records[5:]:
        a = backend64.to_numpy(est.step(rec))
        b = backend64.to_numpy(resumed.step(rec))
        assert np.array_equal(a, b)
    # and the next signs come from the restored generator, not a fresh one
    fresh = gradflow.create_estimator(name, model)
    fresh.load_state_dict({**scalars, **arrays, "rng.counter": 0})
    assert not np.array_equal(backend64.to_numpy(fresh.step(records[5])),
                              backend64.to_numpy(resumed.step(records[5])))


@pytest.mark.parametrize("name", RANK_ONE)
def test_reset_zeroes_only_the_masked_streams(backend64: gradflow.Backend, name: str) -> None:
    _, records, est = _stepped(backend64, name, seed=2, steps=4)
    before = {k: backend64.to_numpy(v).copy() for k, v in vars(est.state).items()}
    est.reset(backend64.asarray(np.array([True, False, True])))
    after = {k: backend64.to_numpy(v) for k, v in vars(est.state).items()}
    for key in ("v", "w"):
        assert np.all(after[key][[0, 2]] == 0) and np.any(before[key][[0, 2]] != 0)
        assert np.array_equal(after[key][1], before[key][1])
    for key in ("J_h", "J_theta"):  # the filter's statistics are not per-sequence memory
        if key in before:
            assert np.array_equal(after[key], before[key])
    # a reset stream then behaves like a fresh start: its first estimate uses F_t alone
    est.step(records[4])
    assert np.all(np.isfinite(backend64.to_numpy(est.state.w)))


@pytest.mark.parametrize("name", RANK_ONE)
def test_state_is_o_of_n_plus_p_per_stream(name: str) -> None:
    B = 4
    model, records = _problem(B=B, n=10)
    est = gradflow.create_estimator(name, model)
    est.start(B, seed=0)
    for rec in records[:3]:
        est.step(rec)
    floats = sum(int(np.prod(np.shape(v))) for k, v in est.state_dict().items()
                 if k.startswith("array."))
    n, p_rec, p = model.n_state, model.layout.n_rec, model.layout.size
    bound = 4 * (n + p) if name == "kalman-nobacktrack" else 2 * (n + p_rec)
    assert floats / B <= bound
    assert floats / B < n * p_rec  # far from RTRL's n × P_rec
    assert all(np.ndim(v) <= 2 and (np.ndim(v) < 2 or np.shape(v)[0] == B)
               for k, v in est.state_dict().items() if k.startswith("array."))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", RANK_ONE)
def test_no_nan_with_saturated_units_or_zero_state(name: str, dtype: str) -> None:
    """θ × 300 saturates every unit (F_t ≈ 0, J_t ≈ 0); zero inputs and targets keep the state
    and δ at zero: the ρ's must stay finite."""
    model, records = _problem(scale=300.0, dtype=dtype, T=30)
    est = gradflow.create_estimator(name, model)
    est.start(3, seed=0)
    for rec in records:
        assert np.all(np.isfinite(np.asarray(est.step(rec))))
    assert all(np.all(np.isfinite(np.asarray(v))) for v in vars(est.state).values())
    zero = gradflow.create_model("rnn", dtype=dtype, n_in=3, n_hidden=6, n_out=2)
    theta = zero.init_params(0)
    recs = _records(zero, zero.backend.to_numpy(theta), np.zeros((30, 2, 3)),
                    np.zeros((30, 2, 2)))
    est = gradflow.create_estimator(name, zero)
    est.start(2, seed=0)
    for rec in recs:
        assert np.all(np.isfinite(np.asarray(est.step(rec))))
    assert all(np.all(np.isfinite(np.asarray(v))) for v in vars(est.state).values())


def test_kalman_returns_the_preconditioned_step_and_frozen_gradients_the_raw_one() -> None:
    model, records = _problem(B=1)
    theta = records[0].theta
    inputs = np.stack([np.asarray(r.cache["x"]) for r in records])
    rng = np.random.default_rng(4)
    targets = rng.normal(size=(len(records), 1, 2))
    est = gradflow.create_estimator("kalman-nobacktrack", model)
    raw = gradflow.frozen_gradients(model, est, theta, inputs, targets, seed=3)
    assert est.precondition is True  # restored
    pre = gradflow.frozen_gradients(model, est, theta, inputs, targets, seed=3,
                                    precondition=True)
    # replay the filter on the raw estimates: J_θ from 0, γ_t = 1/(t + 100), λ = 1e-3
    J = np.zeros(model.layout.size)
    for t in range(len(records)):
        gamma = 1.0 / (t + 1 + 100.0)
        J = (1 - gamma) * J + gamma * raw[t] ** 2
        np.testing.assert_allclose(pre[t], raw[t] / (J + 1e-3), rtol=1e-12)
    np.testing.assert_allclose(np.asarray(est.state.J_theta), J, rtol=1e-12)
    assert est.state.t == len(records)
    # a constant γ instead of the 1/(t + t0) schedule
    const = gradflow.create_estimator("kalman-nobacktrack", model, gamma=0.1)
    raw_c = gradflow.frozen_gradients(model, const, theta, inputs, targets, seed=3)
    J = np.zeros(model.layout.size)
    for t in range(len(records)):
        J = 0.9 * J + 0.1 * raw_c[t] ** 2
    np.testing.assert_allclose(np.asarray(const.state.J_theta), J, rtol=1e-12)


def test_options_defaults_and_validation() -> None:
    reg = gradflow.get_registry()
    k = reg.get("estimator", "kalman-nobacktrack").options()
    assert (k.eps, k.t0, k.gamma, k.damping, k.beta, k.jh_init) == (1e-7, 100.0, None, 1e-3,
                                                                    1e-3, 1e-2)
    assert reg.get("estimator", "uoro").options().eps == 1e-7
    assert reg.get("estimator", "nobacktrack").options().eps == 1e-7
    for name in RANK_ONE:
        info = reg.get("estimator", name)
        assert info.cls.stochastic
        assert all(f.description for f in info.options.model_fields.values())
    model = gradflow.create_model("rnn", n_hidden=4)
    with pytest.raises(gradflow.PluginError, match="unknown option"):
        gradflow.create_estimator("uoro", model, epsilon=1e-3)
    with pytest.raises(gradflow.PluginError, match="eps"):
        gradflow.create_estimator("nobacktrack", model, eps=-1.0)
    with pytest.raises(gradflow.PluginError, match="gamma"):
        gradflow.create_estimator("kalman-nobacktrack", model, gamma=2.0)


def test_capabilities() -> None:
    model = without(gradflow.create_model("rnn", n_hidden=4), gradflow.PARAM_ROW_SQNORMS,
                    gradflow.PARAM_JACOBIAN)
    gradflow.create_estimator("uoro", model)  # UORO needs only a JVP and a VJP
    for name in ("nobacktrack", "kalman-nobacktrack"):
        with pytest.raises(gradflow.CapabilityError, match="param_row_sqnorms"):
            gradflow.create_estimator(name, model)


def test_no_dense_parameter_jacobian_is_ever_formed(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("param_jacobian called")

    model, records = _problem()
    monkeypatch.setattr(model, "param_jacobian", forbidden)
    for name in RANK_ONE:
        est = gradflow.create_estimator(name, model)
        est.start(3, seed=0)
        for rec in records:
            est.step(rec)


def test_stream_estimates_sum_to_the_direction() -> None:
    model, records = _problem()
    for name in ("uoro", "nobacktrack"):
        est = gradflow.create_estimator(name, model)
        est.start(3, seed=1)
        assert est.stream_estimates() is None
        for rec in records:
            d = np.asarray(est.step(rec))
            parts = np.asarray(est.stream_estimates())
            assert parts.shape == (3, model.layout.n_rec)
            np.testing.assert_allclose(parts.sum(axis=0), d[: model.layout.n_rec], rtol=1e-12)
    kal = gradflow.create_estimator("kalman-nobacktrack", model)
    kal.start(3)
    kal.step(records[0])
    assert kal.stream_estimates() is None  # its streams share the filter
