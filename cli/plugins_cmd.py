"""``gradflow plugins``: list every registered estimator, model and task."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

import gradflow


def _options_schema(info: Any) -> dict[str, Any]:
    out = {}
    for name, field in info.options.model_fields.items():
        default = field.default if not field.is_required() else None
        out[name] = {
            "default": default,
            "type": getattr(field.annotation, "__name__", str(field.annotation)),
            "description": field.description or "",
        }
    return out


def plugins(
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """List every registered estimator, model and task with its options and source."""
    reg = gradflow.get_registry()
    rows = [
        {
            "kind": info.kind,
            "name": info.name,
            "description": info.description,
            "capabilities" if info.kind != "estimator" else "requires": sorted(info.capabilities),
            "options": _options_schema(info),
            "plugin": info.plugin,
            "distribution": info.distribution,
            "version": info.version,
        }
        for info in reg.all()
    ]
    failures = [{"plugin": f.plugin, "distribution": f.distribution, "error": f.error}
                for f in reg.failures]
    if as_json:
        typer.echo(json.dumps({"plugins": rows, "failures": failures,
                               "disabled": reg.disabled}, indent=2, default=str))
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    table = Table(title="gradflow plugins")
    for col in ("kind", "name", "options", "source", "description"):
        table.add_column(col)
    for row in rows:
        opts = ", ".join(f"{k}={v['default']}" for k, v in row["options"].items())
        source = f"{row['distribution']} {row['version']}" if row["distribution"] else row["plugin"]
        table.add_row(row["kind"], row["name"], opts, source, row["description"])
    console.print(table)
    for f in reg.failures:  # one line each, however narrow the terminal
        console.print(f"[red]failed:[/red] {escape(str(f))}", soft_wrap=True)
    if reg.disabled:
        console.print(f"disabled by GRADFLOW_DISABLE_PLUGINS: {', '.join(reg.disabled)}")


