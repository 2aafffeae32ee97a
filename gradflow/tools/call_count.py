"""What one online step calls: NumPy operations and Python function calls, counted.

At the sizes the field runs (n = 16…256, one stream) a step's time is mostly the fixed cost of
its calls — a NumPy operation on a few numbers costs 0.3–2 µs whatever it computes, a Python
call ~0.1 µs — so ``gradflow bench`` reports how many a step makes, measured:

* **NumPy calls**: a trainer is built on the numpy backend with a counting namespace
  (:func:`counting_namespace`): every array it creates through the backend — θ, the state, the
  estimator's and the optimizer's buffers, the task's batches — is a :class:`CountedArray`, a
  view of an ordinary array whose every ufunc call (operators, ``tanh``, ``@``, the reductions'
  ``reduce``), every NumPy function taking it (``reshape``, ``where``, ``vecdot``…), every
  method of it that does not go through a ufunc (:data:`COUNTED_METHODS`: ``astype``,
  ``copy``…) and every indexing (``x[i]``, ``x[i] = y``) adds one to a counter; whatever such an
  operation returns is counted in turn. Every call of the namespace's functions that create
  arrays (``zeros``, ``asarray``, ``concat``, ``stack``…) counts one too. One operation counts
  once: the NumPy calls it makes inside are not counted again. Not counted: attribute reads
  (``x.shape``, ``x.mT``), arithmetic on NumPy *scalars* (a reduction over a whole array returns
  one), and host-side NumPy a task does before converting its batches.
* **Python calls**: ``sys.setprofile`` counts the calls of Python functions and of built-in
  functions (C functions called from Python) over steps of an ordinary trainer.

Both are averaged over many steps after a warm-up (``update_interval`` multiples, so that
TBPTT's update steps are included in their share). Counting changes nothing in the numbers a
step computes; it is a separate measurement from the timing (a counted step is much slower).
"""

from __future__ import annotations

import sys
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from gradflow.contracts.backend import numpy_namespace_override
from gradflow.contracts.numpy_namespace import make_namespace


class CountedArray(np.ndarray):
    """An ndarray view that counts the NumPy operations made on it (see the module docstring);
    results are counted arrays too, so the count follows the data through a step."""

    count = 0

    def __array_ufunc__(self, ufunc: np.ufunc, method: str, *inputs: Any, **kwargs: Any) -> Any:
        CountedArray.count += 1
        out = kwargs.get("out")
        # every counted array made plain, ``out=`` and ``where=`` included: one left in would
        # call this method again (counted twice, and without end for ``where=``)
        result = getattr(ufunc, method)(*_plain_all(inputs), **_plain_all(kwargs))
        if out is not None:  # the caller's arrays were written: return them
            return out[0] if len(out) == 1 else out
        return _counted(result)

    def __array_function__(self, func: Callable[..., Any], types: Any, args: Any,
                           kwargs: Any) -> Any:
        CountedArray.count += 1
        return _counted(func(*_plain_all(args), **_plain_all(kwargs)))

    def __getitem__(self, key: Any) -> Any:
        CountedArray.count += 1
        return _counted(np.ndarray.__getitem__(_plain(self), _plain_all(key)))

    def __setitem__(self, key: Any, value: Any) -> None:
        CountedArray.count += 1
        np.ndarray.__setitem__(_plain(self), _plain_all(key), _plain_all(value))


#: the ndarray methods that do their work without a ufunc or a NumPy function (the others reach
#: :meth:`CountedArray.__array_ufunc__` or ``__array_function__`` and are counted there)
COUNTED_METHODS = ("astype", "copy", "fill", "reshape", "ravel", "flatten", "transpose",
                   "swapaxes", "squeeze")


def _counted_method(name: str) -> Callable[..., Any]:
    method = getattr(np.ndarray, name)

    def counted(self: CountedArray, *args: Any, **kwargs: Any) -> Any:
        CountedArray.count += 1
        return _counted(method(_plain(self), *_plain_all(args), **_plain_all(kwargs)))

    counted.__name__ = name
    return counted


for _name in COUNTED_METHODS:
    setattr(CountedArray, _name, _counted_method(_name))


def _plain(x: Any) -> Any:
    return x.view(np.ndarray) if isinstance(x, CountedArray) else x


def _plain_all(x: Any) -> Any:
    """``x`` with every counted array in it (through tuples, lists and dicts) made plain."""
    if isinstance(x, CountedArray):
        return x.view(np.ndarray)
    if isinstance(x, tuple | list):
        return _rebuild(x, [_plain_all(v) for v in x])
    if isinstance(x, dict):
        return {k: _plain_all(v) for k, v in x.items()}
    return x


def _counted(x: Any) -> Any:
    if type(x) is np.ndarray:
        return x.view(CountedArray)
    if isinstance(x, tuple | list):
        return _rebuild(x, [_counted(v) for v in x])
    return x


def _rebuild(x: tuple[Any, ...] | list[Any], values: list[Any]) -> Any:
    """A sequence of ``x``'s type (a named tuple too: ``linalg.qr``'s result) holding ``values``."""
    return type(x)(*values) if hasattr(x, "_fields") else type(x)(values)


#: the namespace functions that create arrays: their results are counted arrays
_CREATORS = ("asarray", "zeros", "ones", "empty", "full", "zeros_like", "ones_like",
             "empty_like", "full_like", "arange", "eye", "linspace", "from_dlpack", "concat",
             "stack")


def counting_namespace() -> types.ModuleType:
    """The numpy backend's namespace, with the functions that create arrays returning
    :class:`CountedArray` views (each call counted)."""
    namespace = make_namespace()
    counted = types.ModuleType(namespace.__name__, namespace.__doc__)
    counted.__dict__.update(namespace.__dict__)
    for name in _CREATORS:
        create = getattr(namespace, name, None)
        if create is not None:
            setattr(counted, name, _counting(create))
    return counted


def _counting(create: Callable[..., Any]) -> Callable[..., Any]:
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        CountedArray.count += 1
        return _counted(create(*_plain_all(args), **_plain_all(kwargs)))

    wrapped.__name__ = getattr(create, "__name__", "create")
    return wrapped


@contextmanager
def counting() -> Iterator[None]:
    """Within the block, numpy backends are made with :func:`counting_namespace`."""
    with numpy_namespace_override(counting_namespace()):
        yield


@dataclass
class CallCount:
    """Calls per step: NumPy operations on arrays, Python functions, built-in functions."""

    numpy_calls: float
    python_calls: float
    builtin_calls: float


def count_calls(make: Callable[[], Any], steps: int, warmup: int) -> CallCount:
    """Calls per step of the trainer that ``make()`` builds (on the numpy backend), over
    ``steps`` steps after ``warmup`` steps (see the module docstring)."""
    with counting():
        counted = make()
    for _ in range(warmup):
        counted.advance()
    CountedArray.count = 0
    for _ in range(steps):
        counted.advance()
    numpy_calls = CountedArray.count / steps

    plain = make()
    for _ in range(warmup):
        plain.advance()
    calls = {"call": 0, "c_call": 0}

    def profile(frame: Any, event: str, arg: Any) -> None:
        # the c_call of the sys.setprofile that ends the count is not a step's
        if event in calls and arg is not sys.setprofile:
            calls[event] += 1

    advance = plain.advance
    previous = sys.getprofile()  # a profiler of the caller's, put back afterwards
    sys.setprofile(profile)
    try:
        for _ in range(steps):
            advance()
    finally:
        sys.setprofile(previous)
    # the loop's own call of advance() is one Python call per step: not the step's
    return CallCount(numpy_calls, calls["call"] / steps - 1.0, calls["c_call"] / steps)
