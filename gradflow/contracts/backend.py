"""Array backends: NumPy (default), CuPy (GPU) and array-api-strict (the honest CPU stand-in).

Every kernel in gradflow is written once against the array-API namespace ``backend.xp``. The
``array_api_strict`` backend rejects anything outside the array-API standard, so a test suite that
passes on it keeps the CuPy path honest on machines without a GPU.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gradflow.contracts.errors import BackendUnavailableError
from gradflow.contracts.random import CounterRNG

BACKEND_NAMES = ("numpy", "cupy", "array_api_strict")
DTYPE_NAMES = ("float64", "float32")


_NUMPY: list[Any] = []  # the numpy backend's namespace, made once
_NUMPY_OVERRIDE: list[Any] = []  # a namespace numpy backends get instead (see the override)


def _numpy_namespace() -> Any:
    if _NUMPY_OVERRIDE:
        return _NUMPY_OVERRIDE[-1]
    if not _NUMPY:
        from gradflow.contracts.numpy_namespace import make_namespace

        _NUMPY.append(make_namespace())
    return _NUMPY[0]


@contextmanager
def numpy_namespace_override(namespace: Any) -> Iterator[None]:
    """Within the block, a numpy backend made by :func:`get_backend` uses ``namespace`` (a
    NumPy namespace with the same functions: ``gradflow bench`` counts a step's NumPy calls
    with one whose arrays count what is done to them). Backends made before or after keep the
    ordinary namespace."""
    _NUMPY_OVERRIDE.append(namespace)
    try:
        yield
    finally:
        _NUMPY_OVERRIDE.pop()


def _strict_namespace() -> Any:
    try:
        import array_api_strict as xp
    except ImportError as exc:  # pragma: no cover - dev dependency
        raise BackendUnavailableError(
            "backend 'array_api_strict' needs the package array-api-strict "
            "(pip install 'gradflow[dev]')"
        ) from exc
    return xp


def _cupy_namespace() -> Any:
    try:
        cupy = importlib.import_module("cupy")
    except Exception as exc:
        raise BackendUnavailableError(
            "backend 'cupy' needs CuPy: pip install 'gradflow[cuda12]' or 'gradflow[cuda13]' "
            f"({type(exc).__name__}: {exc})"
        ) from exc
    try:
        available = bool(cupy.cuda.is_available())
    except Exception as exc:
        raise BackendUnavailableError(
            f"backend 'cupy': CuPy is installed but CUDA cannot start ({type(exc).__name__}: {exc})"
        ) from exc
    if not available:
        raise BackendUnavailableError(
            "backend 'cupy': CuPy is installed but no usable CUDA GPU was found"
        )
    import array_api_compat.cupy as xp

    return xp


_NAMESPACES = {
    "numpy": _numpy_namespace,
    "cupy": _cupy_namespace,
    "array_api_strict": _strict_namespace,
}


@dataclass
class Backend:
    """An array namespace, a floating dtype and a seeded generator.

    Attributes
    ----------
    name: ``"numpy"``, ``"cupy"`` or ``"array_api_strict"``.
    xp: the array-API namespace (array-api-compat wrapped for NumPy and CuPy; for NumPy with
        its reductions called as ufunc methods, :mod:`gradflow.contracts.numpy_namespace`).
    dtype: the floating dtype of parameters and states (``xp.float64`` or ``xp.float32``).
    dtype_name: ``"float64"`` or ``"float32"``.
    seed: the seed of ``rng``.
    rng: a :class:`~gradflow.contracts.random.CounterRNG` drawing in ``xp``.
    """

    name: str
    xp: Any
    dtype: Any
    dtype_name: str
    seed: int = 0
    rng: CounterRNG = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.rng = CounterRNG(self.xp, self.seed)

    # -- conversions -------------------------------------------------------------------------
    def asarray(self, value: Any, dtype: Any = None) -> Any:
        """Convert ``value`` (NumPy array, list, scalar, or an array of this backend) to ``xp``.

        Floating inputs take the backend's dtype unless ``dtype`` says otherwise; integer and
        boolean inputs keep their kind.
        """
        xp = self.xp
        if self.name == "cupy":
            arr = xp.asarray(value)
        elif self.name == "array_api_strict" and not _is_strict_array(value):
            arr = xp.asarray(np.asarray(value))
        else:
            arr = xp.asarray(value)
        if dtype is not None:
            return xp.astype(arr, dtype) if arr.dtype != dtype else arr
        if xp.isdtype(arr.dtype, "real floating") and arr.dtype != self.dtype:
            return xp.astype(arr, self.dtype)
        return arr

    def to_numpy(self, value: Any) -> np.ndarray:
        """Copy an array of this backend to a NumPy array on the host.

        Always a copy, never a view: the hot paths update θ and the estimators' state in place,
        so a snapshot (a checkpoint, a row of gradients) must not share their memory.
        """
        if self.name == "cupy" and not isinstance(value, np.ndarray):
            return value.get()
        if self.name == "array_api_strict" and _is_strict_array(value):
            return np.array(np.from_dlpack(value), copy=True)
        return np.array(value, copy=True)

    def to_float(self, value: Any) -> float:
        """Read a 0-d array (for example a loss) back to the host as a Python float."""
        return float(self.to_numpy(value))

    def synchronize(self) -> None:
        """Wait for queued device work to finish (a no-op on the CPU backends)."""
        if self.name == "cupy":
            import cupy

            cupy.cuda.get_current_stream().synchronize()

    def zeros(self, shape: tuple[int, ...]) -> Any:
        return self.xp.zeros(shape, dtype=self.dtype)


#: the namespace of each array type seen (see namespace_of)
_NAMESPACE_OF: dict[type, Any] = {}


def namespace_of(x: Any) -> Any:
    """The array namespace of the array ``x``, as a backend would use it: NumPy arrays get the
    numpy backend's namespace (:mod:`gradflow.contracts.numpy_namespace`), others their
    array-api-compat namespace. Looked up once per array type, so that a hot path pays a
    dictionary lookup, not array-api-compat's inspection of the array."""
    xp = _NAMESPACE_OF.get(type(x))
    if xp is None:
        if isinstance(x, np.ndarray | np.generic):
            xp = _numpy_namespace()
            if _NUMPY_OVERRIDE:  # not remembered: the override is for one block only
                return xp
        else:
            from array_api_compat import array_namespace

            xp = array_namespace(x)
        _NAMESPACE_OF[type(x)] = xp
    return xp


def _is_strict_array(value: Any) -> bool:
    return type(value).__module__.startswith("array_api_strict")


def get_backend(name: str = "numpy", dtype: str = "float64", seed: int = 0) -> Backend:
    """Create a :class:`Backend`.

    Raises :class:`~gradflow.BackendUnavailableError` with a one-line message when the
    backend cannot run here (CuPy missing, or installed without a usable GPU).
    """
    if isinstance(name, Backend):
        return name
    if name not in _NAMESPACES:
        raise BackendUnavailableError(
            f"unknown backend {name!r}; choose one of {', '.join(BACKEND_NAMES)}"
        )
    if dtype not in DTYPE_NAMES:
        raise BackendUnavailableError(
            f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPE_NAMES)}"
        )
    xp = _NAMESPACES[name]()
    return Backend(name=name, xp=xp, dtype=getattr(xp, dtype), dtype_name=dtype, seed=seed)


def resolve_backend(backend: Backend | str | None, dtype: str | None = None) -> Backend:
    """Accept a :class:`Backend`, a backend name, or ``None`` (NumPy, float64)."""
    if isinstance(backend, Backend):
        if dtype is not None and dtype != backend.dtype_name:
            return get_backend(backend.name, dtype, backend.seed)
        return backend
    return get_backend(backend or "numpy", dtype or "float64")
