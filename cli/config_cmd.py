"""``gradflow config schema`` and ``gradflow config show``: the configuration, inspected.

``schema`` prints the JSON schema of a training config (every registered plugin's options
included; editors such as VS Code's Even Better TOML validate and complete a file against it).
``show`` prints a config resolved as ``gradflow train`` would run it — every default spelled out,
the model's sizes taken from the task, the estimator's optimizer defaults applied — as TOML with
each option's description as a comment (written with tomlkit), or as JSON.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import tomlkit
import typer
from gradflow_cli.help_format import Command, Group
from tomlkit.container import Container
from tomlkit.items import Table

from gradflow.contracts.errors import ConfigError
from gradflow.runfiles.config import (
    build_config,
    config_from_dict,
    load_file,
    merge,
    parse_assignment,
)
from gradflow.runfiles.config_schema import config_schema, field_descriptions
from gradflow.training.components import resolve_config

config_app = typer.Typer(
    help="Inspect training configurations: the JSON schema, and a file resolved with defaults.",
    cls=Group,
    no_args_is_help=True,
)

#: characters a TOML comment cannot hold (control characters but tab)
_NOT_IN_COMMENT = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


class Format(StrEnum):
    toml = "toml"
    json = "json"


def to_toml(data: Mapping[str, Any], comments: Mapping[str, str] | None = None) -> str:
    """``data`` (tables of scalars, arrays and sub-tables) as a TOML document.

    Top-level scalars come first, then each table (``[name]``, nested ones ``[name.sub]``), each
    table's scalars before its sub-tables. ``comments`` maps a dotted key (``"run.steps"``) to a
    text written as ``# ...`` lines above the key. ``None`` has no TOML form: such a key is a
    comment, ``# key = (not set)``. Reading the output back (:mod:`tomllib`) gives ``data``
    without its ``None`` entries.
    """
    doc = tomlkit.document()
    _fill(doc, data, (), comments or {})
    return tomlkit.dumps(doc)


def _comment(text: str) -> Any:
    return tomlkit.comment(_NOT_IN_COMMENT.sub(" ", text))


def _fill(container: Container | Table, data: Mapping[str, Any], path: tuple[str, ...],
          comments: Mapping[str, str]) -> None:
    for key, value in data.items():
        if isinstance(value, Mapping):
            continue
        for line in (comments.get(".".join((*path, key))) or "").splitlines():
            container.add(_comment(line))
        if value is None:
            container.add(_comment(f"{tomlkit.key(key).as_string()} = (not set)"))
        else:
            container.add(key, value)
    for key, value in data.items():
        if isinstance(value, Mapping):
            table = tomlkit.table()
            _fill(table, value, (*path, key), comments)
            container.add(key, table)


def _write(text: str, out: Path | None) -> None:
    if out is None:
        typer.echo(text, nl=False)
        return
    try:
        out.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot write {str(out)!r}: {exc.strerror or exc}") from None


@config_app.command("schema", cls=Command)
def schema(
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", metavar="FILE",
        help="write the schema to this file instead of standard output")] = None,
) -> None:
    """Print the JSON schema (draft 2020-12) of a training config, every plugin's options
    included: each plugin section is a oneOf over the registered plugins, by `name`."""
    _write(json.dumps(config_schema(), indent=2, ensure_ascii=False) + "\n", out)


@config_app.command("show", cls=Command)
def show(
    file: Annotated[Path | None, typer.Argument(
        metavar="FILE", show_default=False,
        help="a TOML config, a JSON config or a run directory (default: no file, the "
             "defaults)")] = None,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", metavar="SECTION.KEY=VALUE",
        help="override a config value, repeatable (e.g. --set model.n_hidden=8)")] = None,
    format_: Annotated[Format, typer.Option(
        "--format", "-f", metavar="FORMAT",
        help="toml (with the options' descriptions as comments) or json")] = Format.toml,
    comments: Annotated[bool, typer.Option(
        "--comments/--no-comments", help="TOML: write each option's description above it")
    ] = True,
) -> None:
    """Print FILE's config resolved as `gradflow train` would run it: every default spelled
    out, model sizes from the task, the estimator's optimizer defaults applied.

    A sweep grid's sweep table is left out (the base config is shown).
    """
    data: dict[str, Any] = load_file(file) if file is not None else {}
    if "sweep" in data:
        data = {k: v for k, v in data.items() if k != "sweep"}
        typer.echo("note: the [sweep] table is not part of a run's config; showing the base "
                   "config (gradflow sweep --dry-run lists the runs)", err=True)
    for item in set_ or ():
        merge(data, *parse_assignment(item))
    config = resolve_config(config_from_dict(data) if data else build_config())
    dumped = config.model_dump(mode="json")
    if format_ is Format.json:
        typer.echo(json.dumps(dumped, indent=2, ensure_ascii=False))
        return
    notes = field_descriptions(config) if comments else {}
    typer.echo(to_toml(dumped, notes), nl=False)
