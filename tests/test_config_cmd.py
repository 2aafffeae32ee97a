"""`gradflow config schema` and `gradflow config show`, and the TOML writer behind `show`."""

from __future__ import annotations

import json
import math
import tomllib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import gradflow
from gradflow.runfiles.config import build_config
from gradflow.runfiles.toml_writer import dumps
from tests.helpers import registered, run_cli

jsonschema = pytest.importorskip("jsonschema")


cli = run_cli


@pytest.fixture(scope="module")
def schema() -> dict:
    from gradflow.runfiles.config_schema import config_schema

    return config_schema()


def test_schema_has_every_plugin(monkeypatch, capsys, schema) -> None:
    code, out, _ = cli(monkeypatch, capsys, "config", "schema")
    assert code == 0 and json.loads(out) == schema
    jsonschema.Draft202012Validator.check_schema(schema)
    registry = gradflow.get_registry()
    for kind in ("model", "estimator", "task"):
        mapping = schema["properties"][kind]["discriminator"]["mapping"]
        assert sorted(mapping) == registry.names(kind)
    tbptt = schema["$defs"]["estimator_tbptt"]["properties"]
    assert tbptt["truncation"]["minimum"] == 1 and tbptt["name"]["const"] == "tbptt"


def test_schema_accepts_resolved_configs_and_rejects_bad_ones(schema) -> None:
    validator = jsonschema.Draft202012Validator(schema)
    for estimator in registered("estimator"):
        cfg = gradflow.Trainer(build_config(sets=[f"estimator.name={estimator}",
                                                  "model.n_hidden=4"])).config
        validator.validate(cfg.model_dump(mode="json"))
    validator.validate({"estimator": {"name": "tbptt", "truncation": 5}, "run": {"steps": 10}})
    validator.validate({"model": {"n_hidden": 8}})  # no name: the default plugin, rnn
    for bad in ({"estimator": {"name": "tbptt", "truncation": 0}},
                {"estimator": {"name": "tbptt", "nope": 1}},
                {"estimator": {"name": "no-such-estimator"}},
                {"model": {"name": "gru", "alpha": 0.5}},  # alpha is an rnn option
                {"run": {"steps": "many"}},
                {"extra": {}}):
        assert not validator.is_valid(bad), bad


def test_show_resolves_a_file(tmp_path: Path, monkeypatch, capsys) -> None:
    toml = tmp_path / "run.toml"
    toml.write_text('[estimator]\nname = "uoro"\n[model]\nn_hidden = 8\n')
    code, out, _ = cli(monkeypatch, capsys, "config", "show", str(toml), "--set",
                       "run.seed=4")
    assert code == 0
    shown = tomllib.loads(out)
    resolved = gradflow.Trainer(build_config(toml, ["run.seed=4"])).config
    expected = resolved.model_dump(mode="json")
    expected["run"].pop("out")  # None: TOML has no null, written as a comment
    expected["optimizer"].pop("clip")
    assert shown == expected
    assert shown["model"]["n_in"] == 2 and shown["optimizer"]["clip_rec"] == 0.1  # resolved
    assert "# number of hidden units n\nn_hidden = 8" in out
    assert "# out = (not set)" in out
    shown_file = tmp_path / "shown.toml"  # the output is a config file for the same run
    shown_file.write_text(out)
    assert gradflow.Trainer(build_config(shown_file)).config == resolved

    code, out, _ = cli(monkeypatch, capsys, "config", "show", str(toml), "-f", "json")
    assert json.loads(out)["estimator"] == {"name": "uoro", "eps": 1e-7}
    # a run directory (its config.json) shows as what it ran
    gradflow.train(build_config(toml, ["run.steps=100", "run.log_every=100",
                                       "run.eval_every=0"]), out=tmp_path / "run")
    code, out, _ = cli(monkeypatch, capsys, "config", "show", str(tmp_path / "run"), "-f",
                       "json")
    assert json.loads(out) == json.loads((tmp_path / "run" / "config.json").read_text())


def test_show_errors_are_one_line(tmp_path: Path, monkeypatch, capsys) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[estimator]\nname = "tbptt"\ntruncation = 0\n')
    for args, message in (((str(tmp_path / "nope.toml"),), "does not exist"),
                          ((str(bad),), "truncation"),
                          (("--set", "estimator.name=nope"), "unknown estimator 'nope'")):
        code, _, err = cli(monkeypatch, capsys, "config", "show", *args)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1


scalars = st.one_of(st.booleans(), st.integers(-2**63, 2**63 - 1),
                    st.floats(allow_nan=False), st.text(max_size=20))
keys = st.text(min_size=1, max_size=8)


@given(st.dictionaries(keys, st.one_of(scalars, st.lists(scalars, max_size=3),
                                       st.dictionaries(keys, scalars, max_size=3)),
                       max_size=5))
def test_toml_writer_round_trips(data: dict) -> None:
    assert tomllib.loads(dumps(data)) == data


def test_toml_writer_details() -> None:
    text = dumps({"a": {"x": None, "y": math.inf, "z": 2.0, "s": "q\"\x7f\n"}},
                 {"a.y": "why"})
    assert text == '[a]\n# x = (not set)\n# why\ny = inf\nz = 2.0\ns = "q\\"\\u007F\\n"\n'
