"""RTRL's structured step and what it is built from (issue 15, "RTRL at the BLAS bound").

* the in-place helpers of ``gradflow.contracts.inplace`` against dense references, on NumPy and
  array-api-strict, through views of larger buffers;
* the conformance suite checks the new primitives ``state_jacobian`` and
  ``param_jacobian_accumulate`` (the finite-difference comparison itself runs for every model in
  tests/test_models.py) and names a broken one;
* RTRL takes the structured step when the model has ``state_jacobian``,
  ``param_jacobian_accumulate`` and ``vjp``, and its directions equal those of the generic step
  (``jvp_state`` + ``param_jacobian``) and per-step BPTT, with resets, on every built-in model;
* the structured step allocates nothing of the size of G and, in steady state, causes no page
  faults; a snapshot taken from it continues bit for bit.
"""

from __future__ import annotations

import resource
import tracemalloc

import numpy as np
import pytest

import gradflow
from gradflow.testing import check_model
from tests.helpers import rel_err, small_model, without

MODELS = ["rnn", "gru", "lstm", "influence"]


def _host(backend: gradflow.Backend, x) -> np.ndarray:
    return backend.to_numpy(x)


# -- the in-place helpers --------------------------------------------------------------------------
@pytest.mark.parametrize(("rows", "width", "start"), [(5, 1, 0), (5, 3, 4), (1, 2, 7), (4, 6, 0)])
def test_add_block_diagonal_touches_only_the_blocks(backend64: gradflow.Backend, rows: int,
                                                    width: int, start: int) -> None:
    """acc[b, k, start + k·w + j] += values[b, k, j] on the first R rows of a (B, R + 1, P)
    buffer; every other entry, and the extra row, stay as they were."""
    B, P = 2, start + rows * width + 3
    rng = np.random.default_rng(rows * 10 + width)
    buf0 = rng.standard_normal((B, rows + 1, P))
    values = rng.standard_normal((B, rows, width))
    want = buf0.copy()
    for k in range(rows):
        want[:, k, start + k * width:start + (k + 1) * width] += values[:, k, :]
    xp = backend64.xp
    buf = backend64.asarray(buf0.copy())
    gradflow.add_block_diagonal(xp, buf[:, :rows, :], start, backend64.asarray(values))
    np.testing.assert_array_equal(_host(backend64, buf), want)


def test_add_block_diagonal_refuses_a_block_that_does_not_fit() -> None:
    acc = np.zeros((1, 3, 8))
    with pytest.raises(ValueError, match="does not fit in 8 columns"):
        gradflow.add_block_diagonal(np, acc, 3, np.ones((1, 3, 2)))


@pytest.mark.parametrize("gates", [1, 3])
@pytest.mark.parametrize("bias", [False, True])
def test_add_row_outer_is_the_jacobian_of_stacked_layers(backend64: gradflow.Backend,
                                                         gates: int, bias: bool) -> None:
    """For a = W z (+ b), W of shape (G·R, w) at column ``start``: row k of the Jacobian of
    h_k = Σ_g c_{g,k} a_{g,k} with respect to vec(W) (or b) is c_{g,k} z on row g·R + k."""
    B, R, w, start = 2, 4, 3, 5
    width = 1 if bias else w
    P = start + gates * R * width + 2
    rng = np.random.default_rng(gates)
    coeff = rng.standard_normal((B, gates * R))
    z = rng.standard_normal((B, w))
    acc0 = rng.standard_normal((B, R, P))
    want = acc0.copy()
    for g in range(gates):
        for k in range(R):
            row = g * R + k
            seg = slice(start + row * width, start + (row + 1) * width)
            want[:, k, seg] += coeff[:, row, None] * (1.0 if bias else z)
    acc = backend64.asarray(acc0.copy())
    gradflow.add_row_outer(backend64.xp, acc, start, backend64.asarray(coeff),
                           None if bias else backend64.asarray(z))
    np.testing.assert_allclose(_host(backend64, acc), want, rtol=0, atol=1e-15)


def test_matmul_into_writes_the_product_into_a_view(backend64: gradflow.Backend) -> None:
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 4, 5))
    out = backend64.asarray(np.full((2, 4, 5), 7.0))
    xp = backend64.xp
    got = gradflow.matmul_into(xp, backend64.asarray(a), backend64.asarray(b), out[:, 1:, :])
    host = _host(backend64, out)
    np.testing.assert_allclose(host[:, 1:, :], a @ b, rtol=1e-14)
    np.testing.assert_array_equal(host[:, 0, :], 7.0)  # outside the view: untouched
    np.testing.assert_allclose(_host(backend64, got), a @ b, rtol=1e-14)


# -- the conformance suite on the new primitives ------------------------------------------------
def _model_cls(name: str) -> type[gradflow.Model]:
    return gradflow.get_registry().get("model", name).cls


class _ScaledRow:
    """state_jacobian with its first row 1 % too large."""

    def state_jacobian(self, theta, cache):
        jac = super().state_jacobian(theta, cache)
        jac[:, 0, :] *= 1.01
        return jac


class _OneWrongEntry:
    """param_jacobian_accumulate that adds 0.5 too much to one entry."""

    def param_jacobian_accumulate(self, theta, cache, acc):
        super().param_jacobian_accumulate(theta, cache, acc)
        acc[:, 0, 0] += 0.5


class _ReturnsAcc:
    """param_jacobian_accumulate that returns its accumulator (it must return None)."""

    def param_jacobian_accumulate(self, theta, cache, acc):
        super().param_jacobian_accumulate(theta, cache, acc)
        return acc


class _Spills:
    """param_jacobian_accumulate that also writes the row of the buffer after its view acc."""

    def param_jacobian_accumulate(self, theta, cache, acc):
        super().param_jacobian_accumulate(theta, cache, acc)
        acc.base[:, -1, :] += 1.0


@pytest.mark.parametrize(("name", "mixin", "method", "message"), [
    ("gru", _ScaledRow, "state_jacobian", "relative error"),
    ("rnn", _OneWrongEntry, "param_jacobian_accumulate", "relative error"),
    ("lstm", _ReturnsAcc, "param_jacobian_accumulate", "returned a value"),
    ("rnn", _Spills, "param_jacobian_accumulate", "wrote outside acc"),
])
def test_check_model_names_a_broken_structured_primitive(name: str, mixin: type, method: str,
                                                         message: str) -> None:
    base = _model_cls(name)
    cls = type(f"Broken{base.__name__}", (mixin, base), {})
    model = cls(cls.Options(n_in=3, n_hidden=5, n_out=2), gradflow.get_backend())
    with pytest.raises(AssertionError, match=f"model {name!r}: {method}") as info:
        check_model(model)
    assert message in str(info.value)


# -- RTRL: structured step = generic step = BPTT -------------------------------------------------
def _trajectory(model: gradflow.Model, T: int = 24, B: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    theta = model.backend.to_numpy(model.init_params(seed)) * 2.0  # a non-trivial regime
    inputs = rng.normal(size=(T, B, model.n_in))
    targets = rng.normal(size=(T, B, model.n_out))
    resets = np.zeros((T, B), dtype=bool)
    resets[T // 3, 0] = resets[2 * T // 3, 1:] = True
    return theta, inputs, targets, resets


@pytest.mark.parametrize("name", MODELS)
def test_structured_step_equals_generic_step_and_bptt(backend64: gradflow.Backend,
                                                      name: str) -> None:
    model = small_model(name, backend64, **({"alpha": 0.5} if name == "rnn" else {}))
    theta, X, Y, resets = _trajectory(model)
    structured = gradflow.create_estimator("rtrl", model)
    generic_model = without(model, gradflow.STATE_JACOBIAN)
    generic = gradflow.create_estimator("rtrl", generic_model)
    assert structured.structured and not generic.structured
    got = gradflow.frozen_gradients(model, structured, theta, X, Y, resets=resets)
    ref = gradflow.frozen_gradients(generic_model, generic, theta, X, Y, resets=resets)
    bptt = gradflow.bptt_gradients(model, theta, X, Y, resets=resets)
    assert rel_err(ref, bptt) <= 1e-10
    assert rel_err(got, ref) <= 1e-12
    assert rel_err(got[-1], 0 * got[-1]) > 0  # the gradients are not trivially zero


@pytest.mark.parametrize("missing", [gradflow.STATE_JACOBIAN, gradflow.PARAM_JACOBIAN_ACCUMULATE,
                                     gradflow.VJP])
def test_a_model_without_one_structured_primitive_takes_the_generic_step(missing: str) -> None:
    full = small_model("gru")
    model = without(full, missing)
    est = gradflow.create_estimator("rtrl", model)
    assert not est.structured
    est.start(2)
    assert est.state.G.shape == (2, model.n_state, model.layout.n_rec)
    theta, X, Y, _ = _trajectory(model, T=6, B=2)
    ref = gradflow.bptt_gradients(full, theta, X, Y)
    assert rel_err(gradflow.frozen_gradients(model, est, theta, X, Y), ref) <= 1e-10


def test_the_declared_state_is_a_view_of_the_workspace_and_snapshots_copy() -> None:
    """G (B, n, P_rec) is the first n rows of a (B, n + 1, P_rec) buffer of the workspace: the
    step writes the other buffer; state_dict copies; a loaded estimator continues bit for bit."""
    model = small_model("rnn")
    est = gradflow.create_estimator("rtrl", model)
    est.start(2, seed=1)
    theta, X, Y, _ = _trajectory(model, T=8, B=2)
    theta = model.backend.asarray(theta)
    mse = gradflow.get_loss("mse")

    def step(e: gradflow.Estimator, h, t: int):
        h, cache = model.forward(theta, h, model.backend.asarray(X[t]))
        _, dy = mse(model.readout(theta, h), model.backend.asarray(Y[t]))
        delta, g_out = model.readout_vjp(theta, h, dy)
        return h, np.array(e.step(gradflow.StepRecord(theta, cache, delta, g_out)))

    h = model.initial_state(2)
    bases = set()
    for t in range(4):
        h, _ = step(est, h, t)
        assert est.state.G.shape == (2, model.n_state, model.layout.n_rec)
        bases.add(id(est.state.G.base))
    assert len(bases) == 2  # the two buffers, in turn
    snap = est.state_dict()
    assert not np.shares_memory(snap["array.G"], est.state.G)
    twin = gradflow.create_estimator("rtrl", model)
    twin.load_state_dict(snap)
    h_twin = h
    for t in range(4, 8):
        h, a = step(est, h, t)
        h_twin, b = step(twin, h_twin, t)
        np.testing.assert_array_equal(a, b)


def test_structured_step_allocates_nothing_of_the_size_of_g() -> None:
    """Steady state: the memory allocated at once during a step is a few n × n arrays (J_t, an
    outer product), far below one n × P_rec array (the generic step allocates several: J·G, the
    dense F_t and their temporaries)."""
    n = 40
    model = gradflow.create_model("rnn", n_in=2, n_hidden=n, n_out=2)
    g_bytes = 8 * n * model.layout.n_rec

    def peak(est: gradflow.Estimator) -> int:
        est.start(1)
        theta = model.init_params(0)
        h = model.initial_state(1)
        x = np.ones((1, 2))
        records = []
        for _ in range(6):
            h, cache = model.forward(theta, h, x)
            delta, g_out = model.readout_vjp(theta, h, np.ones((1, 2)))
            records.append(gradflow.StepRecord(theta, cache, delta, g_out))
        est.step(records[0])  # warm
        tracemalloc.start()
        try:
            for record in records[1:]:
                tracemalloc.reset_peak()
                before = tracemalloc.get_traced_memory()[0]
                est.step(record)
                worst = max(0, tracemalloc.get_traced_memory()[1] - before)
        finally:
            tracemalloc.stop()
        return worst

    structured = peak(gradflow.create_estimator("rtrl", model))
    assert structured < 10 * 8 * n * n < g_bytes / 4
    generic = gradflow.create_estimator("rtrl", without(model, gradflow.STATE_JACOBIAN))
    assert peak(generic) > g_bytes  # the test can fail: the generic step does allocate


def test_structured_step_has_no_page_faults_in_steady_state() -> None:
    """Minor page faults over 200 online steps at n = 48 (the generic step: hundreds per step,
    multi-megabyte temporaries returned to the system and faulted back in)."""
    from gradflow.tools.bench import make_trainer
    from gradflow.training.threads import blas_threads

    with blas_threads(1):
        trainer = make_trainer("rtrl", 48)
        for _ in range(50):
            trainer.advance()
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(200):
            trainer.advance()
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    assert trainer.parts.estimator.structured
    assert faults / 200 < 1.0, f"{faults / 200:.1f} minor page faults per step"


def test_rtrl_bound_script_runs() -> None:
    """benchmarks/rtrl_bound.py at a tiny size: a row per clock, positive times, a table."""
    from benchmarks import rtrl_bound

    rows = rtrl_bound.measure(4, repeat=2, min_time=1e-4)
    assert [r.clock for r in rows] == list(rtrl_bound.CLOCKS)
    assert all(r.dgemm_us > 0 and r.step_us > 0 and r.estimator_us > 0 for r in rows)
    lines = rtrl_bound.table(rows[:1])
    assert lines[0].startswith("| n | P_rec | (a) DGEMM") and lines[2].startswith("| 4 | 28 |")
