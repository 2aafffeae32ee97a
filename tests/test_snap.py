"""SnAp-n (``snap``) and the ``rnn``'s fixed sparse W_hh (option ``density``).

SnAp-1 equals BPTT where the recurrence is element-wise (diagonal W_hh, W_hh gate blocks), SnAp-2
equals RTRL on a dense network, both equal their defining formula — RTRL with G masked to the
pattern after every step, written out densely here — on a sparse rnn and at generic θ, and on a
model without units (``influence``: one unit) SnAp is RTRL. The sparse rnn passes the model checks,
RTRL equals BPTT on it, and density = 1 is the dense model bit for bit.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from gradflow_plugins.estimators import snap as snap_module
from gradflow_plugins.estimators.snap import SnAp, pattern_rows
from gradflow_plugins.models.rnn import RNN, recurrent_mask

import gradflow
from gradflow.testing import check_estimator, check_model
from tests.helpers import rel_err, without

SIZES = {"n_in": 3, "n_hidden": 6, "n_out": 2}


def _model(name: str, backend: str = "numpy", **options: Any) -> gradflow.Model:
    return gradflow.create_model(name, backend, **({} if name == "influence" else SIZES),
                                 **options)


def _diagonal_theta(model: gradflow.Model) -> np.ndarray:
    """θ = init_params(0) with every n × n block of W_hh made diagonal (the gate blocks of the
    gru and the lstm too): then J_t is block-diagonal over the units."""
    theta = np.array(model.backend.to_numpy(model.init_params(0)), dtype=np.float64)
    spec = model.layout.specs["W_hh"]
    n = spec.shape[1]
    w = theta[spec.slice].reshape(-1, n, n) * np.eye(n)[None, :, :]
    theta[spec.slice] = w.reshape(-1)
    return theta


def masked_rtrl(order: int) -> Any:
    """The defining formula of SnAp-n, densely: G_t = (J_t G_{t−1} + F_t) ⊙ Ω_n with Ω_1 the
    units' pattern of F and Ω_2 = Ω_1 ∪ pattern(J) Ω_1; g_t = [Σ_b δ_bᵀ G_b, ∂ℓ/∂θ_out]. G of a
    stream that starts a new sequence goes back to 0."""

    def expect(traj: Any) -> dict[int, np.ndarray]:
        model, be = traj.model, traj.model.backend
        n, p = model.n_state, model.layout.n_rec
        units = model.units()
        unit_of = units.param_unit()
        omega = np.zeros((n, p), dtype=bool)
        for c in range(units.size):
            omega[units.coords[unit_of, c], np.arange(p)] = True
        if order == 2:
            pattern = np.asarray(model.jacobian_pattern(), dtype=int)
            omega |= (pattern @ omega.astype(int)) > 0
        G = np.zeros((traj.batch, n, p))
        out = {}
        for t, step in traj.run():
            if t in traj.reset_steps:
                G[be.to_numpy(traj.resets[t])] = 0.0
            record = step.record
            J = be.to_numpy(model.state_jacobian(traj.theta, record.cache))
            F = be.to_numpy(model.param_jacobian(traj.theta, record.cache))
            G = (J @ G + F) * omega
            delta = be.to_numpy(record.delta)
            out[t] = np.concatenate([np.einsum("bk,bkj->j", delta, G),
                                     be.to_numpy(record.grad_out)])
        return out

    return expect


# -- exact limits --------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "options"), [("rnn", {}), ("rnn", {"alpha": 0.7}), ("gru", {}),
                                               ("lstm", {})])
@pytest.mark.parametrize("lazy", [True, False])
def test_snap1_equals_bptt_with_diagonal_recurrence(name: str, options: dict, lazy: bool,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The issue's exactness: SnAp-1 = BPTT (≤ 1e-9 relative) when W_hh (each gate block) is
    diagonal — J_t is then block-diagonal over the units and nothing leaves the pattern."""
    monkeypatch.setattr(SnAp, "lazy_scale", lazy)
    model = _model(name, **options)
    report = check_estimator("snap", model, theta=_diagonal_theta(model), steps=20, kind="exact")
    assert report["max_rel_error"] < 1e-9


def test_snap1_is_an_approximation_in_general() -> None:
    with pytest.raises(AssertionError, match=r"'snap' on model 'rnn': check 'matches_reference'"
                                             r": step 1 "):
        check_estimator("snap", _model("rnn"), steps=12, kind="exact")


def test_snap2_equals_rtrl_on_a_dense_rnn() -> None:
    model = _model("rnn")
    report = check_estimator("snap", model, options={"n": 2}, steps=20, kind="exact")
    assert report["max_rel_error"] < 1e-9
    est = gradflow.create_estimator("snap", model, n=2)
    assert est.n_rows == model.n_state  # dense J: every coordinate is reached in two steps
    rng = np.random.default_rng(3)
    theta = model.init_params(1)
    inputs, targets = rng.normal(size=(15, 2, 3)), rng.normal(size=(15, 2, 2))
    snap2 = gradflow.frozen_gradients(model, est, theta, inputs, targets)
    rtrl = gradflow.frozen_gradients(model, gradflow.create_estimator("rtrl", model), theta,
                                     inputs, targets)
    assert rel_err(snap2, rtrl) < 1e-12


@pytest.mark.parametrize("order", [1, 2])
def test_snap_on_influence_is_rtrl(order: int) -> None:
    """``influence`` declares no units: one unit holds everything, and SnAp is RTRL."""
    model = _model("influence")
    est = gradflow.create_estimator("snap", model, n=order)
    assert est.n_rows == model.n_state and est.mode == "full"
    report = check_estimator("snap", model, options={"n": order}, steps=20, kind="exact")
    assert report["max_rel_error"] < 1e-9


# -- the defining formula ------------------------------------------------------------------------
@pytest.mark.parametrize("order", [1, 2])
@pytest.mark.parametrize("alpha", [1.0, 0.6])
def test_snap_follows_its_definition_on_a_sparse_rnn(order: int, alpha: float) -> None:
    model = _model("rnn", density=0.3, alpha=alpha)
    report = check_estimator("snap", model, options={"n": order}, steps=15, batch=3,
                             expect=masked_rtrl(order), rtol=1e-12)
    assert report["checked"] and report["max_rel_error"] < 1e-12
    est = gradflow.create_estimator("snap", model, n=order)
    if order == 2:  # cheaper than RTRL: fewer rows than coordinates
        assert 1 < est.n_rows < model.n_state


@pytest.mark.parametrize(("name", "order"), [("rnn", 1), ("gru", 1), ("gru", 2), ("lstm", 1),
                                              ("lstm", 2)])
def test_snap_follows_its_definition_at_a_generic_theta(name: str, order: int) -> None:
    report = check_estimator("snap", _model(name), options={"n": order}, steps=12,
                             expect=masked_rtrl(order), rtol=1e-12)
    assert report["checked"] and report["max_rel_error"] < 1e-12


def test_the_lazy_scale_folds_and_matches_the_direct_update(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """G = σ ⊙ Ĝ with σ folded back into Ĝ when it leaves [2⁻ᴿ, 2ᴿ]: with R = 3 some unit folds
    at most steps, and with a zero diagonal (J_t = 0 on the units, σ = 0 at every step) every
    unit folds at every step; the directions equal the direct update's."""
    monkeypatch.setitem(snap_module.FOLD_RANGE, "float64", 3)
    rng = np.random.default_rng(0)
    inputs, targets = rng.normal(size=(25, 3, 3)), rng.normal(size=(25, 3, 2))
    resets = np.zeros((25, 3), dtype=bool)
    resets[11, 1] = True
    model = _model("rnn")
    zero_diag = np.array(model.backend.to_numpy(model.init_params(0)))
    zero_diag[model.layout.specs["W_hh"].slice] *= 1.0 - np.eye(6).reshape(-1)
    for theta in (model.init_params(0), zero_diag):
        rows = {}
        for lazy in (True, False):
            monkeypatch.setattr(SnAp, "lazy_scale", lazy)
            est = gradflow.create_estimator("snap", model)
            assert est.lazy == lazy
            rows[lazy] = gradflow.frozen_gradients(model, est, theta, inputs, targets,
                                                   resets=resets)
        assert rel_err(rows[True], rows[False]) < 1e-12


# -- the structure -------------------------------------------------------------------------------
def test_pattern_rows_and_modes() -> None:
    coords = np.array([[0], [1], [2]])
    pattern = np.array([[1, 0, 1], [0, 1, 0], [0, 1, 0]], dtype=bool)  # J[k, c]
    rows, valid = pattern_rows(coords, pattern, 2)
    # unit 0 reaches itself; unit 1 reaches 1 and 2; unit 2 reaches 0 (its own first)
    assert rows.tolist() == [[0, 0], [1, 2], [2, 0]]
    assert valid.tolist() == [[True, False], [True, True], [True, True]]
    rows, valid = pattern_rows(coords, pattern, 1)
    assert rows.tolist() == coords.tolist() and valid.all()
    expected = {"rnn": (1, "scale", True), "gru": (1, "scale", True),
                "lstm": (2, "elementwise", False), "influence": (23, "full", False)}
    for name, (K, mode, lazy) in expected.items():
        est = gradflow.create_estimator("snap", _model(name))
        assert (est.n_rows, est.mode, est.lazy) == (K, mode, lazy), name
        est.start(2)
        assert tuple(est.state.G.shape) == (2, K, est.layout.n_rec)


@pytest.mark.parametrize("density", [1.0, 0.3])
def test_snap2_without_rtrls_primitives(density: float) -> None:
    """Without ``param_jacobian_accumulate`` a dense pattern takes the per-unit products (K = n,
    own coordinates first), and without ``state_jacobian`` J_t comes from ``jvp_state`` on the
    identity: the same numbers."""
    model = _model("rnn", density=density)
    rng = np.random.default_rng(4)
    inputs, targets = rng.normal(size=(12, 2, 3)), rng.normal(size=(12, 2, 2))
    theta = model.init_params(0)
    est = gradflow.create_estimator("snap", model, n=2)
    want = gradflow.frozen_gradients(model, est, theta, inputs, targets)
    for lacks in ([gradflow.PARAM_JACOBIAN_ACCUMULATE], [gradflow.STATE_JACOBIAN]):
        bare = without(model, *lacks)
        other = gradflow.create_estimator("snap", bare, n=2)
        assert other.mode == "matmul"
        got = gradflow.frozen_gradients(bare, other, theta, inputs, targets)
        assert rel_err(got, want) < 1e-12


def test_snap2_needs_the_dense_jacobian() -> None:
    bare = without(_model("rnn"), gradflow.STATE_JACOBIAN, gradflow.JVP_STATE)
    gradflow.create_estimator("snap", bare)  # n = 1 takes the blocks of J_t only
    with pytest.raises(gradflow.CapabilityError,
                       match=r"neither 'state_jacobian' nor 'jvp_state'"):
        gradflow.create_estimator("snap", bare, n=2)
    with pytest.raises(gradflow.PluginError, match=r"'snap'"):
        gradflow.create_estimator("snap", _model("rnn"), n=3)


# -- the sparse rnn ------------------------------------------------------------------------------
@pytest.mark.parametrize("alpha", [1.0, 0.6])
def test_sparse_rnn_passes_the_model_checks(alpha: float) -> None:
    model = _model("rnn", density=0.3, alpha=alpha)
    errors = check_model(model)
    assert max(errors.values()) < 1e-6
    pattern = model.jacobian_pattern()
    mask = model.mask_np
    assert np.array_equal(pattern, mask | np.eye(6, dtype=bool) if alpha < 1 else mask)
    assert not model.has(gradflow.PARAM_KRON_FACTORS)
    with pytest.raises(gradflow.CapabilityError, match="param_kron_factors"):
        model.param_kron_factors(model.init_params(0), {})


def test_rtrl_equals_bptt_on_a_sparse_rnn() -> None:
    report = check_estimator("rtrl", _model("rnn", density=0.3), steps=20, kind="exact")
    assert report["max_rel_error"] < 1e-9


def test_entries_outside_the_mask_are_zero_and_stay_zero() -> None:
    model = _model("rnn", density=0.3)
    outside = ~model.mask_np.reshape(-1)
    theta = np.asarray(model.init_params(4))
    w = theta[model.layout.specs["W_hh"].slice]
    assert np.all(w[outside] == 0.0) and not np.any(np.signbit(w[outside]))
    assert np.all(w[~outside] != 0.0)
    rng = np.random.default_rng(1)
    h, x = rng.normal(size=(3, 6)), rng.normal(size=(3, 3))
    _, cache = model.forward(theta, h, x)
    u = rng.normal(size=(3, 6))
    hh = model.layout.specs["W_hh"].slice
    per_stream = np.zeros((3, model.layout.n_rec))
    model.vjp_accumulate(theta, cache, u, per_stream)
    summed = np.zeros(model.layout.n_rec)
    model.vjp_accumulate(theta, cache, u, summed, state=False)
    dense_f = np.zeros((3, 6, model.layout.n_rec))
    model.param_jacobian_accumulate(theta, cache, dense_f)
    for grads in (model.vjp(theta, cache, u)[1], per_stream, summed,
                  model.param_jacobian(theta, cache), dense_f):
        assert np.all(grads[..., hh][..., outside] == 0.0)
    # the forward step ignores them
    moved = theta.copy()
    moved[np.arange(hh.start, hh.stop)[outside]] = 1.0
    assert np.array_equal(model.forward(moved, h, x)[0], model.forward(theta, h, x)[0])


def test_the_mask_is_deterministic() -> None:
    mask = _model("rnn", density=0.3).mask_np
    assert mask.sum() == round(0.3 * 36)
    assert np.array_equal(mask, _model("rnn", density=0.3).mask_np)
    assert np.array_equal(mask, _model("rnn", "array_api_strict", density=0.3).mask_np)
    assert np.array_equal(mask, recurrent_mask(6, 0.3, 0))
    assert not np.array_equal(mask, _model("rnn", density=0.3, mask_seed=1).mask_np)
    # the run's seed does not move it: θ from any seed is zero outside the same mask
    model = _model("rnn", density=0.3)
    hh = model.layout.specs["W_hh"].slice
    for seed in (0, 1, 7):
        w = np.asarray(model.init_params(seed))[hh].reshape(6, 6)
        assert np.array_equal(w != 0.0, mask)
    assert _model("rnn", density=1e-6).mask_np.sum() == 1  # at least one entry


def test_density_one_is_the_dense_model_bit_for_bit() -> None:
    dense, same = _model("rnn", alpha=0.8), _model("rnn", alpha=0.8, density=1.0)
    assert type(dense) is RNN and type(same) is RNN and same.mask_np is None
    assert same.has(gradflow.PARAM_KRON_FACTORS)
    rng = np.random.default_rng(2)
    theta = dense.init_params(5)
    assert np.array_equal(theta, same.init_params(5))
    h, x, u = rng.normal(size=(3, 6)), rng.normal(size=(3, 3)), rng.normal(size=(3, 6))
    (h1, c1), (h2, c2) = dense.forward(theta, h, x), same.forward(theta, h, x)
    assert np.array_equal(h1, h2)
    assert all(np.array_equal(c1[k], c2[k]) for k in c1)
    for name, args in [("jvp_state", (u,)), ("state_jacobian", ()), ("param_jacobian", ()),
                       ("param_row_sqnorms", ()), ("vjp_param_sqnorms", (u,)),
                       ("state_jacobian_blocks", ())]:
        a, b = getattr(dense, name)(theta, c1, *args), getattr(same, name)(theta, c2, *args)
        assert np.array_equal(a, b), name
    for a, b in zip(dense.vjp(theta, c1, u), same.vjp(theta, c2, u), strict=True):
        assert np.array_equal(a, b)
    assert np.array_equal(dense.jacobian_pattern(), same.jacobian_pattern())
    for shape in [(3, dense.layout.n_rec), (dense.layout.n_rec,)]:
        a, b = np.ones(shape), np.ones(shape)
        dense.vjp_accumulate(theta, c1, u, a)
        same.vjp_accumulate(theta, c2, u, b)
        assert np.array_equal(a, b)
