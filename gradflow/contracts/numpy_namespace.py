"""The array namespace of the ``numpy`` backend: array-api-compat's NumPy namespace, with the
reductions called as ufunc methods.

``array_api_compat.numpy`` is, for NumPy ≥ 2, mostly NumPy's own functions. Its reductions
(``sum``, ``max``, ``min``, ``prod``) are NumPy's ``np.sum`` & co., which reach the ufunc's
``reduce`` through a layer of Python (``numpy._core.fromnumeric``): about 2 µs per call against
0.7 µs for ``np.add.reduce`` itself. An online step of a small network (n = 32) makes a dozen
reductions of a few numbers each, so that layer alone is a fifth of the step. This namespace calls
the ufunc methods directly, with the array API's signature, and is otherwise the same object set as
array-api-compat's (every other name is copied from it once, so a lookup costs what a module
attribute costs).

The results are those of ``np.sum`` & co.: ``np.sum(x, axis, dtype, keepdims)`` *is*
``np.add.reduce(x, axis, dtype, keepdims)`` for an ndarray (the same promotion of small integers
and booleans to the default integer), and ``np.max`` is ``np.maximum.reduce`` (NaN propagates).
``tests/test_backend.py`` compares them on every dtype and axis combination.
"""

from __future__ import annotations

import types
from typing import Any

import array_api_compat.numpy as _compat
import numpy as np

#: what :func:`is_numpy_namespace` recognises
NAME = "gradflow.contracts.numpy_namespace"


def _sum(x: Any, /, *, axis: Any = None, dtype: Any = None, keepdims: bool = False) -> Any:
    return np.add.reduce(x, axis=axis, dtype=dtype, keepdims=keepdims)


def _prod(x: Any, /, *, axis: Any = None, dtype: Any = None, keepdims: bool = False) -> Any:
    return np.multiply.reduce(x, axis=axis, dtype=dtype, keepdims=keepdims)


def _max(x: Any, /, *, axis: Any = None, keepdims: bool = False) -> Any:
    return np.maximum.reduce(x, axis=axis, keepdims=keepdims)


def _min(x: Any, /, *, axis: Any = None, keepdims: bool = False) -> Any:
    return np.minimum.reduce(x, axis=axis, keepdims=keepdims)


def make_namespace() -> types.ModuleType:
    """A module object holding array-api-compat's NumPy namespace, with the fast reductions
    where NumPy is 2 or newer (on NumPy 1.x it is array-api-compat's namespace unchanged)."""
    if int(np.__version__.split(".")[0]) < 2:
        return _compat
    namespace = types.ModuleType(NAME, __doc__)
    namespace.__dict__.update({key: getattr(_compat, key) for key in dir(_compat)
                               if not (key.startswith("__") and key != "__array_api_version__")})
    namespace.__dict__.update(sum=_sum, prod=_prod, max=_max, min=_min)
    return namespace


def is_numpy_namespace(xp: Any) -> bool:
    """Whether ``xp`` is a NumPy namespace (this one, array-api-compat's, or NumPy itself)."""
    from array_api_compat import is_numpy_namespace as compat_is_numpy

    return getattr(xp, "__name__", None) == NAME or compat_is_numpy(xp)
