"""Limiting the BLAS thread pools while gradflow computes.

One step of online training multiplies small matrices: BLAS threads cost more in synchronisation
than they gain (measured: RTRL on add, n = 32, five times slower with two threads on a busy
two-core machine), and a fixed thread count keeps float sums in one order. The trainer, ``gradflow
bench`` and the asv suite all limit the pools through :func:`blas_threads`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def blas_threads(threads: int | None) -> Iterator[None]:
    """Within the block, the BLAS thread pools (OpenBLAS, MKL...) use at most ``threads``
    threads; ``None`` leaves them as they are."""
    if threads is None:
        yield
        return
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=threads, user_api="blas"):
        yield
