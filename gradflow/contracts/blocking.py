"""Cache blocking of the elementwise passes over the parameter vector (P numbers).

An online step of a rank-one estimator or of TBPTT is a handful of elementwise passes over arrays
of P numbers (θ, the estimate, the optimizer's moments, the filter's metric). Written as whole-array
expressions, each pass allocates a temporary of P numbers and reads and writes every array from
main memory once per operation: with n = 1024 hidden units (P ≈ 10⁶, 8 MiB per array in float64)
the step is bound by memory traffic and page faults of the temporaries, not by arithmetic, and its
time grows faster than P once the arrays leave the cache.

Done block by block, every operation of a pass works on a slice of ``block_size(xp)`` numbers
(256 KiB in float64) that stays in the core's L2 cache between the operations, and the temporaries
are slices, reused by the allocator from one block to the next. The arithmetic on every element
is unchanged, so the results are bit for bit those of the whole-array expressions.

On a GPU (CuPy) a block of an elementwise pass is the whole array: a kernel launch costs
microseconds, and the device's memory system streams the whole array in one kernel.

Hot paths that form a temporary (an outer product, a product over streams) cut it into pieces of
at most :data:`TEMPORARY_BLOCK` numbers, on every backend.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from array_api_compat import is_cupy_namespace

#: numbers per block on a CPU (256 KiB in float64): a few such slices fit in a core's L2 cache
CPU_BLOCK = 1 << 15
#: numbers per temporary that a hot path forms and consumes at once (2 MiB in float64: an outer
#: product of a band of rows, a block of columns of w̃ for all streams): it stays in the cache
#: between being formed and being used, and the allocator reuses its memory from one block to
#: the next (no page faults per step)
TEMPORARY_BLOCK = 1 << 18


#: block_size of each namespace seen: a lookup instead of array-api-compat's test
_BLOCK_SIZES: dict[Any, int] = {}


def block_size(xp: Any) -> int:
    """Numbers per block of an elementwise pass on the backend of namespace ``xp``."""
    size = _BLOCK_SIZES.get(xp)
    if size is None:
        size = _BLOCK_SIZES.setdefault(xp, 1 << 62 if is_cupy_namespace(xp) else CPU_BLOCK)
    return size


def blocks(size: int, block: int) -> Iterable[tuple[int, int]]:
    """The (start, stop) bounds of consecutive blocks of at most ``block`` numbers covering
    ``range(size)`` (one block when ``size <= block``; none when ``size == 0``).

    The single block of a small array is returned as a tuple: iterating it costs a fraction of
    a generator's start, which matters in a step that loops over blocks a dozen times.
    """
    size, block = int(size), int(block)
    if size <= block:
        return ((0, size),) if size > 0 else ()
    return ((start, min(size, start + block)) for start in range(0, size, block))
