"""`gradflow config schema` and `gradflow config show`, and the TOML output of `show` (tomlkit)."""

from __future__ import annotations

import json
import math
import tomllib
from pathlib import Path

import pytest
from gradflow_cli.config_cmd import to_toml
from hypothesis import given
from hypothesis import strategies as st

import gradflow
from gradflow.runfiles.config import build_config
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
    for estimator in registered("estimator", online=True):
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
    for section in expected.values():  # None (out, clip, replica_seeds, ...): TOML has no null,
        for key in [k for k, v in section.items() if v is None]:  # written as a comment
            section.pop(key)
    assert shown == expected
    assert shown["model"]["n_in"] == 2 and shown["optimizer"]["clip_rec"] == 0.1  # resolved
    assert "# number of hidden units n\nn_hidden = 8" in out
    assert "# out = (not set)" in out
    shown_file = tmp_path / "shown.toml"  # the output is a config file for the same run
    shown_file.write_text(out)
    assert gradflow.Trainer(build_config(shown_file)).config == resolved

    code, out, _ = cli(monkeypatch, capsys, "config", "show", str(toml), "-f", "json")
    assert json.loads(out)["estimator"] == {"name": "uoro", "eps": 1e-7, "rank": 1, "window": 1}
    # a run directory (its config.json) shows as what it ran
    gradflow.train(build_config(toml, ["run.steps=100", "run.log_every=100",
                                       "run.eval_every=0"]), out=tmp_path / "run")
    code, out, _ = cli(monkeypatch, capsys, "config", "show", str(tmp_path / "run"), "-f",
                       "json")
    ran = json.loads((tmp_path / "run" / "config.json").read_text())
    ran.pop("provenance", None)  # what the run ran with, not part of its configuration
    assert json.loads(out) == ran


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
notes = st.one_of(st.none(), st.text(max_size=30))


@given(st.dictionaries(keys, st.one_of(scalars, st.none(), st.lists(scalars, max_size=3),
                                       st.dictionaries(keys, st.one_of(scalars, st.none()),
                                                       max_size=3)),
                       max_size=5), st.data())
def test_toml_output_round_trips(data: dict, draw: st.DataObject) -> None:
    """Whatever the keys, strings, numbers and comments, `config show`'s TOML reads back as the
    data it was written from (less the unset values, which TOML cannot hold)."""
    dotted = [k for k, v in data.items() if not isinstance(v, dict)] + [
        f"{k}.{sub}" for k, v in data.items() if isinstance(v, dict) for sub in v]
    comments = {key: note for key in dotted if (note := draw.draw(notes)) is not None}
    expected = {k: ({s: x for s, x in v.items() if x is not None} if isinstance(v, dict) else v)
                for k, v in data.items() if v is not None}
    assert tomllib.loads(to_toml(data, comments)) == expected


def test_toml_output_details() -> None:
    text = to_toml({"a": {"x": None, "y": math.inf, "z": 2.0, "s": "q\"\x7f\n"}},
                   {"a.y": "why\nand how"})
    assert text == ('[a]\n# x = (not set)\n# why\n# and how\ny = inf\nz = 2.0\n'
                    's = "q\\"\\u007f\\n"\n')


def _show_args(corpus: Path) -> list[list[str]]:
    """`--set` arguments that resolve with each registered estimator, model and task (an
    offline estimator on a task of sequences, the influence model on its own task, the text task
    on a file)."""
    registry = gradflow.get_registry()
    out = []
    for name in registered("estimator"):
        online = registry.get("estimator", name).cls.online
        out.append([f"estimator.name={name}", *([] if online else ["task.name=copy"])])
    for kind, other in (("model", "task"), ("task", "model")):
        for name in registered(kind):
            sets = [f"{kind}.name={name}"]
            if name in registry.entries[other]:  # influence: the model and its task
                sets.append(f"{other}.name={name}")
            if kind == "task" and "path" in registry.get("task", name).options.model_fields:
                sets.append(f"task.path={corpus}")
            out.append(sets)
    return out


def test_show_output_is_the_config_it_shows(tmp_path: Path, monkeypatch, capsys) -> None:
    """For every registered estimator, model and task: the TOML that `config show` prints,
    given back as a config file, is the same resolved config (strings with quotes, brackets and
    backslashes included)."""
    corpus = tmp_path / 'a "quoted" [dir] \\ é' / "corpus.txt"
    corpus.parent.mkdir()
    corpus.write_text("hello [world]\n" * 50, encoding="utf-8")
    for sets in _show_args(corpus):
        args = [item for s in sets for item in ("--set", s)]
        code, out, err = cli(monkeypatch, capsys, "config", "show", *args)
        assert code == 0, (sets, err)
        code, as_json, err = cli(monkeypatch, capsys, "config", "show", *args, "-f", "json")
        assert code == 0, (sets, err)
        shown = tmp_path / "shown.toml"
        shown.write_text(out, encoding="utf-8")
        code, again, err = cli(monkeypatch, capsys, "config", "show", str(shown), "-f", "json")
        assert code == 0 and json.loads(again) == json.loads(as_json), (sets, err)
        assert tomllib.loads(out) == _without_none(json.loads(as_json))


def _without_none(data: dict) -> dict:
    return {k: _without_none(v) if isinstance(v, dict) else v for k, v in data.items()
            if v is not None}
