"""The example third-party plugin docs/examples/gradflow-snap, installed as a real distribution.

It is pip-installed (no dependencies, no build isolation) into a temporary ``--target`` directory
from a copy of its sources (so the build leaves nothing in the repository), and every check runs
in a subprocess whose PYTHONPATH is that directory: gradflow must find it through its entry point,
list it with its distribution, train with it, and its own tests — written with the public
conformance suite gradflow.testing — must pass. CI does the same with
``pip install ./docs/examples/gradflow-snap`` (see docs/plugins.md).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import needs_build_backend

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "docs" / "examples" / "gradflow-snap"


@pytest.fixture(scope="module")
def snap_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    needs_build_backend()
    source = tmp_path_factory.mktemp("src") / "gradflow-snap"
    shutil.copytree(EXAMPLE, source,
                    ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    target = tmp_path_factory.mktemp("site")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(source)],
        cwd=source, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    return target


def _run(site: Path, args: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "GRADFLOW_DISABLE_PLUGINS"}
    env["PYTHONPATH"] = str(site)
    return subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def test_not_installed_in_the_test_process() -> None:
    """The checks below see the plugin only because of the install (no leak from the sources)."""
    import gradflow

    assert "snap1" not in gradflow.get_registry().names("estimator")


def test_listed_by_gradflow_plugins_with_its_distribution(snap_site: Path) -> None:
    code = ("import sys; from gradflow_cli.app import main; "
            "sys.argv = ['gradflow', 'plugins', '--json']; main()")
    proc = _run(snap_site, ["-c", code])
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    snap = [p for p in data["plugins"] if p["name"] == "snap1"]
    assert snap == [{
        "kind": "estimator", "name": "snap1", "description": snap[0]["description"],
        "requires": ["jvp_state", "vjp"], "options": {}, "plugin": "snap",
        "distribution": "gradflow-snap", "version": "0.1.0",
    }]
    assert "SnAp-1" in snap[0]["description"]
    assert data["failures"] == []


TRAIN = """
import json, numpy as np, gradflow

def train(estimator, steps=1500, lag=2, lr=0.1, batch=4):
    # online SGD on y_t = x_{t-lag}, x_t = ±1: the readout alone cannot recall past inputs
    model = gradflow.create_model("gru", n_in=1, n_hidden=12, n_out=1)
    be = model.backend
    est = gradflow.create_estimator(estimator, model)
    est.start(batch, seed=0)
    theta, h0 = model.init_params(0), model.initial_state(batch)
    h = h0
    xs = np.random.default_rng(1).choice([-1.0, 1.0], size=(steps + lag, batch, 1))
    loss_fn, losses = gradflow.get_loss("mse"), []
    for t in range(steps):
        batch_t = gradflow.Batch(be.asarray(xs[t + lag]), be.asarray(xs[t]))
        out = gradflow.online_step(model, loss_fn, theta, h, batch_t, h0, est)
        h = out.h
        theta = theta - lr * out.direction
        losses.append(be.to_float(out.loss))
    return float(np.mean(losses[:100])), float(np.mean(losses[-200:]))

print(json.dumps({name: train(name) for name in ("snap1", "readout-only")}))
"""


def test_trains_online_through_the_python_api(snap_site: Path) -> None:
    proc = _run(snap_site, ["-c", TRAIN])
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    first, last = result["snap1"]
    _, readout_only = result["readout-only"]
    assert last < 0.6 * first  # measured: 0.50 -> 0.27
    assert last < 0.75 * readout_only  # the recurrent weights learn something (readout: 0.40)


def test_passes_its_conformance_tests(snap_site: Path) -> None:
    proc = _run(snap_site, ["-m", "pytest", "-q", "-p", "no:cacheprovider",
                            str(EXAMPLE / "tests")])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert " passed" in proc.stdout and "failed" not in proc.stdout
