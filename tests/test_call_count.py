"""gradflow.tools.call_count: what counts as one NumPy call, what counts as a Python or a
built-in call, and that counting changes nothing in a step's numbers."""

from __future__ import annotations

import sys

import numpy as np

from gradflow.tools.bench import count_step_calls, make_trainer
from gradflow.tools.call_count import CountedArray, count_calls, counting, counting_namespace


def _counted(operation) -> tuple[int, object]:
    CountedArray.count = 0
    result = operation()
    return CountedArray.count, result


def test_one_operation_counts_once() -> None:
    xp = counting_namespace()
    a = xp.ones((4, 3))
    b = xp.zeros((3,))
    mask = b > 0
    cases = {
        "creator": (lambda: xp.zeros((3,)), 1),
        "concat": (lambda: xp.concat([b, b]), 1),
        "stack": (lambda: xp.stack([b, b]), 1),
        "asarray": (lambda: xp.asarray(a), 1),
        "ufunc": (lambda: xp.tanh(a), 1),
        "operator": (lambda: a * 2.0, 1),
        "matmul": (lambda: a @ b, 1),
        "function": (lambda: xp.reshape(a, (12,)), 1),
        "reduction": (lambda: xp.sum(a, axis=0), 1),
        "astype (a method)": (lambda: xp.astype(a, xp.float32), 1),
        "copy (a method)": (lambda: a.copy(), 1),
        "indexing": (lambda: a[1:3], 1),
        "where= in a ufunc": (lambda: np.add(b, b, out=xp.zeros((3,)), where=mask), 2),
        "named tuple result": (lambda: xp.linalg.qr(xp.eye(3)), 2),
        "attribute": (lambda: a.mT, 0),
    }
    for name, (operation, expected) in cases.items():
        count, result = _counted(operation)
        assert count == expected, name
        parts = result if isinstance(result, tuple) else (result,)
        assert all(isinstance(x, CountedArray) for x in parts if isinstance(x, np.ndarray)), name
    qr = xp.linalg.qr(xp.eye(3))  # the named tuple keeps its fields
    assert qr.Q.shape == (3, 3) and isinstance(qr.R, CountedArray)
    count, _ = _counted(lambda: a.__setitem__((0, 0), 5.0))
    assert count == 1
    # the results follow the data: an operation on a result counts too
    count, _ = _counted(lambda: xp.exp(xp.tanh(a) + 1.0))
    assert count == 3


def test_in_place_results_are_the_callers_arrays() -> None:
    xp = counting_namespace()
    x = xp.zeros((5,))
    y = xp.ones((5,))
    before = x
    x += y
    assert x is before and isinstance(x, CountedArray)
    assert np.array_equal(np.asarray(x), np.ones(5))


class _Stepper:
    """A 'trainer' whose step makes exactly one Python call and two built-in calls."""

    def advance(self) -> None:
        self._helper()
        len(())
        abs(-1)

    def _helper(self) -> None:
        pass


def test_python_and_builtin_calls_are_those_of_the_step() -> None:
    calls = count_calls(_Stepper, steps=10, warmup=1)
    assert (calls.numpy_calls, calls.python_calls, calls.builtin_calls) == (0.0, 1.0, 2.0)


def test_a_callers_profiler_is_put_back() -> None:
    seen: list[str] = []

    def mine(frame, event, arg) -> None:
        seen.append(event)

    sys.setprofile(mine)
    try:
        count_calls(_Stepper, steps=2, warmup=0)
        assert sys.getprofile() is mine
    finally:
        sys.setprofile(None)
    assert seen  # it ran before and after the count


def test_counting_changes_nothing_in_the_numbers() -> None:
    with counting():
        counted = make_trainer("uoro", 8)
    plain = make_trainer("uoro", 8)
    assert isinstance(counted.theta, CountedArray) and not isinstance(plain.theta, CountedArray)
    for _ in range(20):
        counted.advance()
        plain.advance()
    assert np.array_equal(np.asarray(counted.theta), plain.theta)
    # a backend made after the block is an ordinary one
    assert not isinstance(make_trainer("uoro", 8).theta, CountedArray)


def test_a_step_is_counted_the_same_every_time() -> None:
    first = count_step_calls("tbptt", 8, truncation=4)
    again = count_step_calls("tbptt", 8, truncation=4)
    assert first == again
    assert first.numpy_calls > first.python_calls / 10 > 0 and first.builtin_calls > 0
    # a step of UORO does more than the forward-only step it contains
    assert count_step_calls("uoro", 8).numpy_calls > count_step_calls("readout-only", 8).numpy_calls
