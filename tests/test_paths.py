"""Where a configuration may make gradflow write: a config file's ``run.out`` stays below the
current directory unless the user names the directory (``--out``, ``--set run.out=``, or
``out=`` in the Python API)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from gradflow_cli.app import main

import gradflow
from gradflow import PathPolicyError
from gradflow.runfiles.paths import check_config_path, is_below

SMALL = "[run]\nsteps = 20\nlog_every = 10\neval_every = 0\ncheckpoint_every = 10\n" \
        "[model]\nn_hidden = 3\n"


def test_is_below(tmp_path: Path) -> None:
    (tmp_path / "inside").mkdir()
    outside = tmp_path.parent / f"{tmp_path.name}-out"
    outside.mkdir()
    (tmp_path / "link").symlink_to(outside)
    assert is_below("runs/a", tmp_path) and is_below("inside/../runs", tmp_path)
    assert not is_below("..", tmp_path) and not is_below("runs/../../x", tmp_path)
    assert not is_below(".", tmp_path) and not is_below("link/run", tmp_path)
    assert not is_below(str(outside), tmp_path)
    check_config_path("runs/a", "run.out", "c.toml", tmp_path)  # fine: no exception
    with pytest.raises(PathPolicyError, match="outside the current directory"):
        check_config_path("link/run", "run.out", "c.toml", tmp_path)


def test_the_python_api_follows_the_same_rule(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.toml").write_text(SMALL.replace("[run]\n", '[run]\nout = "../away"\n'))
    with pytest.raises(PathPolicyError, match=r"sets run.out = '\.\./away', outside"):
        gradflow.train("c.toml")
    assert not (tmp_path.parent / "away").exists()
    run = gradflow.train("c.toml", out=tmp_path.parent / "asked")  # out= is asking
    assert run.status == "completed" and run.path == tmp_path.parent / "asked"
    (tmp_path / "inside.toml").write_text(SMALL.replace("[run]\n", '[run]\nout = "runs/x"\n'))
    assert gradflow.train("inside.toml").path == Path("runs/x")  # below: fine


def test_set_run_out_on_the_command_line_is_asking(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.toml").write_text(SMALL.replace("[run]\n", '[run]\nout = "/nowhere/x"\n'))
    target = tmp_path.parent / f"{tmp_path.name}-set"
    monkeypatch.setattr(sys, "argv", ["gradflow", "train", "--config", "c.toml", "-q", "--set",
                                      f"run.out={target}"])
    main()
    assert (target / "summary.json").exists() and not Path("/nowhere").exists()
