"""``gradflow bench`` and gradflow.tools.bench / gradflow.tools.scaling: the exponent fits on
synthetic data, the JSON fields at tiny sizes, memory properties of the hot paths, and one-line
errors.

No assertion here depends on a timing (timings belong to the asv suite and docs/performance.md):
the CLI runs are checked for their structure and for numbers that do not depend on the clock.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import gradflow
import gradflow.tools.bench as bench_module
from gradflow import ScalingError
from gradflow.tools.bench import (
    CONTROL,
    bench_config,
    make_trainer,
    merge_rounds,
    peak_step_bytes,
    run_bench,
    state_bytes,
)
from gradflow.tools.scaling import fit_scaling, loglog_slope, power_offset_fit
from tests.test_cli_train import cli

P = np.array([4418.0, 17026.0, 66818.0, 264706.0, 1053698.0])  # the rnn's P at n = 64…1024


# -- the fits ------------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [0.5, 1.0, 1.7, 2.0])
def test_a_pure_power_law_gives_its_exponent_to_both_fits(k: float) -> None:
    t = 3e-3 * P ** k
    fit = fit_scaling(P, t)
    assert fit.slope == pytest.approx(k, abs=1e-12)
    assert fit.exponent == pytest.approx(k, abs=2e-4)
    assert fit.overhead == pytest.approx(0.0, abs=1e-6 * t.min())
    assert fit.coefficient == pytest.approx(3e-3, rel=1e-3)
    assert (fit.points, fit.p_min, fit.p_max) == (5, P.min(), P.max())


def test_a_fixed_overhead_flattens_the_slope_but_not_the_exponent() -> None:
    """t = 80 µs + 2 ns · P: O(P), yet the log–log slope is well below 1."""
    t = 80.0 + 2e-3 * P
    fit = fit_scaling(P, t)
    assert fit.slope < 0.85
    assert fit.exponent == pytest.approx(1.0, abs=2e-4)
    assert fit.overhead == pytest.approx(80.0, rel=1e-3)
    assert fit.coefficient == pytest.approx(2e-3, rel=1e-3)
    quadratic = fit_scaling(P[:4], 50.0 + 1e-6 * P[:4] ** 2)
    assert quadratic.exponent == pytest.approx(2.0, abs=2e-4)
    assert quadratic.slope < 1.8


def test_exponent_under_multiplicative_noise() -> None:
    rng = np.random.default_rng(7)
    errors = []
    for _ in range(20):
        t = (60.0 + 2e-3 * P) * np.exp(rng.normal(0.0, 0.03, P.size))
        errors.append(fit_scaling(P, t).exponent - 1.0)
    assert abs(float(np.median(errors))) < 0.03
    assert max(abs(e) for e in errors) < 0.2


def test_slope_is_ordinary_least_squares_on_the_logs() -> None:
    p = np.array([10.0, 100.0, 1000.0])
    t = np.array([1.0, 20.0, 100.0])
    slope, intercept = loglog_slope(p, t)
    want = np.polyfit(np.log(p), np.log(t), 1)
    assert (slope, intercept) == pytest.approx(tuple(want), rel=1e-12)


def test_fit_errors() -> None:
    with pytest.raises(ScalingError, match="at least two different sizes"):
        fit_scaling([100, 100], [1.0, 2.0])
    with pytest.raises(ScalingError, match="positive"):
        fit_scaling([100, 200], [1.0, -2.0])
    with pytest.raises(ScalingError, match="same length"):
        fit_scaling([100, 200, 300], [1.0, 2.0])
    with pytest.raises(ScalingError, match="finite"):
        fit_scaling([100, 200], [1.0, math.nan])
    with pytest.raises(ScalingError, match="three different sizes"):
        power_offset_fit([100, 200], [1.0, 2.0])
    flat = fit_scaling(P, np.full(P.size, 60.0))  # no cost grows with P: k is undetermined
    assert flat.slope == pytest.approx(0.0, abs=1e-12) and flat.exponent is None
    two = fit_scaling([100, 400], [1.0, 4.0])
    assert two.slope == pytest.approx(1.0) and two.exponent is None and two.overhead is None
    assert isinstance(ScalingError("x"), gradflow.GradflowError)


# -- gradflow bench --json at tiny sizes ---------------------------------------------------------
def test_bench_json_has_every_field(monkeypatch, capsys) -> None:
    code, out, err = cli(monkeypatch, capsys, "bench", "-e", "uoro,tbptt,rtrl", "-n", "4,6,8",
                         "--repeat", "2", "--rounds", "2", "--min-time", "0.001", "--truncation",
                         "4", "--max-step-ms", "0", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["backend"] == "numpy" and data["dtype"] == "float64" and data["batch"] == 1
    assert (data["task"], data["model"], data["forward_only"]) == ("add", "rnn", "readout-only")
    assert data["estimators"] == ["uoro", "tbptt", "rtrl"] and data["sizes"] == [4, 6, 8]
    assert data["threads"] == 1 and data["truncation"] == 4 and data["rounds"] == 2
    assert {"cpu", "cpu_count", "python", "numpy", "blas", "platform"} <= set(data["machine"])
    assert "median" in data["method"]
    rows = {(r["estimator"], r["n"]): r for r in data["rows"]}
    assert set(rows) == {(e, n) for e in ("uoro", "tbptt", "rtrl") for n in (4, 6, 8)}
    assert data["skipped"] == []
    for (name, n), row in rows.items():
        assert row["P"] == n * n + 5 * n + 2 and row["P_rec"] == n * n + 3 * n
        assert row["blocks"] == 4 and len(row["block_us"]) == 4
        assert row["us_min"] <= row["us_per_step"] <= row["us_max"]
        assert row["us_per_step"] == pytest.approx(float(np.median(row["block_us"])))
        assert row["ratio_to_forward"] > 0 and row["peak_step_bytes"] > 0 and row["finite"]
        assert row["steps_per_block"] % (4 if name == "tbptt" else 1) == 0
        assert row["state_bytes_per_param"] == pytest.approx(row["state_bytes"] / row["P"])
        assert row["state_floats_per_param"] == pytest.approx(row["state_bytes"] / row["P"] / 8)
    # the rank-one state is ṽ (n) and w̃ (P_rec): exactly (n + P_rec) / P floats per parameter
    for n in (4, 6, 8):
        assert rows["uoro", n]["state_bytes"] == 8 * (n + n * n + 3 * n)
    assert set(data["fits"]) == {"uoro", "tbptt", "rtrl", CONTROL}
    # the memory control: one SGD update of P numbers per size, timed like a step
    assert [(c["n"], c["P"]) for c in data["control"]] == [(n, n * n + 5 * n + 2)
                                                           for n in (4, 6, 8)]
    for c in data["control"]:
        assert len(c["block_us"]) == 4 and c["us"] == pytest.approx(np.median(c["block_us"]))
    assert data["fits"][CONTROL]["points"] == 3
    for name in ("uoro", "tbptt"):
        fit = data["fits"][name]
        assert fit["points"] == 3 and {"slope", "exponent", "overhead"} <= set(fit)
        assert fit["p_min"] == 4 * 4 + 22 and fit["p_max"] == 8 * 8 + 42
    assert data["fits"]["rtrl"]["points"] == 3


def test_a_slow_step_skips_its_size_and_the_larger_ones() -> None:
    """Whatever the estimator: a step slower than max_step_ms is not measured, nor larger n."""
    result = run_bench(["rtrl"], [4, 6], repeat=1, min_time=0.001, max_step_ms=1e-6)
    assert result.rows == [] and set(result.fits) == {CONTROL}
    skipped = {(s["estimator"], s["n"]): s["reason"] for s in result.skipped}
    assert set(skipped) == {(e, n) for e in ("readout-only", "rtrl") for n in (4, 6)}
    assert skipped["rtrl", 4].startswith("one step took") and "--max-step-ms 1e-06" in \
        skipped["rtrl", 4]
    assert skipped["rtrl", 6].startswith("skipped with n = 4: one step took")


def test_a_state_that_does_not_fit_in_memory_is_never_built(monkeypatch) -> None:
    """The declared state is counted before anything is allocated."""
    monkeypatch.setattr(bench_module, "free_memory", lambda backend: 4 * 8 * 80)
    result = run_bench(["uoro"], [4, 8], repeat=1, min_time=0.001)
    assert [(r.estimator, r.n) for r in result.rows] == [("uoro", 4)]
    (skip,) = [s for s in result.skipped if s["estimator"] == "uoro"]
    assert skip["n"] == 8 and "exceeds 25% of the free memory" in skip["reason"]


def test_bench_table_and_fit_range(monkeypatch, capsys) -> None:
    code, out, err = cli(monkeypatch, capsys, "bench", "-e", "readout-only,nobacktrack", "-n",
                         "4,5,6,8", "--repeat", "1", "--min-time", "0.001", "--fit-min-n", "5")
    assert code == 0, err
    assert "µs/step" in out and "nobacktrack" in out and "readout-only" in out
    assert "5…8" in out  # the fits use n ≥ 5
    result = run_bench(["nobacktrack"], [4, 5, 6], repeat=1, min_time=0.001, fit_min_n=5)
    assert [r.estimator for r in result.rows] == ["nobacktrack"] * 3  # baseline not listed
    assert result.fits["nobacktrack"].points == 2
    assert all(r.ratio_to_forward and r.ratio_to_forward > 0 for r in result.rows)


def test_rounds_merge_all_blocks() -> None:
    result = run_bench(["uoro"], [4], repeat=1, min_time=0.001)
    row = result.rows[0]
    other = type(row)(**{**row.__dict__, "block_us": [1.0, 2.0], "blocks": 2})
    merged = merge_rounds([row, other])
    assert merged.block_us == [*row.block_us, 1.0, 2.0] and merged.blocks == 3
    assert merged.us_per_step == float(np.median(merged.block_us))
    assert merged.us_min == 1.0


# -- memory: properties of the hot paths, not timings ------------------------------------------
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("n", [8, 32])
def test_state_bytes_per_parameter(n: int, dtype: str) -> None:
    """B = 1: UORO and NoBackTrack keep ṽ, w̃ (≤ 2 floats per parameter), Kalman-NoBackTrack
    also J_h and J_θ (≤ 4), RTRL its n × P_rec sensitivity."""
    item = 8 if dtype == "float64" else 4
    p, p_rec = n * n + 5 * n + 2, n * n + 3 * n
    expected = {"uoro": n + p_rec, "nobacktrack": n + p_rec,
                "kalman-nobacktrack": 2 * n + p_rec + p, "rtrl": n * p_rec, "readout-only": 0}
    bounds = {"uoro": 2.0, "nobacktrack": 2.0, "kalman-nobacktrack": 4.0}
    for name, floats in expected.items():
        trainer = make_trainer(name, n, dtype=dtype)
        for _ in range(3):
            trainer.advance()
        nbytes = state_bytes(trainer)
        assert nbytes == floats * item, name
        if name in bounds:
            assert nbytes / p / item <= bounds[name], name


def test_tbptt_state_is_its_window_of_caches() -> None:
    n, B, k = 16, 3, 5
    trainer = make_trainer("tbptt", n, batch=B, truncation=k)
    for _ in range(2 * k + 2):
        trainer.advance()
    # k stored steps of h, x (2 inputs), s and δ per stream, the readout sum g_out, and the mask
    # of the streams at a sequence boundary (B booleans)
    assert state_bytes(trainer) == 8 * (k * B * (n + 2 + n + n) + 2 * n + 2) + B


@pytest.mark.parametrize("name,limit", [("readout-only", 1.5), ("tbptt", 1.5), ("uoro", 1.5),
                                        ("nobacktrack", 1.5), ("kalman-nobacktrack", 2.5)])
def test_a_step_allocates_about_one_parameter_vector(name: str, limit: float) -> None:
    """B = 1, n = 256: the temporaries of one step (tracemalloc's peak) hold at most ``limit`` × P
    floats: one outer-product block or the optimizer's step, not a new θ, w̃ and direction."""
    trainer = make_trainer(name, 256)
    for _ in range(20):
        trainer.advance()
    p = trainer.parts.model.layout.size
    assert peak_step_bytes(trainer) <= limit * 8 * p


def test_tbptt_sums_the_streams_without_a_per_stream_gradient() -> None:
    """B = 8: the summed VJP never forms the (B, P_rec) per-stream gradients."""
    trainer = make_trainer("tbptt", 128, batch=8)
    for _ in range(20):
        trainer.advance()
    p = trainer.parts.model.layout.size
    assert peak_step_bytes(trainer) <= 2.0 * 8 * p  # per-stream rows would be 8 × P floats


def test_peak_step_bytes_works_on_array_api_strict() -> None:
    trainer = make_trainer("uoro", 16, backend="array_api_strict")
    trainer.advance()
    assert peak_step_bytes(trainer) > 0
    assert state_bytes(trainer) == 8 * (16 + 16 * 16 + 48)


def test_bench_config_is_the_asv_suite_config() -> None:
    """benchmarks/common.py writes the same configuration with the public API only."""
    from benchmarks.common import config_sets

    for name in ("readout-only", "tbptt", "uoro", "rtrl"):
        for n, B, dtype in ((32, 1, "float64"), (64, 32, "float32")):
            mine = bench_config(name, n, B, dtype=dtype)
            theirs = gradflow.build_config(sets=config_sets(name, n, B, dtype))
            assert mine == theirs, (name, n, B, dtype)


# -- errors: one line, exit code 2 ------------------------------------------------------------
@pytest.mark.parametrize("args,message", [
    (["-e", "bptt"], "estimator 'bptt' is not online"),
    (["-e", "nope"], "unknown estimator 'nope'"),
    (["-n", "0,4"], "not a positive number"),
    (["-n", "4,x"], "'x' is not a whole number"),
    (["-n", ","], "needs a comma-separated list"),
    (["--repeat", "0"], "repeat must be at least 1"),
    (["--rounds", "0"], "rounds must be at least 1"),
    (["--min-time", "0"], "min-time must be positive"),
    (["--truncation", "0"], "truncation must be at least 1"),
    (["--batch", "0"], "batch must be at least 1"),
    (["--dtype", "float16"], "unknown dtype 'float16'"),
    (["--backend", "torch"], "unknown backend 'torch'"),
    (["--threads", "-1"], "must not be negative"),
])
def test_errors_are_one_line_with_exit_code_2(monkeypatch, capsys, args, message) -> None:
    code, out, err = cli(monkeypatch, capsys, "bench", "-n", "4", *args)
    assert code == 2 and out == ""
    assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1


def test_cupy_without_a_gpu_is_one_line(monkeypatch, capsys) -> None:
    from tests.conftest import CUPY

    if CUPY:
        pytest.skip("CuPy and a GPU are available here")
    code, _, err = cli(monkeypatch, capsys, "bench", "--backend", "cupy", "-n", "4")
    assert code == 2 and err.startswith("error: backend 'cupy'")
    assert len(err.strip().splitlines()) == 1
