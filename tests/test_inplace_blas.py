"""The in-place rank-one update and axpy (``gradflow.add_outer``, ``gradflow.add_scaled``) and the
rank-one estimators' stored scale σ (issue 15, "Large n").

* both helpers against the dense formula on every backend (NumPy float64 and float32 take SciPy's
  BLAS, array-api-strict the bands), through views of longer vectors, and in place;
* the large-n path of ``rnn.vjp_accumulate`` (one ``ger`` per weight) equals the small one;
* σ: w̃ = σ w; a stream whose σ leaves its range is folded back (σ = 1, w̃ unchanged to rounding)
  and the other streams' numbers do not change by a bit; the estimator's estimates are those of
  the same run with σ folded at every step, to rounding.
"""

from __future__ import annotations

import numpy as np
import pytest

import gradflow
from gradflow.verification.trajectory import FrozenTrajectory
from tests.helpers import rel_err, small_model


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("alpha", [1.0, -0.25])
def test_add_outer_is_the_rank_one_update_in_place(backend_name: str, dtype: str,
                                                   alpha: float) -> None:
    be = gradflow.get_backend(backend_name, dtype=dtype)
    rng = np.random.default_rng(1)
    rows, width, offset = 37, 19, 5
    line = rng.standard_normal(offset + rows * width + 3)
    e, z = rng.standard_normal(rows), rng.standard_normal(width)
    buf = be.asarray(line.copy())
    mat = be.xp.reshape(buf[offset:offset + rows * width], (rows, width), copy=False)
    gradflow.add_outer(be.xp, mat, be.asarray(e), be.asarray(z), alpha)
    got = be.to_numpy(buf)
    want = line.copy()
    want[offset:offset + rows * width] += alpha * np.outer(e, z).ravel()
    tol = 1e-14 if dtype == "float64" else 1e-6
    np.testing.assert_allclose(got, want.astype(dtype), rtol=tol, atol=tol)
    np.testing.assert_array_equal(got[:offset], line[:offset].astype(dtype))  # untouched


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_add_scaled_is_axpy_in_place(backend_name: str, dtype: str) -> None:
    be = gradflow.get_backend(backend_name, dtype=dtype)
    rng = np.random.default_rng(2)
    size = 3 * gradflow.block_size(be.xp) + 7  # several blocks on the fallback
    x, y = rng.standard_normal(size), rng.standard_normal(size + 4)
    buf = be.asarray(y.copy())
    gradflow.add_scaled(be.xp, buf[:size], be.asarray(np.asarray(-0.5, dtype=dtype)),
                        be.asarray(x))
    got = be.to_numpy(buf)
    tol = 1e-14 if dtype == "float64" else 1e-6
    np.testing.assert_allclose(got[:size], (y[:size] - 0.5 * x).astype(dtype), rtol=tol,
                               atol=tol)
    np.testing.assert_array_equal(got[size:], y[size:].astype(dtype))


def test_large_vjp_accumulate_equals_the_small_path(backend_name: str) -> None:
    """Above TEMPORARY_BLOCK numbers rnn adds one rank-one update per weight per stream; the
    numbers are those of the one-operation-a-weight path below it (to rounding)."""
    be = gradflow.get_backend(backend_name)
    n = 368  # B · P_rec > TEMPORARY_BLOCK for B = 2
    model = small_model("rnn", be, n_hidden=n)
    assert 2 * model.layout.n_rec > gradflow.TEMPORARY_BLOCK
    rng = np.random.default_rng(3)
    theta = model.init_params(0)
    h = be.asarray(rng.standard_normal((2, n)) * 0.3)
    x = be.asarray(rng.standard_normal((2, model.options.n_in)))
    _, cache = model.forward(theta, h, x)
    u = be.asarray(rng.standard_normal((2, n)))
    acc0 = rng.standard_normal((2, model.layout.n_rec))
    scale = be.asarray(np.array([[0.5], [2.0]]))
    acc = be.asarray(acc0.copy())
    model.vjp_accumulate(theta, cache, u, acc, state=False, scale=scale)
    want = be.to_numpy(model.vjp(theta, cache, u)[1])[:, :model.layout.n_rec]
    want += acc0 * np.array([[0.5], [2.0]])
    assert rel_err(be.to_numpy(acc), want) < 1e-13


def _trajectory(batch: int, steps: int = 40) -> FrozenTrajectory:
    model = small_model("rnn", "numpy", n_hidden=6)
    rng = np.random.default_rng(5)
    inputs = rng.standard_normal((steps, batch, model.n_in))
    targets = rng.standard_normal((steps, batch, model.n_out))
    return FrozenTrajectory.of(model, model.init_params(0), inputs, targets, "mse")


@pytest.mark.parametrize("name", ["uoro", "nobacktrack", "kalman-nobacktrack"])
def test_stored_scale_gives_the_estimates_of_folding_every_step(name: str) -> None:
    """σ kept (NumPy above a cache block) or 1 with w scaled at every step (below it, and the
    other backends): the same estimates, to rounding."""
    traj = _trajectory(batch=2)
    lazy = gradflow.create_estimator(name, traj.model)
    lazy.lazy_scale_min = 0  # σ kept at this size too
    eager = gradflow.create_estimator(name, traj.model)
    got = np.stack([d for _, d in traj.directions(lazy, seed=3)[0]])
    want = np.stack([d for _, d in traj.directions(eager, seed=3)[0]])
    assert rel_err(got, want) < 1e-12
    scale = lazy.state.w_scale
    assert not np.all(scale == 1.0)  # σ was kept: the test compares two different paths


def test_a_scale_out_of_range_is_folded_for_its_stream_only() -> None:
    traj = _trajectory(batch=2)
    runs = []
    for mutate in (False, True):
        est = gradflow.create_estimator("uoro", traj.model)
        est.lazy_scale_min = 0
        est.start(2, seed=3)
        for t, _ in traj.run(est):
            if mutate and t == 19:  # w̃ = σ w unchanged, σ of stream 0 far below its range
                state = est.state_dict()
                state["array.w"][0, :] *= 2.0**30
                state["array.w_scale"][0, :] *= 2.0**-30
                est.load_state_dict(state)
            if mutate and t == 20:
                assert est.state.w_scale[0, 0] == 1.0  # folded at step 20
        runs.append(est)
    plain, folded = runs
    w_plain = plain.state.w * plain.state.w_scale
    w_folded = folded.state.w * folded.state.w_scale
    np.testing.assert_array_equal(folded.state.w[1], plain.state.w[1])  # stream 1: same bits
    np.testing.assert_array_equal(folded.state.w_scale[1], plain.state.w_scale[1])
    assert rel_err(w_folded[0], w_plain[0]) < 1e-12


def test_a_state_kept_with_a_scale_continues_where_the_scale_is_one() -> None:
    """A checkpoint of a run that kept σ, loaded where σ is not kept (a small P_rec here, a
    device backend in practice): σ is folded into w, and w̃ is the same."""
    traj = _trajectory(batch=2)
    kept = gradflow.create_estimator("uoro", traj.model)
    kept.lazy_scale_min = 0
    kept.start(2, seed=3)
    for _ in traj.run(kept):
        pass
    state = kept.state_dict()
    assert not np.all(state["array.w_scale"] == 1.0)
    plain = gradflow.create_estimator("uoro", traj.model)
    plain.load_state_dict(state)
    np.testing.assert_array_equal(plain.state.w_scale, 1.0)
    assert rel_err(plain.state.w, state["array.w"] * state["array.w_scale"]) < 1e-15
