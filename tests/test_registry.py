"""The plugin registry: built-ins via entry points, third-party distributions, guarded loading."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

import gradflow
from gradflow.registry.discovery import Registry
from tests.conftest import needs_build_backend

HERE = Path(__file__).parent
PLUGINS = HERE / "plugins"


def test_builtins_come_from_the_gradflow_distribution() -> None:
    reg = gradflow.get_registry()
    for kind, name in [("model", "rnn"), ("estimator", "rtrl"), ("estimator", "tbptt"),
                       ("estimator", "bptt"), ("estimator", "readout-only")]:
        info = reg.get(kind, name)
        assert info.plugin == "builtin" and info.distribution == "gradflow"
        assert info.options.model_config["extra"] == "forbid"
    assert reg.get("estimator", "rtrl").capabilities == {"jvp_state", "param_jacobian"}


def test_unknown_name_lists_the_available_ones() -> None:
    with pytest.raises(gradflow.PluginError,
                       match=r"unknown estimator 'rtlr' \(did you mean 'rtrl'\?\); available: "
                             r".*bptt.*rtrl.*tbptt"):
        gradflow.create_estimator("rtlr", gradflow.create_model("rnn"))
    with pytest.raises(gradflow.PluginError,
                       match=r"unknown model 'grux' \(did you mean 'gru'\?\); available: .*rnn"):
        gradflow.create_model("grux")


def test_wrong_option_names_option_and_plugin() -> None:
    with pytest.raises(gradflow.PluginError,
                       match=r"model 'rnn': invalid options \(n_hiden: unknown option\); "
                             r"its options are: n_in, n_hidden, n_out, alpha"):
        gradflow.create_model("rnn", n_hiden=3)
    with pytest.raises(gradflow.PluginError, match=r"estimator 'tbptt'.*truncation"):
        gradflow.create_estimator("tbptt", gradflow.create_model("rnn"), truncation="ten")


class _Partial(gradflow.Model):
    """A model without parameter Jacobians: h' = θ ⊙ h, with forward, readout and vjp only."""

    name = "partial"

    def __init__(self, options: Any, backend: Any) -> None:
        super().__init__(options, backend)
        self.n_state = 2
        self.layout = gradflow.ParamLayout([("w", (2,))])

    def init_params(self, seed: int = 0) -> Any:
        return self.xp.zeros((2,), dtype=self.dtype)

    def forward(self, theta: Any, h: Any, x: Any) -> Any:
        return h * theta, {"h": h}

    def readout(self, theta: Any, h: Any) -> Any:
        return h

    def readout_vjp(self, theta: Any, h: Any, u: Any) -> Any:
        return u, self.xp.zeros((0,), dtype=self.dtype)

    def vjp(self, theta: Any, cache: Any, u: Any) -> Any:
        return u * theta, u * cache["h"]


class _Hostile:
    @gradflow.hookimpl
    def gradflow_register_tasks(self, register: Any) -> None:
        raise RuntimeError("boom inside the hook")

    @gradflow.hookimpl
    def gradflow_register_models(self, register: Any) -> None:
        register(_Partial)
        register(dict)  # not a model

    @gradflow.hookimpl
    def gradflow_register_estimators(self, register: Any) -> None:
        class Dup(gradflow.Estimator):
            name = "rtrl"  # already registered by the built-ins

            def step(self, record: Any) -> None: ...

        class LaxOptions(BaseModel):  # forgets extra="forbid"
            threshold: float = 1.0

        class Lax(gradflow.Estimator):
            name = "lax"
            Options = LaxOptions

            def step(self, record: Any) -> None: ...

        register(Dup)
        register(Lax)


@pytest.fixture
def hostile_registered():
    gradflow.register_plugin(_Hostile(), "hostile")
    yield gradflow.get_registry()
    gradflow.unregister_plugin("hostile")


def test_a_hostile_plugin_is_reported_and_the_rest_works(hostile_registered: Registry) -> None:
    reg = hostile_registered
    errors = [f.error for f in reg.failures if f.plugin == "hostile"]
    assert any("gradflow_register_tasks raised: RuntimeError: boom" in e for e in errors)
    assert any("not a subclass of gradflow.Model" in e for e in errors)
    assert any("'rtrl' is already registered by plugin 'builtin'" in e for e in errors)
    assert any("must forbid unknown keys" in e for e in errors)
    assert reg.get("estimator", "rtrl").plugin == "builtin"  # the duplicate did not win
    assert "lax" not in reg.names("estimator")
    # what the hostile plugin registered correctly works, and so do the built-ins
    model = gradflow.create_model("partial")
    with pytest.raises(gradflow.CapabilityError,
                       match=r"estimator 'rtrl' needs jvp_state, param_jacobian, which model "
                             r"'partial' does not provide \(it provides forward, "
                             r"param_jacobian_units_accumulate, readout, vjp\)"):
        gradflow.create_estimator("rtrl", model)
    gradflow.create_estimator("tbptt", model)  # needs only vjp
    gradflow.create_estimator("rtrl", gradflow.create_model("rnn"))


def test_plugin_that_fails_to_register_at_all() -> None:
    reg = Registry()
    reg.add_plugin(_Hostile(), "twice")
    reg.add_plugin(_Hostile(), "twice")  # a second plugin under the same name: pluggy refuses
    assert any(f.plugin == "twice" and "failed to load: ValueError" in f.error
               for f in reg.failures)


# -- real distributions installed into a temporary site directory -----------------------------

@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """pip-install the toy and the broken plugin distributions into a fresh --target dir."""
    needs_build_backend()
    target = tmp_path_factory.mktemp("site")
    for name in ("gradflow-toy-plugin", "gradflow-broken-plugin"):
        build = tmp_path_factory.mktemp("build")
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
             "--no-build-isolation", "--target", str(target), str(PLUGINS / name)],
            check=True, cwd=build, capture_output=True,
        )
    return target


def _run(site: Path, code: str, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k != "GRADFLOW_DISABLE_PLUGINS"}
    environ.update(PYTHONPATH=str(site), **env)
    return subprocess.run([sys.executable, "-c", code], env=environ, capture_output=True,
                          text=True, timeout=120)


LIST = ("from gradflow_cli.app import main; import sys; "
        "sys.argv = ['gradflow', 'plugins', '--json']; main()")


def test_third_party_distribution_is_registered(plugin_site: Path) -> None:
    proc = _run(plugin_site, LIST)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    by_name = {(p["kind"], p["name"]): p for p in data["plugins"]}
    toy = by_name[("estimator", "sign-readout")]
    assert toy["distribution"] == "gradflow-toy-plugin" and toy["version"] == "0.3.1"
    assert toy["plugin"] == "toy" and "scale" in toy["options"]
    # the plugin that raises on import is reported by name; the built-ins still work
    assert data["failures"] == [{
        "plugin": "broken", "distribution": "gradflow-broken-plugin",
        "error": "failed to import: ImportError: gradflow_broken needs a library that is not "
                 "installed"}]
    assert ("model", "rnn") in by_name and ("estimator", "rtrl") in by_name


def test_third_party_estimator_runs_through_the_public_api(plugin_site: Path) -> None:
    code = (
        "import numpy as np, gradflow\n"
        "m = gradflow.create_model('rnn', n_in=2, n_hidden=4, n_out=1)\n"
        "e = gradflow.create_estimator('sign-readout', m, scale=0.5)\n"
        "r = gradflow.frozen_gradients(m, e, m.init_params(0), np.ones((3, 1, 2)),"
        " np.zeros((3, 1, 1)))\n"
        "print(sorted(set(np.abs(r[:, m.layout.out]).ravel().tolist())))\n"
    )
    proc = _run(plugin_site, code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() in ("[0.5]", "[0.0, 0.5]")


def test_disable_plugins_blocks_them_before_import(plugin_site: Path) -> None:
    proc = _run(plugin_site, LIST, GRADFLOW_DISABLE_PLUGINS="broken, toy")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    names = {p["name"] for p in data["plugins"]}
    assert "sign-readout" not in names and "rtrl" in names
    assert data["failures"] == [] and sorted(data["disabled"]) == ["broken", "toy"]
