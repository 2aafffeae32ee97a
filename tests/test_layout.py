"""ParamLayout: flat θ, named zero-copy views, flatten/unflatten."""

from __future__ import annotations

import numpy as np
import pytest

import gradflow
from gradflow import ParamLayout


def test_layout_offsets_and_views() -> None:
    lay = ParamLayout([("W", (3, 2)), ("b", (3,))], [("V", (1, 3))])
    assert lay.size == 12 and lay.n_rec == 9 and lay.n_out == 3
    assert lay.names == ["W", "b", "V"]
    theta = np.arange(12.0)
    w = lay.view(theta, "W")
    np.testing.assert_array_equal(w, np.arange(6.0).reshape(3, 2))  # row-major
    assert np.shares_memory(w, theta)
    w[0, 1] = -1.0  # zero-copy: writing the view writes θ
    assert theta[1] == -1.0
    parts = lay.unflatten(theta)
    assert list(parts) == ["W", "b", "V"] and parts["V"].shape == (1, 3)
    np.testing.assert_array_equal(lay.flatten(parts), theta)
    np.testing.assert_array_equal(theta[lay.rec], np.r_[0, -1, 2:9])
    np.testing.assert_array_equal(theta[lay.out], [9, 10, 11])


def test_layout_errors() -> None:
    lay = ParamLayout([("W", (2, 2))])
    with pytest.raises(gradflow.ShapeError, match=r"θ must have shape \(4,\)"):
        lay.unflatten(np.zeros(5))
    with pytest.raises(gradflow.ShapeError, match=r"missing.*'W'.*unexpected.*'Z'"):
        lay.flatten({"Z": np.zeros((2, 2))})
    with pytest.raises(gradflow.ShapeError, match="'W' must have shape"):
        lay.flatten({"W": np.zeros(4)})
    with pytest.raises(KeyError, match="no parameter 'Q'"):
        lay.view(np.zeros(4), "Q")
    with pytest.raises(ValueError, match="duplicate"):
        ParamLayout([("W", (1,)), ("W", (2,))])


def test_model_layout_uses_design_names(backend_name: str) -> None:
    model = gradflow.create_model("rnn", backend=backend_name, n_in=3, n_hidden=5, n_out=2)
    lay = model.layout
    assert lay.names == ["W_hh", "W_xh", "b_h", "W_hy", "b_y"]
    assert [lay.specs[n].shape for n in lay.names] == [(5, 5), (5, 3), (5,), (2, 5), (2,)]
    theta = model.init_params(0)
    assert lay.n_rec == 25 + 15 + 5 and theta.shape == (lay.size,)
    parts = lay.unflatten(theta)
    again = lay.flatten(parts)
    np.testing.assert_array_equal(model.backend.to_numpy(again), model.backend.to_numpy(theta))


def test_views_are_kept_per_vector_and_follow_a_new_vector() -> None:
    """A layout keeps the views of the last vectors it saw (θ, and vectors over θ_rec): the same
    objects come back, writing through them writes the vector, a new vector gets its own views
    (never those of an earlier one), and a vector of P_rec numbers has the recurrent views."""
    lay = ParamLayout([("W", (3, 2)), ("b", (3,))], [("V", (1, 3))])
    theta = np.arange(12.0)
    w = lay.view(theta, "W")
    assert lay.view(theta, "W") is w and lay.views(theta)["W"] is w
    w[1, 1] = -5.0
    assert theta[3] == -5.0
    other = theta.copy()
    other[3] = 9.0
    assert lay.view(other, "W")[1, 1] == 9.0 and lay.view(theta, "W")[1, 1] == -5.0
    metric = np.arange(9.0) + 100.0  # over θ_rec only
    np.testing.assert_array_equal(lay.view(metric, "b"), [106.0, 107.0, 108.0])
    assert np.shares_memory(lay.view(metric, "W"), metric)
    with pytest.raises(KeyError, match="no parameter 'V' in a vector of 9 numbers"):
        lay.view(metric, "V")
    for k in range(6):  # more vectors than the layout keeps: each still gets its own views
        vector = np.full(12, float(k))
        assert lay.view(vector, "V")[0, 0] == float(k)
    assert lay.view(theta, "W")[1, 1] == -5.0
    with pytest.raises(gradflow.ShapeError, match=r"θ must have shape \(12,\)"):
        lay.view(np.zeros(7), "W")
    import copy
    import pickle

    clone = pickle.loads(pickle.dumps(lay))
    assert clone._cached == [] and copy.deepcopy(lay).view(theta, "W")[1, 1] == -5.0
