"""Shared fixtures: every numerical test runs on NumPy and array-api-strict; CuPy when it can."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

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


#: the test plugin distributions under tests/plugins (see their pyproject.toml)
PLUGIN_DISTRIBUTIONS = ("gradflow-toy-plugin", "gradflow-broken-plugin", "gradflow-hostile-plugin",
                        "gradflow-faulty-plugin")


def needs_build_backend() -> None:
    """Skip (with the reason) where the test plugin distributions cannot be built: they are
    installed with ``--no-build-isolation``, so setuptools (the dev extra) must be here."""
    for module, version in (("setuptools", "68"), ("wheel", None)):
        pytest.importorskip(module, minversion=version, reason="building the test plugin "
                            "distributions needs setuptools ≥ 68 and wheel (pip install -e "
                            "'.[dev]')")


@pytest.fixture(scope="session")
def hostile_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every test plugin distribution pip-installed (as real distributions, with their entry
    points) into one fresh ``--target`` directory: put it on ``PYTHONPATH`` of a subprocess.
    The sources are copied first, so that building them leaves nothing in the repository."""
    needs_build_backend()
    here = Path(__file__).parent / "plugins"
    target = tmp_path_factory.mktemp("hostile-site")
    sources = tmp_path_factory.mktemp("plugin-sources")
    paths = []
    for name in PLUGIN_DISTRIBUTIONS:
        shutil.copytree(here / name, sources / name,
                        ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
        paths.append(str(sources / name))
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "--no-build-isolation", "--no-index", "--target", str(target), *paths],
                   check=True, cwd=sources, capture_output=True)
    return target
