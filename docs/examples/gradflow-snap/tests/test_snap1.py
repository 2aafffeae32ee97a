"""Tests of the gradflow-snap plugin, written with gradflow's public conformance suite.

Run them against the installed distribution: ``pip install ./docs/examples/gradflow-snap`` then
``pytest docs/examples/gradflow-snap/tests``.
"""

from __future__ import annotations

import numpy as np
import pytest

import gradflow
from gradflow.testing import check_estimator

SIZES = {"n_in": 3, "n_hidden": 6, "n_out": 2}


def _model(name: str, backend: str = "numpy") -> gradflow.Model:
    return gradflow.create_model(name, backend, **({} if name == "influence" else SIZES))


def _exact_limit(model: gradflow.Model) -> np.ndarray:
    """θ where J_t keeps every parameter's influence on the units it feeds: SnAp-1 = RTRL.

    rnn: diagonal W_hh (J_t is diagonal); gru, lstm: W_hh = 0 (J_t is diagonal, resp. made of
    one 2 × 2 block [h_k, c_k] per unit); influence: any θ (its one parameter feeds every unit).
    """
    theta = np.array(model.backend.to_numpy(model.init_params(0)), dtype=np.float64)
    if "W_hh" in model.layout:
        spec = model.layout.specs["W_hh"]
        w = theta[spec.slice].reshape(spec.shape)
        if model.name == "rnn":
            w = np.diag(np.diag(w))
        else:
            w = np.zeros_like(w)
        theta[spec.slice] = w.reshape(-1)
    return theta


def test_registered_from_its_distribution() -> None:
    info = gradflow.get_registry().get("estimator", "snap1")
    assert info.distribution == "gradflow-snap"
    assert info.plugin == "snap"


@pytest.mark.parametrize("backend", ["numpy", "array_api_strict"])
@pytest.mark.parametrize("name", ["rnn", "gru", "lstm", "influence"])
def test_exact_where_snap1_is_rtrl(name: str, backend: str) -> None:
    model = _model(name, backend)
    if name == "rnn":
        model = gradflow.create_model("rnn", backend, alpha=0.7, **SIZES)
    report = check_estimator("snap1", model, theta=_exact_limit(model), steps=15, kind="exact")
    assert report["max_rel_error"] < 1e-9


@pytest.mark.parametrize("name", ["rnn", "gru", "lstm"])
def test_exact_at_the_first_step(name: str) -> None:
    check_estimator("snap1", _model(name), steps=1, kind="exact")


@pytest.mark.parametrize("name", ["rnn", "gru", "lstm"])
def test_an_approximation_in_general(name: str) -> None:
    """At a generic θ SnAp-1 drops the influence that flows between units from step 2 on."""
    with pytest.raises(AssertionError, match=r"'snap1' .* step 1 "):
        check_estimator("snap1", _model(name), steps=15, kind="exact")


@pytest.mark.parametrize("name", ["rnn", "gru", "lstm", "influence"])
def test_passes_the_structural_checks(name: str) -> None:
    """Declared state, reset, snapshots, seeds and the returned buffer: every model."""
    report = check_estimator("snap1", _model(name), steps=8)
    assert report["kind"] == "biased" and len(report["checks"]) == 6


def test_pattern_and_colours() -> None:
    est = {name: gradflow.create_estimator("snap1", _model(name))
           for name in ("rnn", "gru", "lstm", "influence")}
    assert [est[n].n_colours for n in ("rnn", "gru", "lstm", "influence")] == [1, 1, 2, 23]


def test_reset_cuts_the_sensitivity_per_stream() -> None:
    """In an exact limit, with sequence boundaries in some streams, the per-step estimates equal
    BPTT's with the same boundaries (nothing flows across a reset)."""
    model = _model("lstm")
    theta = _exact_limit(model)
    rng = np.random.default_rng(5)
    T, B = 10, 3
    inputs, targets = rng.normal(size=(T, B, 3)), rng.normal(size=(T, B, 2))
    resets = np.zeros((T, B), dtype=bool)
    resets[4, 0] = resets[7, 2] = True
    est = gradflow.create_estimator("snap1", model)
    rows = gradflow.frozen_gradients(model, est, theta, inputs, targets, resets=resets)
    exact = gradflow.bptt_gradients(model, theta, inputs, targets, resets=resets)
    np.testing.assert_allclose(rows, exact, rtol=1e-10, atol=1e-13)
    no_cut = gradflow.frozen_gradients(model, est, theta, inputs, targets)
    assert np.abs(no_cut - rows).max() > 1e-3  # the boundaries matter
