"""What every benchmark builds: a trainer of the benchmarked configuration, warmed up.

The configuration is that of :func:`gradflow.tools.bench.bench_config` (a test checks that they
are the same), written here with the public API only (``gradflow.build_config``,
``gradflow.Trainer``) so that asv can also benchmark commits older than ``gradflow.tools.bench``
(``asv continuous`` builds the two commits it compares and runs *this* suite on both).
"""

from __future__ import annotations

from typing import Any

#: the estimators that run on an endless stream (bptt cannot: it updates only when every stream
#: ends a sequence, which the add task never does, and its memory grows without bound)
ESTIMATORS = ["readout-only", "tbptt", "uoro", "nobacktrack", "kalman-nobacktrack", "rtrl",
              "snap", "rflo", "e-prop", "kf-rtrl", "r-kf-rtrl", "ok"]
SIZES = [32, 64, 128, 256, 512, 1024]
BATCHES = [1, 32]
DTYPES = ["float64", "float32"]
#: one TBPTT window: every timing sample runs this many steps, so that each contains exactly one
#: of TBPTT's updates whatever the phase
WINDOW = 16
#: as gradflow.tools.bench: small, so that no benchmarked run diverges
LEARNING_RATE = 1e-5
#: RTRL is O(n²P) time and O(nP) memory per stream: up to n = 128, and n = 64 with 32 streams
#: (n = 128 × 32 streams would hold 0.55 GB of sensitivities and take about a second per step)
RTRL_MAX_N = {1: 128, 32: 64}
#: the Kronecker-factored estimators are O(n³) per stream (n = 512: about 8 ms a step): up to
#: n = 512, and n = 128 with 32 streams
CUBIC = ("kf-rtrl", "r-kf-rtrl", "ok")
CUBIC_MAX_N = {1: 512, 32: 128}


def skip_reason(estimator: str, n: int, batch: int) -> str | None:
    """Why a combination is not benchmarked, or ``None``."""
    if estimator == "rtrl" and n > RTRL_MAX_N.get(batch, 64):
        return f"rtrl is benchmarked up to n = {RTRL_MAX_N.get(batch, 64)} with B = {batch}"
    if estimator in CUBIC and n > CUBIC_MAX_N.get(batch, 128):
        return (f"{estimator} is O(n³): benchmarked up to n = {CUBIC_MAX_N.get(batch, 128)} "
                f"with B = {batch}")
    return None


def config_sets(estimator: str, n: int, batch: int = 1, dtype: str = "float64",
                backend: str = "numpy", truncation: int = WINDOW, seed: int = 0) -> list[str]:
    """``--set``-style overrides of the benchmarked configuration."""
    sets = [
        f'run.backend="{backend}"', f'run.dtype="{dtype}"', f"run.batch={int(batch)}",
        f"run.seed={int(seed)}", 'model.name="rnn"', f"model.n_hidden={int(n)}",
        'task.name="add"', f'estimator.name="{estimator}"', 'optimizer.name="sgd"',
        f"optimizer.lr={LEARNING_RATE}", 'optimizer.schedule="constant"',
    ]
    if estimator == "tbptt":
        sets.append(f"estimator.truncation={int(truncation)}")
    return sets


def make_trainer(estimator: str, n: int, batch: int = 1, dtype: str = "float64",
                 warmup: int = WINDOW) -> Any:
    """A trainer of the benchmarked configuration, run for ``warmup`` steps."""
    import gradflow

    trainer = gradflow.Trainer(gradflow.build_config(sets=config_sets(estimator, n, batch,
                                                                      dtype)))
    for _ in range(warmup):
        trainer.advance()
    return trainer


def one_blas_thread() -> Any:
    """Limit BLAS to one thread, as the trainer does (returns the limiter to keep alive)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


def bench_module() -> Any:
    """The module of ``gradflow bench`` (``gradflow.tools.bench``; ``gradflow.bench`` on commits
    before the layered core), or ``None`` on commits that predate it."""
    import importlib

    for name in ("gradflow.tools.bench", "gradflow.bench"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    return None
