"""``gradflow bench`` and gradflow.tools.bench / gradflow.tools.scaling: the exponent fits on
synthetic data, the JSON fields at tiny sizes (calls per step, the memory-bandwidth bound, the
marginal fits), the tables at 80 and 120 columns, memory properties of the hot paths, and
one-line errors.

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
    MARGINAL_MIN_N,
    BenchRow,
    bench_config,
    bound_bytes,
    count_plan,
    default_estimators,
    make_trainer,
    marginal_fit,
    marginal_fits,
    merge_rounds,
    peak_step_bytes,
    run_bench,
    state_bytes,
)
from gradflow.tools.scaling import fit_scaling, loglog_slope, power_offset_fit
from tests.test_cli_train import cli
from tests.test_cli_usability import cli as cli_at

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
    # the rank-one state is ṽ (n), w (P_rec) and the scale σ of w̃ = σ w: n + P_rec + 1 floats
    for n in (4, 6, 8):
        assert rows["uoro", n]["state_bytes"] == 8 * (n + n * n + 3 * n + 1)
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
    """B = 1: UORO and NoBackTrack keep ṽ, w and the scale σ of w̃ = σ w (≤ 2 floats per
    parameter), Kalman-NoBackTrack also J_h and J_θ (≤ 4), RTRL its n × P_rec sensitivity."""
    item = 8 if dtype == "float64" else 4
    p, p_rec = n * n + 5 * n + 2, n * n + 3 * n
    expected = {"uoro": n + p_rec + 1, "nobacktrack": n + p_rec + 1,
                "kalman-nobacktrack": 2 * n + p_rec + p + 1, "rtrl": n * p_rec, "readout-only": 0}
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
    assert state_bytes(trainer) == 8 * (16 + 16 * 16 + 48 + 1)


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
    (["--count-budget", "-1"], "must not be negative"),
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


# -- calls per step, the memory-bandwidth bound, the marginal fits -----------------------------
def _estimator(name: str) -> type[gradflow.Estimator]:
    return gradflow.get_registry().get("estimator", name).cls


def _expected_bound(row: dict, itemsize: int, update: str, reads: int) -> int:
    """The rule of the bound, written out: θ read and written by the update (all of it, or
    θ_out only), θ_rec read ``reads`` times, the state read and written once."""
    p_update = row["P"] if update == "all" else row["P"] - row["P_rec"]
    return itemsize * (2 * p_update + reads * row["P_rec"]) + 2 * row["state_bytes"]


def test_bench_json_reports_calls_bound_and_marginal(monkeypatch, capsys) -> None:
    code, out, err = cli(monkeypatch, capsys, "bench", "-e", "readout-only,uoro,rtrl,tbptt",
                         "-n", "8,16", "--repeat", "1", "--min-time", "0.005", "--truncation",
                         "4", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["count_budget"] > 0 and data["marginal_min_n"] == MARGINAL_MIN_N == 128
    bandwidth = {b["n"]: b for b in data["bandwidth"]}
    assert set(bandwidth) == {8, 16}
    for n, b in bandwidth.items():
        assert b["P"] == n * n + 5 * n + 2 and b["bytes_per_pass"] == 3 * 8 * b["P"]
        assert b["us"] == pytest.approx(float(np.median(b["block_us"])))
        assert b["bytes_per_s"] == pytest.approx(b["bytes_per_pass"] / (b["us"] * 1e-6))
    rows = {(r["estimator"], r["n"]): r for r in data["rows"]}
    for (name, n), row in rows.items():
        # calls: counted on the numpy backend, over whole intervals (TBPTT's 4 steps)
        assert row["calls_note"] is None, row["calls_note"]
        assert row["numpy_calls_per_step"] > 10 and row["python_calls_per_step"] > 10
        assert row["builtin_calls_per_step"] > 0
        assert row["update_interval"] == (4 if name == "tbptt" else 1)
        # the bound: its bytes at the bandwidth of this size
        assert row["bandwidth_bytes_per_s"] == bandwidth[n]["bytes_per_s"]
        assert row["bound_us"] == pytest.approx(row["bound_bytes"]
                                                / row["bandwidth_bytes_per_s"] * 1e6)
        assert row["ratio_to_bound"] == pytest.approx(row["us_per_step"] / row["bound_us"])
        # the rule, exactly: θ_rec read twice by the estimators that propagate through it
        if name == "readout-only":  # forward-only: θ_out updated, θ_rec read by the forward step
            assert row["state_bytes"] == 0
            assert row["bound_bytes"] == _expected_bound(row, 8, "out", 1)
        else:  # uoro (rank-one: jvp_state, vjp), rtrl (jvp_state), tbptt (vjp)
            assert row["state_bytes"] > 0
            assert row["bound_bytes"] == _expected_bound(row, 8, "all", 2), name
    # the rank-one bound at n = 8 in numbers: P = 106, P_rec = 88, state = n + P_rec + 1 floats
    assert rows["uoro", 8]["bound_bytes"] == 8 * (2 * 106 + 2 * 88) + 2 * 8 * (8 + 88 + 1)
    # the marginal fits: no size n ≥ 128 here, and none for the forward-only step
    assert data["fits"]["uoro"]["marginal"] == {
        "sizes": [], "P": [], "us": [], "fit": None,
        "note": "needs two sizes n ≥ 128 (this run has 0)"}
    assert data["fits"]["readout-only"]["marginal"]["note"].startswith("n/a")
    assert "marginal" not in data["fits"][CONTROL]


def test_the_bound_of_uoro_at_1024_is_six_passes_over_theta() -> None:
    """The issue's figure: UORO, n = 1024, B = 1, float64: 8 · (2P + 2P_rec) + 2 · 8 · (n + P_rec)
    bytes ≈ 6 · 8 · P ≈ 50.5 MB."""
    n = 1024
    p, p_rec = n * n + 5 * n + 2, n * n + 3 * n
    nbytes = bound_bytes(_estimator("uoro"), p, p_rec, 8, 8 * (n + p_rec))
    assert nbytes == 50_528_288 and nbytes / (6 * 8 * p) == pytest.approx(1.0, abs=2e-3)
    assert bound_bytes(_estimator("readout-only"), p, p_rec, 4, 0) == 4 * (2 * (p - p_rec) + p_rec)
    assert bound_bytes(_estimator("tbptt"), p, p_rec, 4, 100) == 4 * (2 * p + 2 * p_rec) + 200


def test_bound_in_float32_uses_its_itemsize() -> None:
    result = run_bench(["uoro"], [8], dtype="float32", repeat=1, min_time=0.001, count_budget=0)
    (row,) = result.rows
    assert row.state_bytes == 4 * (8 + 88 + 1)
    assert row.bound_bytes == 4 * (2 * row.P + 2 * row.P_rec) + 2 * row.state_bytes
    assert result.bandwidth[0]["bytes_per_pass"] == 3 * 4 * row.P
    assert row.calls_note == "not counted (count budget 0)" and row.numpy_calls_per_step is None


def test_calls_are_not_counted_on_array_api_strict() -> None:
    result = run_bench(["uoro"], [8], backend="array_api_strict", repeat=1, min_time=0.001)
    (row,) = result.rows
    assert (row.numpy_calls_per_step, row.python_calls_per_step,
            row.builtin_calls_per_step) == (None, None, None)
    assert "numpy backend only" in row.calls_note
    # the bound is measured there all the same, in that backend's namespace
    assert row.bound_us > 0 and row.ratio_to_bound > 0
    assert row.bound_bytes == 8 * (2 * row.P + 2 * row.P_rec) + 2 * row.state_bytes


def test_a_count_over_its_budget_is_not_made() -> None:
    """A count that would take longer than the budget is skipped and says why, not estimated."""
    result = run_bench(["tbptt"], [8], repeat=1, min_time=0.001, truncation=4,
                       count_budget=1e-9)
    (row,) = result.rows
    assert row.numpy_calls_per_step is None and row.python_calls_per_step is None
    steps, warmup = count_plan(4)
    assert (steps, warmup) == (200, 8)  # whole intervals, ≥ 8 of them and ≥ 200 steps
    assert row.calls_note.startswith("not counted: counting would take at least")
    assert f"2 × {steps + warmup} steps" in row.calls_note
    assert count_plan(16) == (208, 32) and count_plan(1) == (200, 2)
    assert count_plan(50) == (400, 100)


def test_marginal_fit_of_synthetic_points() -> None:
    """m = t − t_fwd, fitted over n ≥ 128 only; exact on an exact power law."""
    ns = [64, 128, 256, 512, 1024, 2048]
    points = [(n, n * n + 5 * n + 2, 40.0 + 1e-3 * n ** 2 + 3e-4 * (n * n + 5 * n + 2), 40.0
               + 1e-3 * n ** 2) for n in ns]
    fit = marginal_fit(points)
    assert fit.sizes == ns[1:] and fit.P == [n * n + 5 * n + 2 for n in ns[1:]]
    assert fit.us == pytest.approx([3e-4 * p for p in fit.P])
    assert fit.note is None and fit.fit.slope == pytest.approx(1.0, abs=1e-12)
    assert fit.fit.points == 5 and fit.fit.exponent == pytest.approx(1.0, abs=1e-3)
    assert marginal_fit(points, min_n=1024).fit.points == 2
    one = marginal_fit(points[:2])
    assert one.fit is None and one.note == "needs two sizes n ≥ 128 (this run has 1)"
    slower = [(n, p, t, t_fwd) for n, p, t, t_fwd in points]
    slower[2] = (256, slower[2][1], 10.0, 20.0)  # not slower than the forward-only step
    bad = marginal_fit(slower)
    assert bad.fit is None and bad.note.endswith("at n = 256") and bad.us[1] == -10.0


def _row(estimator: str, n: int, us: float) -> BenchRow:
    return BenchRow(estimator=estimator, n=n, P=n * n + 5 * n + 2, P_rec=n * n + 3 * n,
                    us_per_step=us, us_min=us, us_max=us, steps_per_block=1, blocks=1,
                    block_us=[us], state_bytes=0, state_bytes_per_param=0.0,
                    state_floats_per_param=0.0, peak_step_bytes=None)


def test_marginal_fits_take_the_forward_only_step_at_the_same_n() -> None:
    rows = [_row("readout-only", n, 50.0 + n) for n in (64, 128, 512, 2048)]
    rows += [_row("uoro", n, 60.0 + 3 * n) for n in (64, 128, 256, 512, 2048)]
    fits = marginal_fits(rows, "readout-only")
    assert fits["readout-only"].fit is None and fits["readout-only"].note.startswith("n/a")
    uoro = fits["uoro"]  # n = 256 has no forward-only step: left out; n = 64 < 128: left out
    assert uoro.sizes == [128, 512, 2048] and uoro.us == [10.0 + 2 * n for n in (128, 512, 2048)]
    assert uoro.fit.slope == pytest.approx(loglog_slope(uoro.P, uoro.us)[0])
    assert marginal_fits(rows, "readout-only", fit_min_n=512)["uoro"].sizes == [512, 2048]


def test_the_marginal_fit_of_a_run(monkeypatch, capsys) -> None:
    """Two sizes n ≥ 128: the marginal cost of each size is the difference of the two rows, and
    it is fitted (or says why not); the CLI shows it."""
    code, out, err = cli(monkeypatch, capsys, "bench", "-e", "readout-only,tbptt", "-n",
                         "8,128,144", "--repeat", "1", "--min-time", "0.002", "--truncation", "4",
                         "--count-budget", "0", "--json")
    assert code == 0, err
    data = json.loads(out)
    rows = {(r["estimator"], r["n"]): r for r in data["rows"]}
    marginal = data["fits"]["tbptt"]["marginal"]
    assert marginal["sizes"] == [128, 144] and marginal["P"] == [rows["tbptt", n]["P"]
                                                                  for n in (128, 144)]
    assert marginal["us"] == pytest.approx([rows["tbptt", n]["us_per_step"]
                                            - rows["readout-only", n]["us_per_step"]
                                            for n in (128, 144)])
    if min(marginal["us"]) > 0:
        assert marginal["note"] is None and marginal["fit"]["points"] == 2
        assert marginal["fit"]["slope"] == pytest.approx(
            loglog_slope(marginal["P"], marginal["us"])[0])
    else:  # a noisy machine: the step was not slower than the forward-only one at some n
        assert marginal["fit"] is None and "not slower" in marginal["note"]
    assert data["fits"]["tbptt"]["points"] == 3  # the plain fit keeps every size


def test_bench_text_shows_the_new_columns(monkeypatch, capsys) -> None:
    code, out, err = cli_at(monkeypatch, capsys, "bench", "-e", "readout-only,uoro", "-n",
                            "8,128,144", "--repeat", "1", "--min-time", "0.002", columns=120)
    assert code == 0, err
    for header in ("µs/step", "× fwd", "bound µs", "× bound", "NumPy", "calls", "Python",
                   "Δ sizes", "Δ slope", "Δ k", "bandwidth of x += y: n=8 "):
        assert header in out, header
    lines = out.splitlines()
    (uoro_fit,) = [line for line in lines if line.split()[:2] == ["uoro", "8…144"]]
    assert "128…144" in uoro_fit
    (forward_fit,) = [line for line in lines if line.split()[:2] == ["readout-only", "8…144"]]
    assert forward_fit.split()[-3:] == ["n/a", "n/a", "n/a"]
    first = next(line.split() for line in lines if line.split()[:2] == ["uoro", "8"])
    assert first[-1].replace(",", "").isdigit()  # its NumPy calls, counted


@pytest.mark.parametrize("columns", [80, 120])
def test_bench_tables_keep_every_estimator_name_whole(columns: int, monkeypatch,
                                                     capsys) -> None:
    """Every online estimator, named in full in the step table, the memory table and the fits,
    whatever the width; no line wider than the terminal."""
    code, out, err = cli_at(monkeypatch, capsys, "bench", "-n", "4,6", "--repeat", "1",
                            "--min-time", "0.001", "--count-budget", "0", columns=columns)
    assert code == 0, err
    lines = out.splitlines()
    assert all(len(line) <= columns for line in lines), max(lines, key=len)
    names = default_estimators()
    assert len(names) >= 6 and "kalman-nobacktrack" in names
    for name in names:
        rows = [line for line in lines if line.split()[:1] == [name]]
        assert len(rows) == 2 + 2 + 1, (name, rows)  # two sizes, two tables; one fit
    assert any(line.startswith(CONTROL + " ") for line in lines)
    assert "…" not in "".join(line.split()[0] for line in lines if line.split())


# -- the asv suite and the tables of docs/performance.md ------------------------------------
def test_asv_tracks_the_marginal_exponent_and_the_calls() -> None:
    """benchmarks/scaling.py's Marginal on a synthetic cache (every step 40 µs plus a multiple of
    the forward-only step's O(P) part: each marginal cost is exactly ∝ P), benchmarks/calls.py's
    Calls on a real count."""
    from benchmarks import calls, scaling

    assert scaling.MARGINAL_SIZES == [128, 256, 512, 1024, 2048]
    assert "readout-only" not in scaling.Marginal.params[0]
    cache = {f"{name}/{n}": 40.0 + (1 + i) * 3e-3 * scaling._params(n)
             for i, name in enumerate(scaling.LINEAR) for n in scaling.MEASURED_SIZES}
    assert scaling.LINEAR[0] == "readout-only"
    marginal = scaling.Marginal()
    for name in scaling.Marginal.params[0]:
        marginal.setup(cache, name)
        assert marginal.track_marginal_slope(cache, name) == pytest.approx(1.0, abs=1e-12)
        assert marginal.track_marginal_exponent(cache, name) == pytest.approx(1.0, abs=1e-3)
    with pytest.raises(NotImplementedError):
        scaling.Marginal().setup({}, "uoro")
    counted = calls.Calls()
    counted.setup("uoro")
    want = bench_module.count_step_calls("uoro", calls.N)
    assert counted.track_numpy_calls_per_step("uoro") == want.numpy_calls > 0
    assert counted.track_python_calls_per_step("uoro") == want.python_calls > 0


def test_tables_render_the_bound_the_calls_and_the_marginal_fits(tmp_path) -> None:
    from benchmarks import tables

    data = run_bench(["readout-only", "uoro"], [4, 128, 144], repeat=1, min_time=0.001,
                     count_budget=1e-9).to_dict()
    data["rows"][0]["numpy_calls_per_step"] = 35.0  # one counted row: its cell shows the count
    source = tmp_path / "bench.json"
    source.write_text(json.dumps(data))
    text = tables.render(source)
    assert "memory-bandwidth bound" in text and "t − t_fwd: sizes n" in text
    (forward,) = [line for line in text.splitlines()
                  if line.startswith("| readout-only |") and "× / 35 |" in line]
    assert forward.count("× / –") == 2  # the other sizes were not counted
    (fit,) = [line for line in text.splitlines() if line.startswith("| uoro | 4…144 |")]
    marginal = data["fits"]["uoro"]["marginal"]["fit"]  # None where uoro was not slower
    want = " | – | – | – |" if marginal is None else f" | 128…144 | {marginal['slope']:.2f} | – |"
    assert fit.endswith(want)
