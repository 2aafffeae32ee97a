"""Losses `ce` and `mse`: values and gradients against finite differences."""

from __future__ import annotations

import math

import numpy as np
import pytest

import gradflow
from tests.helpers import central_jacobian, rel_err


def _value(be, loss, yhat, target):
    return be.to_float(loss(be.asarray(yhat), be.asarray(target))[0])


@pytest.mark.parametrize("name", ["ce", "mse"])
def test_gradient_matches_fd(backend64: gradflow.Backend, name: str) -> None:
    be, loss = backend64, gradflow.get_loss(name)
    rng = np.random.default_rng(0)
    yhat = rng.normal(size=(3, 4))
    if name == "ce":
        target = rng.dirichlet(np.ones(4), size=3)
    else:
        target = rng.normal(size=(3, 4))
    _, grad = loss(be.asarray(yhat), be.asarray(target))
    fd = central_jacobian(lambda y: np.array([_value(be, loss, y.reshape(3, 4), target)]),
                          yhat.ravel())
    assert rel_err(be.to_numpy(grad).ravel(), fd.ravel()) < 1e-7


def test_ce_labels_equal_one_hot_and_known_values(backend64: gradflow.Backend) -> None:
    be, ce = backend64, gradflow.get_loss("ce")
    yhat = np.array([[0.0, 0.0], [2.0, -1.0]])
    labels = np.array([1, 0])
    l_lab, g_lab = ce(be.asarray(yhat), be.asarray(labels))
    l_hot, g_hot = ce(be.asarray(yhat), be.asarray(np.eye(2)[labels]))
    expected = (math.log(2) + math.log(1 + math.exp(-3))) / 2  # mean over the 2 streams
    assert be.to_float(l_lab) == pytest.approx(expected, rel=1e-14)
    assert be.to_float(l_hot) == pytest.approx(expected, rel=1e-14)
    np.testing.assert_allclose(be.to_numpy(g_lab), be.to_numpy(g_hot), rtol=1e-14)
    per = be.to_numpy(ce.per_stream(be.asarray(yhat), be.asarray(labels)))
    np.testing.assert_allclose(per.mean(), expected, rtol=1e-14)
    # soft target: minimum of the cross-entropy is the target's entropy
    p = np.array([[0.25, 0.75]])
    at_opt = be.to_float(ce(be.asarray(np.log(p)), be.asarray(p))[0])
    assert at_opt == pytest.approx(-(0.25 * math.log(0.25) + 0.75 * math.log(0.75)), rel=1e-12)


def test_mse_value_and_shape_errors() -> None:
    mse = gradflow.get_loss("mse")
    loss, grad = mse(np.array([[1.0, 2.0], [0.0, 0.0]]), np.array([[0.0, 0.0], [0.0, 1.0]]))
    assert float(loss) == pytest.approx((0.5 * 5 + 0.5 * 1) / 2)
    np.testing.assert_allclose(grad, [[0.5, 1.0], [0.0, -0.5]])
    with pytest.raises(gradflow.ShapeError, match="mse: targets of shape"):
        mse(np.zeros((2, 2)), np.zeros((2, 3)))
    with pytest.raises(gradflow.ShapeError, match="integer class labels"):
        gradflow.get_loss("ce")(np.zeros((2, 2)), np.zeros(2))
    with pytest.raises(gradflow.GradflowError, match="unknown loss 'l1'"):
        gradflow.get_loss("l1")
