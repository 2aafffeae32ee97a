"""The reliability table: every bad input of tests/reliability_cases.py, through the real
``gradflow`` command, answers the exact line and exit status of its case, with no traceback;
and docs/reliability.md is that table."""

from __future__ import annotations

import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import pytest
from gradflow_cli.app import main

from tests.reliability_cases import CASES, DOC, Case, Hostile, render_markdown

MIN_CASES = 40


def pattern(message: str) -> re.Pattern[str]:
    """The case's message as a regular expression: ``…`` matches any text."""
    return re.compile(".*".join(re.escape(part) for part in message.split("…")))


def run_in_process(case: Case, monkeypatch: pytest.MonkeyPatch,
                   capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["gradflow", *case.argv])
    capsys.readouterr()
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    out, err = capsys.readouterr()
    return code, out, err


def run_in_subprocess(case: Case, tmp: Path, site: Path) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if k != "GRADFLOW_DISABLE_PLUGINS"}
    env.update(PYTHONPATH=str(site), COLUMNS="200", **case.env)
    proc = subprocess.run([sys.executable, "-m", "gradflow_cli.app", *case.argv], cwd=tmp,
                          env=env, capture_output=True, text=True, timeout=120)
    return proc.returncode, proc.stdout, proc.stderr


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_case(case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
              capsys: pytest.CaptureFixture[str], request: pytest.FixtureRequest) -> None:
    for module in case.needs:
        pytest.importorskip(module, reason=f"case {case.id!r} needs {module} (an extra)")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    cleanup = case.setup(work) if case.setup is not None else None
    try:
        if case.plugins:
            code, out, err = run_in_subprocess(case, work, request.getfixturevalue("hostile_site"))
        else:
            code, out, err = run_in_process(case, monkeypatch, capsys)
    finally:
        if cleanup is not None:
            cleanup()
    assert "Traceback" not in out + err, err
    expected = pattern(case.message)
    if case.code:
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and err.splitlines()[-1] == errors[0], err
        assert expected.fullmatch(errors[0]), f"\n  got: {errors[0]}\n want: {case.message}"
    else:
        lines = (out + err).splitlines()
        assert any(expected.fullmatch(line) for line in lines), \
            f"\n want: {case.message}\n  got:\n{out}{err}"
        assert not [line for line in err.splitlines() if line.startswith("error:")], err
    assert code == case.code, (code, out, err)
    if case.check is not None:
        case.check(work)


def test_the_table_is_big_enough_and_its_ids_unique() -> None:
    assert len(CASES) >= MIN_CASES
    assert len({c.id for c in CASES}) == len(CASES)
    assert {c.code for c in CASES} == {0, 2, 3}


def test_the_document_is_generated_from_the_cases() -> None:
    assert DOC.read_text(encoding="utf-8") == render_markdown(), \
        "docs/reliability.md is out of date: run python -m tests.reliability_cases"


def test_the_hostile_pickle_would_run_if_unpickled(tmp_path: Path, monkeypatch) -> None:
    """The control of the pickle cases: the payload they plant does create the file when it is
    unpickled, so 'pwned' not existing after them means nothing was unpickled."""
    monkeypatch.chdir(tmp_path)
    pickle.loads(pickle.dumps(Hostile())).close()
    assert (tmp_path / "pwned").exists()


def test_debug_shows_the_traceback(monkeypatch, capsys) -> None:
    """--debug: the exception propagates (the console script prints its traceback)."""
    from gradflow import ConfigError

    monkeypatch.setattr(sys, "argv", ["gradflow", "--debug", "train", "--set", "run.steps=0"])
    with pytest.raises(ConfigError, match=r"run\.steps"):
        main()


def test_a_bug_is_one_line_with_status_1(monkeypatch, capsys) -> None:
    """An unexpected exception outside any plugin is a bug: one line, status 1, the hint."""
    import gradflow_cli.config_cmd as config_cmd

    def broken(*args, **kwargs):
        raise KeyError("oops")

    monkeypatch.setattr(config_cmd, "config_schema", broken)
    monkeypatch.setattr(sys, "argv", ["gradflow", "config", "schema"])
    with pytest.raises(SystemExit) as info:
        main()
    err = capsys.readouterr().err
    assert info.value.code == 1 and "Traceback" not in err
    assert err.strip() == ("error: internal error: KeyError: 'oops' (a bug in gradflow or a "
                           "plugin; run again with --debug for the traceback)")
