"""Time and peak memory of one online step (``Trainer.advance``: task → forward → loss →
estimator → clip → optimizer) for each estimator × n × B × dtype, model ``rnn`` on task ``add``.

``time_step`` is one step; asv times samples of 16 steps (one TBPTT window, so that every sample
holds exactly one TBPTT update) and reports the time per step. ``peakmem_step`` is the peak
resident memory of the benchmark process over 16 steps (it includes the interpreter, NumPy and
the trainer's state). BLAS runs on one thread, as in the trainer.
"""

from __future__ import annotations

from typing import ClassVar

from .common import (
    BATCHES,
    DTYPES,
    ESTIMATORS,
    SIZES,
    WINDOW,
    make_trainer,
    one_blas_thread,
    skip_reason,
)


class OnlineStep:
    params: ClassVar[list] = [ESTIMATORS, SIZES, BATCHES, DTYPES]
    param_names: ClassVar[list[str]] = ["estimator", "n", "batch", "dtype"]
    number = WINDOW
    repeat = (2, 7, 6.0)
    rounds = 1
    warmup_time = 0.0
    timeout = 600

    def setup(self, estimator: str, n: int, batch: int, dtype: str) -> None:
        reason = skip_reason(estimator, n, batch)
        if reason is not None:
            raise NotImplementedError(reason)
        self._limits = one_blas_thread()
        self.trainer = make_trainer(estimator, n, batch, dtype)

    def teardown(self, estimator: str, n: int, batch: int, dtype: str) -> None:
        self._limits.restore_original_limits()

    def time_step(self, estimator: str, n: int, batch: int, dtype: str) -> None:
        self.trainer.advance()

    def peakmem_step(self, estimator: str, n: int, batch: int, dtype: str) -> None:
        for _ in range(WINDOW):
            self.trainer.advance()
