"""``gradflow config schema`` and ``gradflow config show``: the configuration, inspected.

``schema`` prints the JSON schema of a training config (every registered plugin's options
included; editors such as VS Code's Even Better TOML validate and complete a file against it).
``show`` prints a config resolved as ``gradflow train`` would run it — every default spelled out,
the model's sizes taken from the task, the estimator's optimizer defaults applied — as TOML with
each option's description as a comment, or as JSON.
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from gradflow.contracts.errors import ConfigError
from gradflow.runfiles.config import (
    build_config,
    config_from_dict,
    load_file,
    merge,
    parse_assignment,
)
from gradflow.runfiles.config_schema import config_schema, field_descriptions
from gradflow.runfiles.toml_writer import dumps
from gradflow.training.components import resolve_config

config_app = typer.Typer(
    help="Inspect training configurations: the JSON schema, and a file resolved with defaults.",
    no_args_is_help=True,
)


class Format(StrEnum):
    toml = "toml"
    json = "json"


def _write(text: str, out: Path | None) -> None:
    if out is None:
        typer.echo(text, nl=False)
        return
    try:
        out.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot write {str(out)!r}: {exc.strerror or exc}") from None


@config_app.command("schema")
def schema(
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", help="write the schema to this file instead of standard output")] = None,
) -> None:
    """Print the JSON schema (draft 2020-12) of a training config, every plugin's options
    included: each plugin section is a oneOf over the registered plugins, by `name`."""
    _write(json.dumps(config_schema(), indent=2, ensure_ascii=False) + "\n", out)


@config_app.command("show")
def show(
    file: Annotated[Path | None, typer.Argument(
        help="a TOML config, a JSON config or a run directory (default: no file, the "
             "defaults)", show_default=False)] = None,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", help="section.key=value override, repeatable")] = None,
    format_: Annotated[Format, typer.Option(
        "--format", "-f", help="toml (with the options' descriptions as comments) or json")
    ] = Format.toml,
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
    typer.echo(dumps(dumped, notes), nl=False)
