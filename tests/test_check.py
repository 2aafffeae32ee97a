"""``gradflow check`` and its Python API :func:`gradflow.estimator_statistics`."""

from __future__ import annotations

import json
import math
import sys
from typing import Any

import numpy as np
import pytest
from gradflow_cli.app import app, main
from gradflow_cli.check import parse_settings
from typer.testing import CliRunner

import gradflow
from gradflow.verification.statistics import (
    Z_THRESHOLD,
    random_trajectory,
    sample_statistics,
    verdict,
)
from tests.helpers import plugin_registered, run_cli


class NoisyRTRL(gradflow.Estimator):
    """A third-party estimator written against the public API only: RTRL plus zero-mean noise
    of standard deviation ``sigma`` on every coordinate (unbiased, variance sigma² · P)."""

    name = "noisy-rtrl"
    description = "RTRL + Gaussian noise (test plugin)"
    requires = frozenset({gradflow.JVP_STATE, gradflow.PARAM_JACOBIAN})
    kind = "unbiased"
    stochastic = True

    class Options(gradflow.EstimatorOptions):
        sigma: float = 0.5

    def state_fields(self) -> list[Any]:
        return [gradflow.PerStream("G", (self.model.n_state, self.layout.n_rec))]

    def step(self, record: gradflow.StepRecord) -> Any:
        xp, m, state = self.xp, self.model, self.state
        state.G = m.jvp_state(record.theta, record.cache, state.G) + m.param_jacobian(
            record.theta, record.cache)
        g = xp.concat([xp.sum(record.delta[:, None, :] @ state.G, axis=(0, 1)), record.grad_out])
        return g + self.options.sigma * self.rng.normal((self.layout.size,), self.dtype)


class OffsetRTRL(NoisyRTRL):
    """Declares itself unbiased, but adds ``offset`` to every coordinate of every step: the
    check must find the bias and say that it contradicts the declaration."""

    name = "offset-rtrl"
    description = "RTRL + noise + a constant offset, declared unbiased (test plugin)"

    class Options(NoisyRTRL.Options):
        offset: float = 0.3

    def step(self, record: gradflow.StepRecord) -> Any:
        return super().step(record) + self.options.offset


@pytest.fixture
def noisy_plugin():
    with plugin_registered("noisy-test-plugin", estimators=[NoisyRTRL, OffsetRTRL]):
        yield


def _model(backend: Any = "numpy") -> gradflow.Model:
    return gradflow.create_model("rnn", backend=backend, n_in=3, n_hidden=6, n_out=2)


def test_exact_estimators_against_rtrl() -> None:
    model = _model()
    same = gradflow.estimator_statistics(model, "rtrl", samples=50, steps=10)
    assert same.samples == 1 and same.sampler == "runs"  # deterministic: run once
    assert len(same.rows) == 11 and same.total.step is None
    for row in same.rows:
        assert row.rel_bias == 0 and row.rel_var == 0 and row.cos_mean == pytest.approx(1)
    # TBPTT with a window of one step is biased: the check says so (on the sum; its rows are
    # per window, not per step)
    tb = gradflow.estimator_statistics(model, "tbptt", estimator_options={"truncation": 1},
                                       samples=10, steps=10)
    assert tb.total.rel_bias > 0.01 and tb.total.rel_bias_se == 0
    full = gradflow.estimator_statistics(model, "tbptt", estimator_options={"truncation": 10},
                                         samples=10, steps=10)
    assert full.total.rel_bias < 1e-12


def test_statistics_of_a_known_estimator(noisy_plugin: None) -> None:
    """A third-party estimator goes through the one-run-per-sample path, and the numbers are
    the ones its construction implies: bias 0 within the standard error, E‖ĝ − g‖² = σ²P."""
    model = _model()
    n, sigma = 400, 0.5
    res = gradflow.estimator_statistics(model, "noisy-rtrl", samples=n, steps=5, seed=3,
                                        estimator_options={"sigma": sigma})
    assert res.sampler == "runs" and res.samples == n
    P = model.layout.size
    for row in res.rows[:-1]:
        assert row.mse == pytest.approx(sigma**2 * P, rel=0.1)
        assert row.rel_var == pytest.approx(sigma**2 * P / row.ref_norm**2, rel=0.1)
        assert row.rel_bias_se == pytest.approx(math.sqrt(sigma**2 * P / n) / row.ref_norm,
                                                rel=0.1)
        assert row.rel_bias <= 3 * row.rel_bias_se
        assert -1 <= row.mean_cos <= row.cos_mean <= 1
    assert res.total.mse == pytest.approx(5 * sigma**2 * P, rel=0.1)  # independent steps


def test_both_samplers_agree() -> None:
    """UORO drawn as streams of one batch, and as one run per sample, estimates the same
    relative variance (different signs, same distribution)."""
    model = _model()
    theta, x, y = random_trajectory(model, 10, seed=1)
    ref = gradflow.frozen_gradients(model, gradflow.create_estimator("rtrl", model), theta, x, y)

    class RunsOnly(type(gradflow.create_estimator("uoro", model))):
        def stream_estimates(self) -> None:
            return None

    fast, how = sample_statistics(model, gradflow.create_estimator("uoro", model), theta, x, y,
                                  ref, 1500, seed=1)
    assert how == "streams"
    slow, how = sample_statistics(model, RunsOnly(model, RunsOnly.Options()), theta, x, y, ref,
                                  1500, seed=2)
    assert how == "runs"
    for a, b in zip(fast, slow, strict=True):
        assert a.rel_var == pytest.approx(b.rel_var, rel=0.2)
        assert a.mean_cos == pytest.approx(b.mean_cos, abs=0.03)


def test_check_uses_raw_estimates_and_restores_the_flag() -> None:
    model = _model()
    est = gradflow.create_estimator("kalman-nobacktrack", model)
    res = gradflow.estimator_statistics(model, est, samples=300, steps=8)
    assert est.precondition is True
    # preconditioned directions ĝ/(J_θ + λ) would be ~1/λ = 1000 times too large
    assert res.total.cos_mean > 0.9 and res.total.rel_bias < 0.5


def test_sampling_in_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """More samples than one batch holds: several batches with different seeds."""
    monkeypatch.setattr(gradflow.verification.statistics, "MAX_STREAMS", 64)
    model = _model()
    res = gradflow.estimator_statistics(model, "nobacktrack", samples=300, steps=6)
    assert res.samples == 300 and res.sampler == "streams"
    monkeypatch.setattr(gradflow.verification.statistics, "MAX_STREAMS", 4096)
    one = gradflow.estimator_statistics(model, "nobacktrack", samples=300, steps=6)
    assert one.total.mse != res.total.mse  # really other draws
    assert one.total.mse == pytest.approx(res.total.mse, rel=0.5)


def test_api_errors() -> None:
    model = _model()
    with pytest.raises(gradflow.GradflowError, match="random estimator"):
        gradflow.estimator_statistics(model, "uoro", reference="nobacktrack")
    with pytest.raises(gradflow.GradflowError, match="samples"):
        gradflow.estimator_statistics(model, "uoro", samples=0)
    with pytest.raises(gradflow.PluginError, match="unknown estimator"):
        gradflow.estimator_statistics(model, "no-such-estimator")


def test_to_dict_is_json_with_none_for_undefined() -> None:
    model = _model()
    res = gradflow.estimator_statistics(model, "uoro", samples=20, steps=3)
    res.rows[0].rel_bias = math.nan
    data = json.loads(json.dumps(res.to_dict(), allow_nan=False))
    assert data["rows"][0]["rel_bias"] is None and data["rows"][-1]["step"] is None


def test_parse_settings() -> None:
    out = parse_settings(["model.n_hidden=8", "estimator.eps=1e-6", "reference.truncation=5",
                          "model.init=orthogonal"])
    assert out == {"model": {"n_hidden": 8, "init": "orthogonal"},
                   "estimator": {"eps": 1e-6}, "reference": {"truncation": 5}}
    for bad in ("n_hidden=8", "model.n_hidden", "optimizer.lr=1", "model.=3"):
        with pytest.raises(gradflow.GradflowError, match=r"TARGET\.OPTION=VALUE"):
            parse_settings([bad])


# -- the command line -------------------------------------------------------------------------
def test_cli_json(backend_name: str) -> None:
    args = ["check", "nobacktrack", "--set", "model.n_hidden=5", "--set", "model.n_in=2",
            "-n", "200", "-T", "7", "--seed", "4", "--backend", backend_name, "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["estimator"] == "nobacktrack" and data["reference"] == "rtrl"
    assert data["samples"] == 200 and data["steps"] == 7 and data["backend"] == backend_name
    assert len(data["rows"]) == 8 and data["sampler"] == "streams"
    model = gradflow.create_model("rnn", backend=backend_name, n_in=2, n_hidden=5)
    api = gradflow.estimator_statistics(model, "nobacktrack", samples=200, steps=7, seed=4)
    assert data["rows"][-1]["rel_var"] == pytest.approx(api.total.rel_var, rel=1e-12)


def test_cli_table() -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["check", "uoro", "--set", "model.n_hidden=4", "-n", "100",
                                 "-T", "5"])
    assert result.exit_code == 0, result.output
    assert "sum" in result.stdout and "rel. MSE" in result.stdout and "E‖ĝ−g‖²/‖g‖²" in \
        result.stdout
    assert "rel. variance" not in result.stdout  # a mean square error, named as one
    assert "│    3 │" not in result.stdout  # the summed row only, by default
    per_step = runner.invoke(app, ["check", "uoro", "--set", "model.n_hidden=4", "-n", "100",
                                   "-T", "5", "--per-step"])
    assert per_step.exit_code == 0 and "│    3 │" in per_step.stdout


@pytest.mark.parametrize("args, message", [
    (["check", "nope"], "unknown estimator 'nope'"),
    (["check", "uoro", "--set", "model.n_hiden=3"], "n_hiden: unknown option"),
    (["check", "uoro", "--set", "bad"], "TARGET.OPTION=VALUE"),
    (["check", "uoro", "--reference", "uoro"], "random estimator"),
    (["check", "uoro", "--samples", "1"], "--samples must be at least 2"),
    (["check", "uoro", "--loss", "hinge"], "--loss must be mse or ce"),
    (["check", "uoro", "--backend", "tpu"], "unknown backend"),
])
def test_cli_errors_are_one_line_with_exit_code_2(args: list[str], message: str,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "argv", ["gradflow", *args])
    with pytest.raises(SystemExit) as exc:
        main()
    assert exc.value.code == 2
    out = capsys.readouterr()
    lines = out.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
    assert "Traceback" not in out.err and out.out == ""


def test_cli_ce_loss_and_the_readout_is_exact() -> None:
    result = CliRunner().invoke(app, ["check", "uoro", "--set", "model.n_out=3", "--loss", "ce",
                                      "-n", "50", "-T", "4", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["loss"] == "ce" and all(r["mean_cos"] > 0 for r in data["rows"])
    # with the recurrent part frozen out (readout-only vs itself) everything is exact
    ro = json.loads(CliRunner().invoke(app, ["check", "readout-only", "-r", "readout-only",
                                             "-n", "5", "--json"]).stdout)
    assert all(r["rel_bias"] == 0 for r in ro["rows"] if r["ref_norm"] > 0)
    assert np.isfinite([r["ref_norm"] for r in ro["rows"]]).all()


# -- the verdict --------------------------------------------------------------------------------
SMALL = ("--set", "model.n_hidden=4", "-T", "8")


def _check(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
           *args: str, exit_code: int = 0) -> tuple[str, dict[str, Any]]:
    """``gradflow check ARGS``: the verdict line of the table output, and the JSON verdict; the
    exit status is ``exit_code`` (1 when the verdict contradicts the declared kind) both ways."""
    code, out, err = run_cli(monkeypatch, capsys, "check", *args)
    assert code == exit_code and "Traceback" not in out + err, err
    last = out.strip().splitlines()[-1]
    assert last.startswith("verdict: ")
    code, out, err = run_cli(monkeypatch, capsys, "check", *args, "--json")
    assert code == exit_code, err
    data = json.loads(out)
    assert {"rows", "samples", "estimator"} <= set(data)  # the old keys are kept
    assert last.endswith(data["verdict"]["text"])
    return last, data["verdict"]


def test_verdict_of_a_stochastic_unbiased_estimator(monkeypatch, capsys) -> None:
    line, v = _check(monkeypatch, capsys, "uoro", "-n", "400", *SMALL)
    assert "uoro is consistent with unbiased (|bias| = " in line
    assert "standard errors over 400 samples" in line and line.endswith("as declared (unbiased)")
    assert v["measured"] == "unbiased" and v["declared"] == "unbiased" and not v["contradicts"]
    assert 0 <= v["z"] < Z_THRESHOLD and v["samples"] == 400 and f"{v['z']:.2f}" in line


def test_verdict_of_an_exact_estimator(monkeypatch, capsys) -> None:
    line, v = _check(monkeypatch, capsys, "rtrl", "-r", "rtrl", *SMALL)
    assert "rtrl is exact (relative bias of the sum 0, below 1e-09)" in line
    assert line.endswith("as declared (exact)") and v["measured"] == "exact"
    assert v["z"] is None and v["rel_bias"] == 0 and not v["contradicts"]


def test_verdict_of_a_biased_estimator(monkeypatch, capsys) -> None:
    line, v = _check(monkeypatch, capsys, "readout-only", *SMALL)
    assert "readout-only is biased (relative bias of the sum " in line
    assert line.endswith("as declared (biased)") and v["measured"] == "biased"
    assert v["rel_bias"] > 0.1 and f"{v['rel_bias']:.3g}" in line
    # a biased estimator in a setting where it has no bias: said, not a contradiction
    line, v = _check(monkeypatch, capsys, "tbptt", "--set", "estimator.truncation=8", *SMALL)
    assert v["measured"] == "exact" and not v["contradicts"]
    assert line.endswith("declared biased: no bias is measurable in this setting")


def test_verdict_contradicting_the_declared_kind(monkeypatch, capsys, noisy_plugin) -> None:
    line, v = _check(monkeypatch, capsys, "offset-rtrl", "-n", "300", *SMALL, exit_code=1)
    assert v["measured"] == "biased" and v["declared"] == "unbiased" and v["contradicts"]
    assert v["z"] > Z_THRESHOLD and f"z = {v['z']:.3g}" in line
    assert line.endswith("this contradicts its declared kind 'unbiased'")
    # the same estimator without the offset: consistent with what it declares
    line, v = _check(monkeypatch, capsys, "noisy-rtrl", "-n", "300", *SMALL)
    assert v["measured"] == "unbiased" and not v["contradicts"]


def test_verdict_rule() -> None:
    """The rule on the numbers: tolerance by dtype, z against its threshold, a zero reference."""
    model = _model()
    result = gradflow.estimator_statistics(model, "uoro", samples=50, steps=4)
    total = result.total
    total.rel_bias, total.rel_bias_se = 3.0, 1.0
    assert verdict(result, "unbiased").measured == "unbiased"
    total.rel_bias = 5.0
    judged = verdict(result, "unbiased")
    assert judged.measured == "biased" and judged.contradicts and judged.z == 5.0
    assert not verdict(result, "biased").contradicts
    total.rel_bias_se, result.samples = 0.0, 1
    total.rel_bias = 1e-6
    assert verdict(result, "exact").measured == "biased"
    result.dtype = "float32"  # rounding of single precision is not a bias
    assert verdict(result, "exact").measured == "exact"
    total.rel_bias = math.nan  # the reference gradient is zero
    judged = verdict(result, "exact")
    assert judged.measured == "undetermined" and not judged.contradicts
    assert json.loads(json.dumps(judged.to_dict(), allow_nan=False))["rel_bias"] is None
