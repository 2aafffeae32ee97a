"""Backends: namespaces, dtypes, the counter RNG, and a clear error when CuPy cannot run."""

from __future__ import annotations

import sys
import types
from typing import Any

import numpy as np
import pytest

import gradflow
from gradflow import CounterRNG, get_backend


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_backend_dtype_and_roundtrip(backend_name: str, dtype: str) -> None:
    be = get_backend(backend_name, dtype)
    assert be.name == backend_name and be.dtype_name == dtype
    x = be.asarray(np.arange(6.0).reshape(2, 3))
    assert x.dtype == be.dtype
    back = be.to_numpy(x)
    assert isinstance(back, np.ndarray) and back.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(back, np.arange(6.0).reshape(2, 3))
    labels = be.asarray(np.array([1, 0, 2]))
    assert be.xp.isdtype(labels.dtype, "integral")
    assert be.to_float(be.xp.sum(x)) == 15.0
    be.synchronize()


def test_unknown_backend_and_dtype_are_clear_errors() -> None:
    with pytest.raises(gradflow.BackendUnavailableError, match=r"unknown backend 'jax'.*numpy"):
        get_backend("jax")
    with pytest.raises(gradflow.BackendUnavailableError, match="unknown dtype 'float16'"):
        get_backend("numpy", "float16")


def test_cupy_without_cupy_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "cupy", None)  # import cupy -> ImportError
    with pytest.raises(gradflow.BackendUnavailableError, match=r"needs CuPy.*gradflow\[cuda12\]"):
        get_backend("cupy")


def test_cupy_without_gpu_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    # `import cupy` succeeds on a machine without a GPU; is_available() is what tells.
    fake = types.ModuleType("cupy")
    fake.cuda = types.SimpleNamespace(is_available=lambda: False)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "cupy", fake)
    with pytest.raises(gradflow.BackendUnavailableError, match="no usable CUDA GPU"):
        get_backend("cupy")


def test_cupy_driver_failure_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> bool:
        raise RuntimeError("CUDA driver version is insufficient")

    fake = types.ModuleType("cupy")
    fake.cuda = types.SimpleNamespace(is_available=broken)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "cupy", fake)
    with pytest.raises(gradflow.BackendUnavailableError, match="CUDA cannot start"):
        get_backend("cupy")


def test_rng_is_deterministic_and_backend_independent(backend_name: str) -> None:
    be = get_backend(backend_name)
    ref = CounterRNG(get_backend("numpy").xp, 1234)
    rng = CounterRNG(be.xp, 1234)
    for _ in range(3):
        np.testing.assert_array_equal(be.to_numpy(rng.uniform((5, 4), be.dtype)),
                                      np.asarray(ref.uniform((5, 4), np.float64)))
    np.testing.assert_array_equal(be.to_numpy(rng.signs((7,), be.dtype)),
                                  np.asarray(ref.signs((7,), np.float64)))
    assert rng.get_state() == ref.get_state() == {"seed": 1234, "counter": 4}


def test_rng_state_restores_the_stream() -> None:
    xp = get_backend("numpy").xp
    rng = CounterRNG(xp, 7)
    rng.normal((3,), xp.float64)
    state = rng.get_state()
    a = np.asarray(rng.signs((100,), xp.float64))
    other = CounterRNG(xp, 0)
    other.set_state(state)
    np.testing.assert_array_equal(a, np.asarray(other.signs((100,), xp.float64)))


def test_rng_distributions() -> None:
    xp = get_backend("numpy").xp
    rng = CounterRNG(xp, 3)
    n = 200_000
    u = np.asarray(rng.uniform((n,), xp.float64))
    assert u.min() >= 0.0 and u.max() < 1.0
    assert abs(u.mean() - 0.5) < 5 * np.sqrt(1 / 12 / n)
    s = np.asarray(rng.signs((n,), xp.float64))
    assert set(np.unique(s)) == {-1.0, 1.0}
    assert abs(s.mean()) < 5 / np.sqrt(n)
    z = np.asarray(rng.normal((n,), xp.float64))
    assert abs(z.mean()) < 5 / np.sqrt(n) and abs(z.var() - 1.0) < 5 * np.sqrt(2 / n)
    # successive draws and different seeds are different streams
    assert not np.array_equal(np.asarray(rng.signs((64,), xp.float64)),
                              np.asarray(rng.signs((64,), xp.float64)))
    assert not np.array_equal(np.asarray(CounterRNG(xp, 1).bits((8,))),
                              np.asarray(CounterRNG(xp, 2).bits((8,))))


@pytest.mark.parametrize("stride", [1, 2, 3])
def test_bits_at_equals_successive_draws(backend_name: str, stride: int) -> None:
    """bits_at(shape, c, k, stride) is the draws bits(shape) makes at counters c, c + stride, ...
    (including across the 2⁶⁴ wrap of the counter), and leaves the counter alone."""
    xp = get_backend(backend_name).xp
    for start in (0, 17, 2**64 - 2):
        rng = CounterRNG(xp, 99, counter=start)
        ahead = np.asarray(rng.bits_at((2, 3), start, 5, stride=stride))
        assert rng.counter == start and ahead.shape == (5, 2, 3)
        for k in range(5):
            rng.counter = start + k * stride
            np.testing.assert_array_equal(ahead[k], np.asarray(rng.bits((2, 3))))


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.int8, np.int32, np.uint64, np.bool_])
def test_numpy_namespace_reductions_are_numpys(dtype: type) -> None:
    """The numpy backend's sum/prod/max/min (ufunc methods, gradflow.contracts.numpy_namespace)
    return what NumPy's own functions return: value, dtype and shape, for every axis and
    keepdims; every other name is array-api-compat's."""
    import array_api_compat.numpy as compat

    xp = get_backend("numpy").xp
    x = np.random.default_rng(0).integers(0, 3, size=(3, 4, 5)).astype(dtype)
    for axis in (None, 0, 1, -1, (0, 2)):
        for keepdims in (False, True):
            for ours, theirs in ((xp.sum, np.sum), (xp.prod, np.prod),
                                 (xp.max, np.max), (xp.min, np.min)):
                got, want = ours(x, axis=axis, keepdims=keepdims), theirs(
                    x, axis=axis, keepdims=keepdims)
                assert np.asarray(got).dtype == np.asarray(want).dtype
                np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(xp.sum(x, dtype=np.float64), np.sum(x, dtype=np.float64))
    assert xp.tanh is compat.tanh and xp.concat is compat.concat and xp.linalg is compat.linalg
    nan = np.array([1.0, np.nan])
    assert np.isnan(xp.max(nan)) and np.isnan(xp.min(nan))
    with pytest.raises(ValueError):
        xp.max(np.zeros((0,)))  # an empty reduction without identity, as np.max


def test_signs_drawn_ahead_are_the_draws_of_one_call_each(backend_name: str) -> None:
    """signs() computes the next draws of a shape together and hands them out one per call:
    the numbers are still those of one draw per call (the top bit of bits(shape)), across
    counter jumps (a resumed generator), seed changes, shapes and dtypes, and a returned
    array may be modified without changing later draws."""
    be = get_backend(backend_name)
    xp = be.xp

    def reference(seed: int, counter: int, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        """The signs of one draw (±1 are exact in every dtype: compared as float64)."""
        bits = be.to_numpy(CounterRNG(xp, seed, counter).bits(shape))
        return 2.0 * (bits >> np.uint64(63)).astype(np.float64) - 1.0

    rng = CounterRNG(xp, 5)
    plan = [((1, 32), xp.float64)] * 40 + [((3, 7), xp.float32)] * 3 + [((1, 32), xp.float64)]
    for i, (shape, dtype) in enumerate(plan):
        counter = rng.counter
        got = rng.signs(shape, dtype)
        assert rng.counter == counter + 1 and got.dtype == dtype
        np.testing.assert_array_equal(be.to_numpy(got), reference(5, counter, shape, dtype))
        if i == 3:
            got[...] = 7.0  # the caller owns what it gets
    for counter in (2, 1000, 3):  # jumps: backwards, far ahead, back into the cached block
        rng.counter = counter
        np.testing.assert_array_equal(be.to_numpy(rng.signs((1, 32), xp.float64)),
                                      reference(5, counter, (1, 32), xp.float64))
    rng.seed = 6  # a generator given another seed (set_state) draws that seed's numbers
    rng.counter = 4
    np.testing.assert_array_equal(be.to_numpy(rng.signs((1, 32), xp.float64)),
                                  reference(6, 4, (1, 32), xp.float64))
    big = (1, 1 << 14)  # too large to draw ahead: one draw per call, the same numbers
    np.testing.assert_array_equal(be.to_numpy(rng.signs(big, xp.float64)),
                                  reference(6, 5, big, xp.float64))
