"""The command line reads well: `--version`, `-h`, metavars that are words, help paragraphs that
follow the terminal's width, `gradflow plugins [NAME]` at 80 columns with plugin texts printed
literally, and run directories that do not exist named as such. Everything through the real
``gradflow`` command (in-process)."""

from __future__ import annotations

import inspect
import itertools
import json
import re
from pathlib import Path
from typing import Any

import pytest
import typer
from gradflow_cli.app import app
from pydantic import Field

import gradflow
from tests.helpers import plugin_registered, run_cli

ANSI = re.compile(r"\x1b\[[0-9;]*m")
#: Typer's type placeholders: what a metavar must never look like
PLACEHOLDER = re.compile(r"<(str|int|float|bool|path|Path|list\[[^\]]*\]|[a-z]+ range|"
                         r"[a-z]+\|[a-z|]+)>")


def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str,
        columns: int = 200) -> tuple[int, str, str]:
    """``gradflow ARGS`` in a terminal ``columns`` wide: (exit code, stdout, stderr)."""
    monkeypatch.setenv("COLUMNS", str(columns))
    code, out, err = run_cli(monkeypatch, capsys, *args)
    assert "Traceback" not in out + err, err
    return code, ANSI.sub("", out), ANSI.sub("", err)


def commands() -> list[tuple[tuple[str, ...], Any]]:
    """Every command of the application (``("config", "show")``...) with its click command."""
    out = []

    def walk(path: tuple[str, ...], command: Any) -> None:
        out.append((path, command))
        for name, sub in getattr(command, "commands", {}).items():
            walk((*path, name), sub)

    walk((), typer.main.get_command(app))
    return out


COMMANDS = commands()
IDS = [" ".join(path) or "gradflow" for path, _ in COMMANDS]


# -- --version, -h ----------------------------------------------------------------------------
def test_version(monkeypatch, capsys) -> None:
    code, out, err = cli(monkeypatch, capsys, "--version")
    assert code == 0 and out == f"gradflow {gradflow.__version__}\n" and err == ""


@pytest.mark.parametrize("path, command", COMMANDS, ids=IDS)
def test_dash_h_is_help(path: tuple[str, ...], command: Any, monkeypatch, capsys) -> None:
    code, short, err = cli(monkeypatch, capsys, *path, "-h")
    assert code == 0 and err == ""
    code, long, _ = cli(monkeypatch, capsys, *path, "--help")
    assert code == 0 and short == long
    assert f"Usage: {' '.join(('gradflow', *path))} [OPTIONS]" in short


# -- metavars ---------------------------------------------------------------------------------
@pytest.mark.parametrize("path, command", COMMANDS, ids=IDS)
def test_metavars_are_words(path: tuple[str, ...], command: Any, monkeypatch, capsys) -> None:
    code, out, _ = cli(monkeypatch, capsys, *path, "--help")
    assert code == 0
    assert not PLACEHOLDER.search(out), PLACEHOLDER.search(out)
    usage = next(line for line in out.splitlines() if "Usage:" in line)
    assert "{" not in usage and "}" not in usage, usage
    lines = [line for line in out.splitlines() if line.startswith("│")]  # the panels
    for param in command.params:
        if param.hidden if hasattr(param, "hidden") else False:
            continue
        if param.param_type_name == "argument":
            assert re.fullmatch(r"[A-Z][A-Z_]*(\.\.\.)?", param.metavar), param.metavar
            shown = param.metavar if param.required else f"[{param.metavar}]"
            assert shown in usage.split(), usage
            continue
        name = max(param.opts, key=len)
        line = next(line for line in lines if re.search(rf"{re.escape(name)}(?![\w-])", line))
        first_word = (param.help or "").split()[0]
        names = r"(\s+-{1,2}[\w-]+)*"
        if param.is_flag:  # nothing between the flag's names and its help
            assert re.search(rf"{re.escape(name)}{names}\s+{re.escape(first_word)}", line), line
        else:  # a word (NAME, N, FILE, SECTION.KEY=VALUE...), then the help
            assert re.fullmatch(r"[A-Z][A-Z0-9_.=]*(\.\.\.)?", param.metavar), param.metavar
            assert re.search(rf"{re.escape(name)}{names}\s+{re.escape(param.metavar)}"
                             rf"( \[[^\]]*\])?\s+{re.escape(first_word)}", line), line


# -- help paragraphs follow the terminal's width ----------------------------------------------
def _paragraph_lines(out: str, paragraph: str) -> list[str]:
    """The output lines that render ``paragraph`` (from its first words to a blank line)."""
    lines = [line.strip() for line in out.splitlines()]
    start = next(i for i, line in enumerate(lines) if line and paragraph.startswith(line[:30]))
    end = next(i for i in range(start, len(lines) + 1) if i == len(lines) or not lines[i])
    return lines[start:end]


@pytest.mark.parametrize("columns", [80, 120])
@pytest.mark.parametrize("path, command", COMMANDS[1:], ids=IDS[1:])
def test_help_paragraphs_reflow(path: tuple[str, ...], command: Any, columns: int,
                                monkeypatch, capsys) -> None:
    """Each paragraph of a command's docstring is wrapped at the terminal's width (each line
    as full as the next word allows), not at the docstring's own line ends."""
    doc = inspect.getdoc(command.callback.__wrapped__) if hasattr(
        command.callback, "__wrapped__") else command.help
    paragraphs = [" ".join(p.split()) for p in (doc or "").split("\n\n") if p.strip()]
    code, out, _ = cli(monkeypatch, capsys, *path, "--help", columns=columns)
    assert code == 0 and paragraphs
    width = columns - 2  # the help is padded by one column on each side
    for paragraph in paragraphs:
        lines = _paragraph_lines(out, paragraph)
        assert " ".join(lines) == paragraph
        assert all(len(line) <= width for line in lines)
        for line, following in itertools.pairwise(lines):
            assert len(line) + 1 + len(following.split()[0]) > width, (line, following)


def test_train_help_is_not_broken_at_the_docstring_lines(monkeypatch, capsys) -> None:
    from gradflow_cli.train import train

    doc_lines = inspect.getdoc(train).split("\n\n")[0].splitlines()
    assert len(doc_lines) > 1  # the first paragraph spans lines in the source
    code, out, _ = cli(monkeypatch, capsys, "train", "--help", columns=120)
    first = _paragraph_lines(out, " ".join(" ".join(doc_lines).split()))
    assert code == 0 and len(first[0]) > max(map(len, doc_lines))
    assert [line.strip() for line in doc_lines] != first


# -- gradflow plugins -------------------------------------------------------------------------
class Literal(gradflow.Estimator):
    """An estimator whose texts look like Rich markup: they must print as they are."""

    name = "markup-test"
    description = "keeps the state [h; c], a [bold]tag[/bold] and a stray [/x] closing tag"
    requires = frozenset({gradflow.JVP_STATE})
    kind = "unbiased"
    stochastic = True

    class Options(gradflow.EstimatorOptions):
        width: int = Field(3, description="rows of [W_hh; W_xh] per [/red] block")
        style: str = Field("[red]", description="a [link=x]default[/link] that looks like markup")

    def state_fields(self) -> list[Any]:
        return []

    def step(self, record: gradflow.StepRecord) -> Any:
        return None


@pytest.fixture
def markup_plugin():
    with plugin_registered("markup-test-plugin", estimators=[Literal]):
        yield


def _registered() -> list[gradflow.PluginInfo]:
    return list(gradflow.get_registry().all())


@pytest.mark.parametrize("columns", [80, 40])
def test_plugins_names_whole_at_80_columns(columns: int, monkeypatch, capsys) -> None:
    code, out, err = cli(monkeypatch, capsys, "plugins", columns=columns)
    assert code == 0 and err == ""
    rows = {tuple(line.split()[:2]) for line in out.splitlines()}
    infos = _registered()
    assert {info.kind for info in infos} >= {"estimator", "model", "task"}
    for info in infos:  # every registered name, whole, next to its kind
        assert (info.kind, info.name) in rows, (info.kind, info.name)
    body = [line for line in out.splitlines() if line.split()[:1] in ([i.kind] for i in infos)]
    assert len(body) == len(infos)
    if columns == 80:
        assert all(len(line) <= 80 for line in out.splitlines())
        assert any(line.endswith("…") for line in body)  # long descriptions are shortened


def test_plugins_lists_loggers_and_keeps_its_json(monkeypatch, capsys) -> None:
    code, out, _ = cli(monkeypatch, capsys, "plugins", "--json")
    assert code == 0
    data = json.loads(out)
    assert set(data) == {"plugins", "failures", "disabled"}
    listed = {(row["kind"], row["name"]) for row in data["plugins"]}
    registry = gradflow.get_registry()
    assert set(registry.entries) == {"estimator", "model", "task", "logger"}
    assert listed == {(kind, name) for kind, table in registry.entries.items()
                      for name in table}
    for row in data["plugins"]:
        caps = "requires" if row["kind"] == "estimator" else "capabilities"
        assert set(row) == {"kind", "name", "description", caps, "options", "plugin",
                            "distribution", "version"}
        for option in row["options"].values():
            assert set(option) == {"default", "type", "description"}


def test_plugin_details(monkeypatch, capsys) -> None:
    info = gradflow.get_registry().get("estimator", "kalman-nobacktrack")
    code, out, err = cli(monkeypatch, capsys, "plugins", "kalman-nobacktrack", columns=80)
    assert code == 0 and err == ""
    flat = " ".join(out.split())
    assert " ".join(info.description.split()) in flat  # in full
    assert re.search(r"^kind\s+estimator\s*$", out, re.M)
    assert re.search(rf"^requires\s+{', '.join(sorted(info.capabilities))}\s*$", out, re.M)
    assert re.search(rf"^plugin\s+{info.plugin}\s*$", out, re.M)
    assert re.search(rf"^distribution\s+{info.distribution}\s*$", out, re.M)
    assert re.search(rf"^version\s+{info.version}\s*$", out, re.M)
    for name, field in info.options.model_fields.items():
        line = next(line for line in out.splitlines() if line.split()[:1] == [name])
        assert str(field.default) in line.split()
        assert " ".join(field.description.split()) in flat
    assert re.search(r"^gamma\s+float \| None\s+None\s", out, re.M)  # the type as written
    # a model: its capabilities; a name that is both a model and a task: both
    model = gradflow.get_registry().get("model", "influence")
    code, out, _ = cli(monkeypatch, capsys, "plugins", "influence")
    assert code == 0
    assert re.search(rf"^capabilities\s+{', '.join(sorted(model.capabilities))}\s*$", out,
                     re.M)
    assert re.search(r"^kind\s+model\s*$", out, re.M)
    assert re.search(r"^kind\s+task\s*$", out, re.M)


def test_plugin_unknown_name(monkeypatch, capsys) -> None:
    code, out, err = cli(monkeypatch, capsys, "plugins", "uoor")
    assert code == 2 and out == ""
    assert err.startswith("error: unknown estimator 'uoor' (did you mean 'uoro'?); available: ")
    assert len(err.strip().splitlines()) == 1
    code, out, err = cli(monkeypatch, capsys, "plugins", "lsmt")
    assert code == 2 and "unknown model 'lsmt' (did you mean 'lstm'?)" in err
    code, out, err = cli(monkeypatch, capsys, "plugins", "zzzzqq")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert err.startswith("error: unknown plugin 'zzzzqq'")


def test_plugin_texts_are_printed_literally(markup_plugin, monkeypatch, capsys) -> None:
    code, out, err = cli(monkeypatch, capsys, "plugins")
    assert code == 0 and err == ""
    assert Literal.description in out
    code, out, err = cli(monkeypatch, capsys, "plugins", "markup-test")
    assert code == 0 and err == ""
    assert Literal.description in out
    assert "rows of [W_hh; W_xh] per [/red] block" in out
    assert "a [link=x]default[/link] that looks like markup" in out
    assert "'[red]'" in out and re.search(r"^requires\s+jvp_state\s*$", out, re.M)
    assert re.search(r"^gradient\s+unbiased, stochastic, online\s*$", out, re.M)
    assert re.search(r"^distribution\s+none \(registered in-process\)\s*$", out, re.M)
    # the same through 80 columns: shortened, never parsed
    code, out, _ = cli(monkeypatch, capsys, "plugins", columns=80)
    line = next(line for line in out.splitlines() if "markup-test" in line)
    assert "keeps the state [h; c]" in line


# -- run directories --------------------------------------------------------------------------
def test_a_missing_run_directory_is_named(tmp_path: Path, monkeypatch, capsys) -> None:
    missing = tmp_path / "nope"
    pytest.importorskip("matplotlib")
    code, out, err = cli(monkeypatch, capsys, "plot", str(missing), "--out",
                         str(tmp_path / "c.png"))
    assert code == 2 and out == ""
    assert err == f"error: no such run directory: {str(missing)!r}\n"
    with pytest.raises(gradflow.RunDirError, match=r"^no such run directory: '.*nope'$"):
        gradflow.load_run(missing)
    (tmp_path / "empty").mkdir()  # a directory that exists, without config.json
    with pytest.raises(gradflow.RunDirError, match=r"is not a gradflow run directory "
                                                   r"\(config.json is missing\)"):
        gradflow.load_run(tmp_path / "empty")
