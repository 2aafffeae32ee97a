"""The structured primitives of the model contract (docs/architecture.md §4): units, unit
Jacobian blocks, internal blocks, Kronecker factors, leak.

Every registered model's structured primitives are checked by ``check_model`` against the
finite-difference F and J (tests/test_models.py runs it on every model); here: the derived
defaults a model with dense primitives only gets are right, the suite names a wrong structured
primitive, and the values the dense J cannot show (the internal blocks, the leak) are checked
at W_hh = 0, where J_t is made of them alone.
"""

from __future__ import annotations

import numpy as np
import pytest

import gradflow
from gradflow.testing import check_model
from tests.helpers import registered, small_model, without

STRUCTURED = (gradflow.STATE_JACOBIAN_BLOCKS, gradflow.PARAM_JACOBIAN_UNITS_ACCUMULATE,
              gradflow.PARAM_KRON_FACTORS, gradflow.INTERNAL_JACOBIAN_BLOCKS, gradflow.LEAK)


def _point(model: gradflow.Model, theta=None, batch: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    theta = model.init_params(seed) if theta is None else model.backend.asarray(theta)
    h = model.backend.asarray(rng.standard_normal((batch, model.n_state)))
    x = model.backend.asarray(rng.standard_normal((batch, model.n_in)))
    return theta, model.forward(theta, h, x)[1]


@pytest.mark.parametrize("model_name", registered("model"))
@pytest.mark.parametrize("dense", [gradflow.STATE_JACOBIAN, gradflow.JVP_STATE])
def test_derived_defaults_match_the_models_own(model_name: str, dense: str) -> None:
    """A model with dense primitives only (one of J_t or its JVP, and the VJP) gets
    ``state_jacobian_blocks`` and ``param_jacobian_units_accumulate`` from the base class: the
    same numbers as the built-in fast forms, and they pass the conformance suite."""
    model = small_model(model_name)
    other = gradflow.JVP_STATE if dense == gradflow.STATE_JACOBIAN else gradflow.STATE_JACOBIAN
    derived = without(model, *STRUCTURED, other)
    assert derived.has(gradflow.STATE_JACOBIAN_BLOCKS)
    assert derived.has(gradflow.PARAM_JACOBIAN_UNITS_ACCUMULATE)
    assert not ({gradflow.STATE_JACOBIAN_BLOCKS, gradflow.PARAM_JACOBIAN_UNITS_ACCUMULATE}
                & derived.implemented)
    theta, cache = _point(model)
    units = model.units()
    np.testing.assert_allclose(derived.state_jacobian_blocks(theta, cache),
                               model.state_jacobian_blocks(theta, cache), rtol=1e-13, atol=0)
    acc = np.zeros((3, units.size, model.layout.n_rec))
    mine = acc.copy()
    derived.param_jacobian_units_accumulate(theta, cache, acc)
    model.param_jacobian_units_accumulate(theta, cache, mine)
    np.testing.assert_allclose(acc, mine, rtol=1e-13, atol=0)
    errors = check_model(derived, batch_sizes=(2,))
    assert errors["state_jacobian_blocks"] < 1e-6
    assert errors["param_jacobian_units_accumulate"] < 1e-6


def test_no_derived_primitive_without_its_dense_one() -> None:
    model = without(small_model("rnn"), *STRUCTURED, gradflow.VJP, gradflow.STATE_JACOBIAN,
                    gradflow.JVP_STATE)
    assert not model.has(gradflow.PARAM_JACOBIAN_UNITS_ACCUMULATE)
    assert not model.has(gradflow.STATE_JACOBIAN_BLOCKS)
    theta, cache = _point(small_model("rnn"))
    with pytest.raises(gradflow.CapabilityError, match="state_jacobian_blocks"):
        model.state_jacobian_blocks(theta, cache)


def test_a_model_that_declares_no_units_is_one_unit() -> None:
    """The default structure is always true: one unit of every coordinate and parameter."""
    model = without(small_model("lstm"), *STRUCTURED)
    units = gradflow.Model.units(model)
    assert units.coords.shape == (1, model.n_state) and units.n_params == model.layout.n_rec
    assert not units.problems(model.n_state, model.layout.n_rec)


# -- the suite names a wrong structured primitive ------------------------------------------------
def _rnn_cls() -> type[gradflow.Model]:
    return gradflow.get_registry().get("model", "rnn").cls


def _lstm_cls() -> type[gradflow.Model]:
    return gradflow.get_registry().get("model", "lstm").cls


def _swapped_units(self):  # lstm units whose coordinates pair h_k with c_{k+1}
    units = _lstm_cls().units(self)
    coords = units.coords.copy()
    coords[:, 1] = np.roll(coords[:, 1], 1)
    return gradflow.Units(coords, units.blocks)


def _swapped_kron(self):
    index = _rnn_cls().kron_index(self).copy()
    index[0, [0, 1]] = index[0, [1, 0]]
    return index


BREAKAGES = {
    "units": (_lstm_cls, "units", _swapped_units),
    "state_jacobian_blocks": (_rnn_cls, "state_jacobian_blocks",
                              lambda self, th, c: _rnn_cls().state_jacobian_blocks(self, th, c)
                              * 1.01),
    "param_kron_factors": (_rnn_cls, "kron_index", _swapped_kron),
    "jacobian_pattern": (_rnn_cls, "jacobian_pattern",
                         lambda self: np.eye(self.n_state, dtype=bool)),
}


@pytest.mark.parametrize("primitive", list(BREAKAGES))
def test_check_model_names_a_wrong_structured_primitive(primitive: str) -> None:
    base, method, fn = BREAKAGES[primitive]
    cls = type(f"Broken{base().__name__}", (base(),), {method: fn})
    model = cls(cls.Options(n_hidden=4, n_in=2, n_out=2), gradflow.get_backend())
    with pytest.raises(AssertionError) as info:
        check_model(model, batch_sizes=(2,))
    assert str(info.value).startswith(f"model {model.name!r}: {primitive}")


# -- what the dense J cannot show: the internal blocks and the leak -----------------------------
def _zero_w_hh(model: gradflow.Model) -> np.ndarray:
    theta = np.array(model.backend.to_numpy(model.init_params(1)))
    theta[model.layout.specs["W_hh"].slice] = 0.0
    return theta


@pytest.mark.parametrize("model_name", [
    name for name in registered("model")
    if gradflow.INTERNAL_JACOBIAN_BLOCKS in gradflow.get_registry().get("model", name)
    .cls.capabilities])
def test_internal_blocks_are_the_jacobian_without_recurrent_weights(model_name: str) -> None:
    """With W_hh = 0 the recurrent weights carry nothing, so J_t is block-diagonal and made of
    the internal blocks alone (and those do not depend on W_hh given the gates)."""
    model = small_model(model_name, alpha=0.6) if model_name == "rnn" else small_model(model_name)
    theta, cache = _point(model, _zero_w_hh(model))
    J = np.asarray(model.state_jacobian(theta, cache))
    units = model.units()
    blocks = J[:, units.coords[:, :, None], units.coords[:, None, :]]
    internal = np.asarray(model.internal_jacobian_blocks(theta, cache))
    np.testing.assert_allclose(internal, blocks, rtol=0, atol=1e-15)
    # nothing of J lies outside the blocks at W_hh = 0
    rebuilt = np.zeros_like(J)
    rebuilt[:, units.coords[:, :, None], units.coords[:, None, :]] = blocks
    np.testing.assert_array_equal(rebuilt, J)


@pytest.mark.parametrize("alpha", [1.0, 0.3])
def test_rnn_leak_is_its_internal_block(alpha: float) -> None:
    model = small_model("rnn", alpha=alpha)
    theta, cache = _point(model)
    assert model.units().size == 1
    np.testing.assert_array_equal(np.asarray(model.internal_jacobian_blocks(theta, cache))[
        :, :, 0, 0], np.broadcast_to(np.asarray(model.leak(theta)), (3, model.n_state)))
    np.testing.assert_array_equal(np.asarray(model.leak(theta)), 1.0 - alpha)


def test_gru_has_no_kronecker_factors_and_says_which() -> None:
    model = small_model("gru")
    assert not model.has(gradflow.PARAM_KRON_FACTORS)
    with pytest.raises(gradflow.CapabilityError, match="'gru' does not provide "
                                                       "'param_kron_factors'"):
        model.kron_index()
