"""The in-place hot paths keep their contracts: snapshots stay snapshots, loaded states are not
aliased, the returned direction may be scaled by the caller, θ is updated in place."""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
import pytest
from gradflow_plugins.estimators.kalman_nobacktrack import information_cap

import gradflow
from gradflow.tools.bench import make_trainer
from gradflow.training.optimizers import create_optimizer
from tests.helpers import registered

#: every registered estimator that runs on an endless stream (the trainer's hot path)
ONLINE = registered("estimator", online=True)


def _arrays(state: dict[str, Any], be: gradflow.Backend) -> dict[str, np.ndarray]:
    return {k: be.to_numpy(v) for k, v in state.items() if hasattr(v, "shape")}


@pytest.mark.parametrize("name", ONLINE)
def test_estimator_state_dict_is_a_snapshot(backend_name: str, name: str) -> None:
    trainer = make_trainer(name, 6, batch=2, backend=backend_name, truncation=3)
    for _ in range(4):
        trainer.advance()
    est, be = trainer.parts.estimator, trainer.parts.backend
    state = est.state_dict()
    before = _arrays(state, be)
    for _ in range(5):
        trainer.advance()
    after = _arrays(state, be)
    for key, value in before.items():
        np.testing.assert_array_equal(after[key], value, err_msg=f"{name}: {key} moved")
    # and loading it does not alias it: the estimator's later in-place updates leave it alone
    est.load_state_dict(state)
    for _ in range(5):
        trainer.advance()
    again = _arrays(state, be)
    for key, value in before.items():
        np.testing.assert_array_equal(again[key], value, err_msg=f"{name}: {key} aliased")


@pytest.mark.parametrize("name,options", [("sgd", {"momentum": 0.9}), ("adam", {})])
def test_optimizer_updates_in_place_and_snapshots(backend64: gradflow.Backend, name: str,
                                                  options: dict) -> None:
    be = backend64
    opt = create_optimizer(name, be.xp, 4, be.dtype, **options)
    theta = be.asarray(np.zeros(4))
    g = be.asarray(np.array([1.0, -2.0, 0.5, 3.0]))
    out = opt.update(theta, g, 0.1)
    assert out is theta  # updated in place
    np.testing.assert_array_equal(be.to_numpy(g), [1.0, -2.0, 0.5, 3.0])  # g is left alone
    state = opt.state_dict()
    before = _arrays(state, be)
    opt.update(theta, g, 0.1)
    for key, value in _arrays(state, be).items():
        np.testing.assert_array_equal(value, before[key])
    fresh = create_optimizer(name, be.xp, 4, be.dtype, **options)
    fresh.load_state_dict(state, be.asarray)
    fresh.update(be.asarray(np.zeros(4)), g, 0.1)
    for key, value in _arrays(state, be).items():
        np.testing.assert_array_equal(value, before[key])


def test_trainer_state_is_a_snapshot_although_theta_moves_in_place() -> None:
    trainer = make_trainer("uoro", 8)
    trainer.advance()
    arrays, _ = trainer.state()
    theta = arrays["theta"].copy()
    for _ in range(3):
        trainer.advance()
    np.testing.assert_array_equal(arrays["theta"], theta)
    assert not np.array_equal(trainer.parts.backend.to_numpy(trainer.theta), theta)


def test_to_numpy_always_copies(backend64: gradflow.Backend) -> None:
    x = backend64.asarray(np.arange(3.0))
    host = backend64.to_numpy(x)
    host[0] = 7.0
    assert backend64.to_numpy(x)[0] == 0.0


def test_clipping_in_place_does_not_leak_into_the_next_direction() -> None:
    """The trainer clips the estimator's reused buffer in place: readout-only must still return
    an exact zero recurrent part every step, and θ_rec must not move."""
    config = gradflow.build_config(sets=[
        'estimator.name="readout-only"', "model.n_hidden=8", 'optimizer.name="sgd"',
        "optimizer.clip=1e-3", "optimizer.clip_rec=1e-6"])
    trainer = gradflow.Trainer(config)
    n_rec = trainer.parts.model.layout.n_rec
    start = trainer.parts.backend.to_numpy(trainer.theta)
    for _ in range(20):
        trainer.advance()
    now = trainer.parts.backend.to_numpy(trainer.theta)
    np.testing.assert_array_equal(now[:n_rec], start[:n_rec])
    assert not np.array_equal(now[n_rec:], start[n_rec:])


@pytest.mark.parametrize("name", ONLINE)
def test_a_clipped_run_equals_the_same_run_resumed(name: str) -> None:
    """The in-place buffers carry nothing across a state round trip: a trainer whose estimator
    and optimizer are reloaded mid-run continues bit for bit."""
    sets = [f'estimator.name="{name}"', "model.n_hidden=6", "run.batch=2", "optimizer.clip=0.5"]
    one = gradflow.Trainer(gradflow.build_config(sets=sets))
    two = gradflow.Trainer(gradflow.build_config(sets=sets))
    for _ in range(7):
        one.advance()
        two.advance()
    arrays, scalars = two.state()
    three = gradflow.Trainer(gradflow.build_config(sets=sets))
    three.load_state(arrays, scalars)
    for _ in range(9):
        one.advance()
        three.advance()
    np.testing.assert_array_equal(one.parts.backend.to_numpy(one.theta),
                                  three.parts.backend.to_numpy(three.theta))


@pytest.mark.parametrize("broken,label", [
    ("sum", "vjp_accumulate (P_rec,)"), ("rows", "vjp_accumulate (B, P_rec)"),
    ("sqnorm", "vjp_param_sqnorms")])
def test_conformance_names_a_broken_fast_primitive(broken: str, label: str) -> None:
    """check_model checks the rnn's overrides of the derived primitives, not only the defaults."""
    from gradflow_plugins.models.rnn import RNN

    from gradflow.testing import check_model

    class Broken(RNN):
        def vjp_accumulate(self, theta, cache, u, acc, state=True, scale=None):
            out = super().vjp_accumulate(theta, cache, u, acc, state, scale)
            if (broken == "sum") == (acc.ndim == 1) and broken != "sqnorm":
                acc[:3] *= 1.01  # a wrong first entry of every block
            return out

        def vjp_param_sqnorms(self, theta, cache, u):
            sq = super().vjp_param_sqnorms(theta, cache, u)
            return sq * 1.01 if broken == "sqnorm" else sq

    model = Broken(Broken.Options(n_in=3, n_hidden=5, n_out=2), gradflow.get_backend())
    with pytest.raises(AssertionError, match=re.escape(f"model 'rnn': {label}")):
        check_model(model)


def test_blocks_cover_the_range_once() -> None:
    assert list(gradflow.blocks(0, 4)) == []
    assert list(gradflow.blocks(3, 4)) == [(0, 3)]
    assert list(gradflow.blocks(9, 4)) == [(0, 4), (4, 8), (8, 9)]
    xp = gradflow.get_backend("numpy").xp
    assert gradflow.block_size(xp) == gradflow.contracts.blocking.CPU_BLOCK


#: several blocks and a partial one, so that every block boundary is crossed
_SIZE = 2 * gradflow.contracts.blocking.CPU_BLOCK + 123


@pytest.mark.parametrize("name,options", [("sgd", {}), ("sgd", {"momentum": 0.9}),
                                          ("adam", {}), ("adam", {"lr_rec_scale": 0.5})])
def test_blocked_optimizer_is_bitwise_the_whole_array_formula(backend64: gradflow.Backend,
                                                              name: str, options: dict) -> None:
    be, rng = backend64, np.random.default_rng(7)
    n_rec = _SIZE // 3
    opt = create_optimizer(name, be.xp, _SIZE, be.dtype, n_rec, **options)
    theta = be.asarray(rng.normal(size=_SIZE))
    ref = be.to_numpy(theta).copy()
    scale = np.where(np.arange(_SIZE) < n_rec, options.get("lr_rec_scale", 1.0), 1.0)
    mom, m, v = np.zeros(_SIZE), np.zeros(_SIZE), np.zeros(_SIZE)
    for k in range(1, 4):
        g = rng.normal(size=_SIZE)
        opt.update(theta, be.asarray(g), 0.01)
        if name == "sgd":  # the same operations in the same order, on whole arrays
            mom = mom * 0.9 + g if options.get("momentum") else g
            step = mom
        else:
            m = m * 0.9 + (1.0 - 0.9) * g
            v = v * 0.999 + (g * g) * (1.0 - 0.999)
            step = (m / (1.0 - 0.9 ** k)) / (np.sqrt(v) / math.sqrt(1.0 - 0.999 ** k) + 1e-8)
        if "lr_rec_scale" in options:
            step = step * scale
        ref = ref - 0.01 * step
        np.testing.assert_array_equal(be.to_numpy(theta), ref)


@pytest.mark.filterwarnings("ignore:overflow encountered")
def test_blocked_kalman_filter_is_bitwise_the_whole_array_formula() -> None:
    model = gradflow.create_model("rnn", n_in=3, n_hidden=190, n_out=2)
    size = model.layout.size
    assert size > gradflow.contracts.blocking.CPU_BLOCK  # several blocks
    est = gradflow.create_estimator("kalman-nobacktrack", model)
    est.start(1, seed=0)
    rng = np.random.default_rng(3)
    J = rng.uniform(0.0, 2.0, size=size)
    est.state.J_theta[...] = J
    g = rng.normal(size=size) * 10.0 ** rng.integers(-3, 200, size=size)  # some ĝ² overflow
    out = np.asarray(est.finish(np.array(g)))
    gamma = 1.0 / (1 + 100.0)
    with np.errstate(over="ignore"):
        J = np.minimum(J * (1.0 - gamma) + (g * g) * gamma, information_cap(np, np.float64))
    inv = (J + 1e-3) ** -1.0
    np.testing.assert_array_equal(np.asarray(est.state.J_theta), J)
    np.testing.assert_array_equal(np.asarray(est._inv), inv)
    np.testing.assert_array_equal(out, g * inv)
