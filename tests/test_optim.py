"""Optimizers, learning-rate schedules and clipping on small exact cases, on every backend."""

from __future__ import annotations

import math

import numpy as np
import pytest

import gradflow
from gradflow.training.clipping import clip_direction
from gradflow.training.optimizers import create_optimizer
from gradflow.training.schedules import learning_rate


def test_schedules() -> None:
    assert learning_rate("constant", 0.1, 1) == 0.1
    assert learning_rate("constant", 0.1, 10_000) == 0.1
    assert learning_rate("inv-sqrt", 0.1, 1) == 0.1
    assert learning_rate("inv-sqrt", 0.1, 400) == pytest.approx(0.1 / 20)
    assert learning_rate("smooth-inv-sqrt", 0.1, 100, decay=0.5) == pytest.approx(0.1 / 6)
    assert learning_rate("smooth-inv-sqrt", 0.1, 100, decay=0.0) == 0.1
    with pytest.raises(ValueError, match="unknown schedule"):
        learning_rate("cosine", 0.1, 1)
    with pytest.raises(ValueError, match="starts at 1"):
        learning_rate("constant", 0.1, 0)


def _run(backend, name, grads, lr, n_rec=0, **options):
    be = backend
    opt = create_optimizer(name, be.xp, len(grads[0]), be.dtype, n_rec, **options)
    theta = be.asarray(np.zeros(len(grads[0])))
    for g in grads:
        theta = opt.update(theta, be.asarray(np.asarray(g, dtype=float)), lr)
    return be.to_numpy(theta), opt


def test_sgd_and_momentum(backend64) -> None:
    grads = [[1.0, -2.0], [3.0, 0.5]]
    theta, _ = _run(backend64, "sgd", grads, 0.1)
    np.testing.assert_allclose(theta, [-0.4, 0.15], rtol=1e-15)
    # v1 = g1, v2 = 0.5 g1 + g2; θ = −0.1 (v1 + v2)
    theta, opt = _run(backend64, "sgd", grads, 0.1, momentum=0.5)
    np.testing.assert_allclose(theta, [-0.1 * (1 + 3.5), -0.1 * (-2 - 0.5)], rtol=1e-15)
    assert opt.count == 2


def test_adam_matches_the_formula(backend64) -> None:
    rng = np.random.default_rng(0)
    grads = rng.normal(size=(4, 3))
    b1, b2, eps, lr = 0.9, 0.99, 1e-8, 0.01
    theta, opt = _run(backend64, "adam", grads, lr, beta1=b1, beta2=b2, eps=eps)
    ref, m, v = np.zeros(3), np.zeros(3), np.zeros(3)
    for k, g in enumerate(grads, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        ref -= lr * (m / (1 - b1 ** k)) / (np.sqrt(v / (1 - b2 ** k)) + eps)
    np.testing.assert_allclose(theta, ref, rtol=1e-12)
    # first step of Adam: lr · sign(g) (up to ε)
    first, _ = _run(backend64, "adam", grads[:1], lr)
    np.testing.assert_allclose(first, -lr * np.sign(grads[0]), rtol=1e-6)
    state = opt.state_dict()
    assert state["count"] == 4 and set(state) == {"count", "m", "v"}


def test_optimizer_state_round_trip(backend64) -> None:
    grads = np.random.default_rng(1).normal(size=(6, 4))
    full, _ = _run(backend64, "adam", grads, 0.01)
    half, opt = _run(backend64, "adam", grads[:3], 0.01)
    state = {k: backend64.to_numpy(v) if hasattr(v, "shape") else v
             for k, v in opt.state_dict().items()}
    fresh = create_optimizer("adam", backend64.xp, 4, backend64.dtype)
    fresh.load_state_dict(state, backend64.asarray)
    theta = backend64.asarray(half)
    for g in grads[3:]:
        theta = fresh.update(theta, backend64.asarray(g), 0.01)
    np.testing.assert_array_equal(backend64.to_numpy(theta), full)


def test_recurrent_learning_rate_scale(backend64) -> None:
    theta, _ = _run(backend64, "sgd", [[1.0, 1.0, 1.0]], 0.1, n_rec=2, lr_rec_scale=0.5)
    np.testing.assert_allclose(theta, [-0.05, -0.05, -0.1], rtol=1e-15)


def test_clipping(backend64) -> None:
    be = backend64
    xp = be.xp

    def g():
        return be.asarray(np.array([3.0, 4.0, 12.0]))  # ‖g_rec‖ = 5, ‖g‖ = 13

    first = g()
    out, raw = clip_direction(xp, first, 2, clip_rec=1.0)
    np.testing.assert_allclose(be.to_numpy(out), [0.6, 0.8, 12.0], rtol=1e-15)
    np.testing.assert_allclose(be.to_numpy(first), [0.6, 0.8, 12.0], rtol=1e-15)  # in place
    assert be.to_float(raw) == 13.0
    out, _ = clip_direction(xp, g(), 2, clip=6.5)
    np.testing.assert_allclose(be.to_numpy(out), [1.5, 2.0, 6.0], rtol=1e-15)
    out, _ = clip_direction(xp, g(), 2, clip=1.0, clip_rec=1.0)  # both: rec first, then all
    norm = math.sqrt(1.0 + 144.0)
    np.testing.assert_allclose(be.to_numpy(out), np.array([0.6, 0.8, 12.0]) / norm, rtol=1e-14)
    out, _ = clip_direction(xp, g(), 2, clip=100.0, clip_rec=100.0)  # below the limits: unchanged
    np.testing.assert_array_equal(be.to_numpy(out), [3.0, 4.0, 12.0])
    zero, raw = clip_direction(xp, be.asarray(np.zeros(3)), 2, clip=1.0, clip_rec=1.0)
    np.testing.assert_array_equal(be.to_numpy(zero), 0.0)
    assert be.to_float(raw) == 0.0


def test_unknown_optimizer() -> None:
    with pytest.raises(ValueError, match="unknown optimizer 'rmsprop'"):
        create_optimizer("rmsprop", gradflow.get_backend().xp, 3, np.float64)
