"""Smoke test of the asv suite (benchmarks/): every benchmark runs once at its smallest size.

CI also runs the suite through asv itself (see the README, "Benchmarks"); this test keeps it
importable and runnable in the ordinary test run. Nothing here asserts a timing.
"""

from __future__ import annotations

import pytest

import gradflow
from benchmarks import common, scaling, step


def test_every_online_step_benchmark_runs_at_the_smallest_size() -> None:
    bench = step.OnlineStep()
    n, batch, dtype = common.SIZES[0], common.BATCHES[0], common.DTYPES[0]
    for name in common.ESTIMATORS:
        bench.setup(name, n, batch, dtype)
        try:
            start = bench.trainer.step
            bench.time_step(name, n, batch, dtype)
            bench.peakmem_step(name, n, batch, dtype)
            assert bench.trainer.step == start + 1 + common.WINDOW
        finally:
            bench.teardown(name, n, batch, dtype)


def test_the_grid_covers_the_issue_and_skips_only_large_cubic_and_quartic() -> None:
    assert common.SIZES == [32, 64, 128, 256, 512, 1024]
    assert common.BATCHES == [1, 32] and common.DTYPES == ["float64", "float32"]
    assert set(common.ESTIMATORS) == set(gradflow.get_registry().names("estimator")) - {"bptt"}
    skipped = [(e, n, b) for e in common.ESTIMATORS for n in common.SIZES
               for b in common.BATCHES if common.skip_reason(e, n, b)]
    assert {e for e, _, _ in skipped} == {"rtrl", *common.CUBIC}
    assert ("rtrl", 128, 1) not in skipped and ("rtrl", 256, 1) in skipped
    assert ("ok", 512, 1) not in skipped and ("ok", 1024, 1) in skipped
    with pytest.raises(NotImplementedError, match="rtrl is benchmarked up to n = 128"):
        step.OnlineStep().setup("rtrl", 256, 1, "float64")


def test_tracked_numbers_from_a_synthetic_cache() -> None:
    """The track_ benchmarks read a cache of median µs per step: here a synthetic one, O(P) with
    an overhead for the linear estimators and O(P²) for RTRL."""
    cache = {f"{name}/{n}": 40.0 + 3e-3 * scaling._params(n)
             for name in scaling.LINEAR for n in scaling.LINEAR_SIZES}
    cache.update({f"rtrl/{n}": 40.0 + 1e-6 * scaling._params(n) ** 2
                  for n in scaling.FIT_SIZES["rtrl"]})
    fits = scaling.Scaling()
    for name in ("uoro", "rtrl"):
        fits.setup(cache, name)
        want = 2.0 if name == "rtrl" else 1.0
        assert fits.track_exponent(cache, name) == pytest.approx(want, abs=1e-3)
        assert fits.track_loglog_slope(cache, name) < want
    ratio = scaling.Ratio()
    cache["uoro/64"] = 2.0 * cache["readout-only/64"]
    ratio.setup(cache, "uoro", 64)
    assert ratio.track_ratio_to_forward(cache, "uoro", 64) == pytest.approx(2.0)
    with pytest.raises(NotImplementedError):
        scaling.Scaling().setup({}, "uoro")


def test_state_memory_and_a_real_measurement(monkeypatch: pytest.MonkeyPatch) -> None:
    mem = scaling.StateMemory()
    mem.setup("uoro")
    n = mem.N
    assert mem.track_floats_per_param("uoro") == pytest.approx(
        (n + n * n + 3 * n + 1) / (n * n + 5 * n + 2))
    monkeypatch.setattr(scaling, "MIN_TIME", 0.001)  # the structure, not the numbers
    measured = scaling._measure(["readout-only", "uoro"], [4, 6])
    assert set(measured) == {"readout-only/4", "readout-only/6", "uoro/4", "uoro/6"}
    assert all(value > 0 for value in measured.values())


def test_tables_and_plot_scripts(tmp_path) -> None:
    """benchmarks/tables.py renders the JSON of the runs in docs/performance/, and
    benchmarks/plot_scaling.py draws a PNG from a fresh tiny run."""
    import json
    from pathlib import Path

    from benchmarks import plot_scaling, tables
    from gradflow.tools.bench import run_bench

    docs = sorted(Path(__file__).parents[1].joinpath("docs", "performance").glob("*.json"))
    assert docs, "docs/performance/ holds the JSON of the measured runs"
    for path in docs:
        text = tables.render(path)
        assert "| estimator |" in text and "k of t = t₀ + c·P^k" in text
    data = run_bench(["uoro"], [4, 6, 8], repeat=1, min_time=0.001).to_dict()
    source = tmp_path / "bench.json"
    source.write_text(json.dumps(data))
    assert "| uoro |" in tables.render(source)
    pytest.importorskip("matplotlib")
    out = tmp_path / "scaling.png"
    plot_scaling.main([str(source), "--merge", "--out", str(out)])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_asv_check_finds_no_problem() -> None:
    """`asv check`: every benchmark's signature fits its parameters, and no helper in
    benchmarks/ is mistaken for a benchmark (asv collects every time_/peakmem_/track_... name)."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    asv = Path(sys.executable).with_name("asv")
    if not asv.exists() and shutil.which("asv") is None:
        pytest.skip("asv is not installed (pip install -e '.[dev]')")
    root = Path(__file__).parents[1]
    proc = subprocess.run([str(asv) if asv.exists() else "asv", "check", "--python=same"],
                          cwd=root, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "No problems found" in proc.stdout, proc.stdout + proc.stderr
