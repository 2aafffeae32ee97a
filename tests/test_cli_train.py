"""`gradflow train`: config file, overrides, flags, output, and one-line errors with exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from gradflow_cli.app import main

import gradflow
from gradflow.runfiles.config import parse_assignment, parse_value
from tests.helpers import run_cli

FAST = ["--set", "model.n_hidden=8", "--set", "run.log_every=100", "--set", "run.eval_every=0"]


cli = run_cli


def test_train_prints_a_summary(tmp_path, monkeypatch, capsys) -> None:
    out = tmp_path / "run"
    code, stdout, stderr = cli(monkeypatch, capsys, "train", "--task", "add", "--estimator",
                               "tbptt", "--steps", "300", "--out", str(out), *FAST)
    assert code == 0, stderr
    assert "training rnn (n_state=8" in stderr and "train" in stderr
    lines = stdout.splitlines()
    assert lines[0].startswith("add · rnn (P=") and "tbptt · 300 steps" in lines[0]
    assert lines[1].startswith("final loss ") and "bits" in lines[1]
    assert lines[2].startswith("optimum 0.4545 nats (gap +")
    assert "first lag only 0.5192 nats (0.7490 bits)" in lines[3]
    assert "no memory 0.6616 nats" in lines[3]
    assert lines[-1] == f"run directory: {out}"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 300


@pytest.mark.parametrize(("estimator", "sets", "line"), [
    ("uoro", [], "optimizer: sgd lr 0.01, constant schedule, momentum 0, clip_rec 0.1 (name, lr, "
     "schedule, clip_rec from uoro's optimizer defaults; set optimizer.* to choose)"),
    ("uoro", ["--set", "optimizer.lr=0.02"], "optimizer: sgd lr 0.02, constant schedule, momentum "
     "0, clip_rec 0.1 (name, schedule, clip_rec from uoro's optimizer defaults; set optimizer.* "
     "to choose)"),
    ("tbptt", [], "optimizer: adam lr 0.003, smooth-inv-sqrt schedule (α 0.01), β₁ 0.9, β₂ 0.999, "
     "ε 1e-08, no clipping"),
])
def test_the_header_names_every_optimizer_setting(tmp_path, monkeypatch, capsys, estimator, sets,
                                                  line) -> None:
    """Nothing hidden: the complete optimizer settings, and which are the estimator's defaults."""
    monkeypatch.setenv("COLUMNS", "400")  # one line each, as a wide terminal shows them
    code, _, stderr = cli(monkeypatch, capsys, "train", "--estimator", estimator, "--steps", "50",
                          "--out", str(tmp_path / "run"), *FAST, *sets)
    assert code == 0, stderr
    assert line in stderr.splitlines()


def test_file_then_set_then_flags(tmp_path, monkeypatch, capsys) -> None:
    toml = tmp_path / "cfg.toml"
    toml.write_text("""
[run]
steps = 500
seed = 3
[estimator]
name = "tbptt"
truncation = 5
[optimizer]
name = "sgd"
lr = 0.01
clip_rec = 1.0
[task]
targets = "sampled"
""")
    out = tmp_path / "run"
    code, _, err = cli(monkeypatch, capsys, "train", "--config", str(toml), "--set",
                       "estimator.truncation=7", "--set", "optimizer.lr=0.5", "--steps", "200",
                       "--lr", "0.002", "--out", str(out), "-q", *FAST)
    assert code == 0, err
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["run"]["steps"] == 200  # flag over file
    assert cfg["run"]["seed"] == 3  # file
    assert cfg["estimator"] == {"name": "tbptt", "truncation": 7, "interval": None}  # --set
    assert cfg["optimizer"]["lr"] == 0.002  # flag over --set over file
    assert cfg["optimizer"]["clip_rec"] == 1.0 and cfg["optimizer"]["name"] == "sgd"
    assert cfg["task"] == {"name": "add", "lag1": 5, "lag2": 9, "targets": "sampled"}


def test_set_values_are_toml_literals() -> None:
    assert parse_value("10") == 10 and parse_value("1e-3") == 1e-3
    assert parse_value("true") is True and parse_value("[1, 2]") == [1, 2]
    assert parse_value('"10"') == "10" and parse_value("sampled") == "sampled"
    assert parse_value("/tmp/a b.txt") == "/tmp/a b.txt"
    assert parse_assignment("estimator.truncation = 12") == ("estimator", "truncation", 12)


@pytest.mark.parametrize(("args", "message"), [
    (["--estimator", "nope"], "error: unknown estimator 'nope'; available: bptt, "),
    (["--model", "nope"], "error: unknown model 'nope'; available: "),
    (["--task", "nope"], "error: unknown task 'nope'; available: add, "),
    (["--estimator", "tbptt", "--set", "estimator.truncaton=5"],
     "error: estimator 'tbptt': invalid options (truncaton: unknown option); its options are: "
     "truncation, interval"),
    (["--set", "task.lag1=-2"], "error: task 'add': invalid options (lag1: Input should be "
     "greater than or equal to 0)"),
    (["--task", "text"], "error: task 'text': invalid options (path: Field required)"),
    (["--task", "text", "--set", "task.path=/no/such/file.txt"],
     "error: task 'text': '/no/such/file.txt': no such file"),
    (["--set", "estimator"], "error: --set 'estimator': expected section.key=value"),
    (["--set", "trainer.steps=3"], "error: --set 'trainer.steps=3': unknown section 'trainer'"),
    (["--set", "run.stepz=3"], "error: invalid config: run.stepz: unknown key"),
    (["--dtype", "float16"], "error: invalid config: run.dtype: Input should be 'float64' or "
     "'float32'"),
    (["--lr", "-1"], "error: invalid config: optimizer.lr: Input should be greater than 0"),
    (["--steps", "many"], "error: Invalid value for '--steps'"),
    (["--config", "/no/such.toml"], "error: config file '/no/such.toml' does not exist"),
])
def test_errors_are_one_line_with_exit_code_2(monkeypatch, capsys, args, message) -> None:
    code, out, err = cli(monkeypatch, capsys, "train", *args)
    assert code == 2 and out == ""
    assert err.startswith(message), err
    assert err.count("\n") == 1 and "Traceback" not in err
    if "unknown" in message and "available" in message:  # the list names the real plugins
        listed = err.split("available: ")[1].strip().split(", ")
        kind = args[0].lstrip("-")
        assert set(gradflow.get_registry().names(kind)) == set(listed)
        assert {"rnn", "rtrl", "tbptt", "readout-only", "add", "text"} & set(listed)


def test_text_file_errors(tmp_path, monkeypatch, capsys) -> None:
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("naïve".encode("latin-1"))
    code, _, err = cli(monkeypatch, capsys, "train", "--task", "text", "--set",
                       f"task.path={bad}")
    assert code == 2 and "is not UTF-8 text (byte 0xef at offset 2)" in err
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    code, _, err = cli(monkeypatch, capsys, "train", "--task", "text", "--set",
                       f"task.path={empty}")
    assert code == 2 and err.strip().endswith("the file is empty")


def test_bad_toml(tmp_path, monkeypatch, capsys) -> None:
    toml = tmp_path / "bad.toml"
    toml.write_text("[run\nsteps = ")
    code, _, err = cli(monkeypatch, capsys, "train", "--config", str(toml))
    assert code == 2 and f"error: config file '{toml}' is not valid TOML" in err
    toml.write_text("[model]\nname = 'rnn'\nn_hiden = 4\n")
    code, _, err = cli(monkeypatch, capsys, "train", "--config", str(toml))
    assert code == 2 and "model 'rnn': invalid options (n_hiden: unknown option)" in err
    toml.write_text("[sweep]\nx = 1\n")
    code, _, err = cli(monkeypatch, capsys, "train", "--config", str(toml))
    assert code == 2 and "unknown config section(s) 'sweep'" in err


def test_existing_run_dir_needs_force(tmp_path, monkeypatch, capsys) -> None:
    out = tmp_path / "run"
    args = ["train", "--steps", "100", "--estimator", "tbptt", "--out", str(out), "-q", *FAST]
    assert cli(monkeypatch, capsys, *args)[0] == 0
    code, _, err = cli(monkeypatch, capsys, *args)
    assert code == 2 and "already exists and is not empty; pass --force" in err
    assert cli(monkeypatch, capsys, *args, "--force")[0] == 0


def test_debug_shows_the_exception(monkeypatch, capsys) -> None:
    monkeypatch.setattr(sys, "argv", ["gradflow", "train", "--estimator", "nope", "--debug"])
    with pytest.raises(gradflow.PluginError, match="unknown estimator"):
        main()


def test_console_script_exit_code(tmp_path) -> None:
    proc = subprocess.run([sys.executable, "-m", "gradflow_cli.app", "train", "--estimator",
                           "nope"], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: unknown estimator 'nope'")
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_plugins_lists_the_tasks(monkeypatch, capsys) -> None:
    code, out, _ = cli(monkeypatch, capsys, "plugins", "--json")
    assert code == 0
    tasks = {p["name"]: p for p in json.loads(out)["plugins"] if p["kind"] == "task"}
    assert set(tasks) >= {"add", "text"}
    assert set(tasks["add"]["options"]) == {"lag1", "lag2", "targets"}
    assert set(tasks["text"]["options"]) == {"path", "held_out"}
