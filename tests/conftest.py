"""Shared fixtures: every numerical test runs on NumPy and array-api-strict; CuPy when it can."""

from __future__ import annotations

import importlib.util

import pytest

import gradflow


def _cupy_usable() -> bool:
    if importlib.util.find_spec("cupy") is None:
        return False
    try:
        gradflow.get_backend("cupy")
    except gradflow.BackendUnavailableError:
        return False
    return True


CUPY = _cupy_usable()
BACKENDS = [
    "numpy",
    "array_api_strict",
    pytest.param("cupy", marks=[
        pytest.mark.cupy,
        pytest.mark.skipif(not CUPY, reason="CuPy or a usable GPU is not available"),
    ]),
]


@pytest.fixture(params=BACKENDS)
def backend_name(request: pytest.FixtureRequest) -> str:
    """Backend names: numpy, array_api_strict, cupy (skipped without a GPU)."""
    return request.param


@pytest.fixture
def backend64(backend_name: str) -> gradflow.Backend:
    """A float64 backend of each kind."""
    return gradflow.get_backend(backend_name, "float64")
