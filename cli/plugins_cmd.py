"""``gradflow plugins [NAME]``: the registered estimators, models, tasks and loggers.

Without NAME, one line per plugin — kind, name (always whole) and its description shortened to
what fits the terminal; with NAME, everything about that plugin: its description, options (name,
type, default, description), what it requires (an estimator) or provides (a model), and where it
comes from. ``--json`` prints the same data for machines. Every text a plugin provides is printed
literally (as :class:`rich.text.Text`), never read as Rich markup.
"""

from __future__ import annotations

import difflib
import json
import types
import typing
from typing import Annotated, Any

import typer
from pydantic.fields import FieldInfo
from rich.console import Console
from rich.table import Table
from rich.text import Text

import gradflow
from gradflow.contracts.errors import PluginError
from gradflow.registry.discovery import PLUGIN_KINDS, PluginInfo, Registry

#: the gap between the columns of the compact list
_GAP = "  "


def _options_schema(info: PluginInfo) -> dict[str, Any]:
    out = {}
    for name, field in info.options.model_fields.items():
        default = field.default if not field.is_required() else None
        out[name] = {
            "default": default,
            "type": getattr(field.annotation, "__name__", str(field.annotation)),
            "description": field.description or "",
        }
    return out


def _row(info: PluginInfo) -> dict[str, Any]:
    """What ``--json`` says about one plugin."""
    return {
        "kind": info.kind,
        "name": info.name,
        "description": info.description,
        "capabilities" if info.kind != "estimator" else "requires": sorted(info.capabilities),
        "options": _options_schema(info),
        "plugin": info.plugin,
        "distribution": info.distribution,
        "version": info.version,
    }


def type_name(annotation: Any) -> str:
    """A type as a reader writes it: ``int``, ``float | None``, ``uniform | orthogonal``."""
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return " | ".join(str(arg) for arg in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(arg) for arg in typing.get_args(annotation))
    if annotation is type(None):
        return "None"
    if isinstance(annotation, type) and origin is None:
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def find(registry: Registry, name: str) -> list[PluginInfo]:
    """Every plugin called ``name`` (a model and a task may share one), or the registry's
    one-line error for an unknown name, with its "did you mean" when a name is close."""
    found = [registry.entries[kind][name] for kind in PLUGIN_KINDS
             if name in registry.entries[kind]]
    if found:
        return found
    kinds = {n: kind for kind in reversed(PLUGIN_KINDS) for n in registry.entries[kind]}
    close = difflib.get_close_matches(name, list(kinds), n=1, cutoff=0.6)
    if close:
        registry.get(kinds[close[0]], name)  # raises: unknown <kind> 'name' (did you mean ...)
    failed = [f for f in registry.failures if name in f.plugin or name in f.error]
    hint = f" ({failed[0]})" if failed else ""
    raise PluginError(f"unknown plugin {name!r}: no {', '.join(PLUGIN_KINDS[:-1])} or "
                      f"{PLUGIN_KINDS[-1]} has this name (see 'gradflow plugins'){hint}")


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def print_list(console: Console, infos: list[PluginInfo]) -> None:
    """One line per plugin: kind, name (whole, whatever the width), and as much of the
    description as fits."""
    kind_w = max([len("kind"), *(len(i.kind) for i in infos)])
    name_w = max([len("name"), *(len(i.name) for i in infos)])
    room = max(console.width - kind_w - name_w - 2 * len(_GAP), 12)
    console.print(Text.assemble(("kind".ljust(kind_w), "bold"), _GAP,
                                ("name".ljust(name_w), "bold"), _GAP, ("description", "bold")),
                  no_wrap=True, crop=False)
    for info in infos:
        description = Text(_one_line(info.description))
        description.truncate(room, overflow="ellipsis")
        console.print(Text.assemble(info.kind.ljust(kind_w), _GAP,
                                    (info.name.ljust(name_w), "cyan"), _GAP, description),
                      no_wrap=True, crop=False)


def _default(field: FieldInfo) -> str:
    """An option's default as it is written in a config: strings quoted."""
    if field.is_required():
        return "(required)"
    value = field.get_default(call_default_factory=True)
    return repr(value) if isinstance(value, str) else str(value)


def print_details(console: Console, info: PluginInfo) -> None:
    """Everything about one plugin (texts from the plugin printed literally)."""
    console.print(Text(info.name, style="bold cyan"))
    if info.description:
        console.print(Text(info.description))
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold", no_wrap=True)
    facts.add_column()
    facts.add_row("kind", Text(info.kind))
    if info.kind == "estimator":
        cls = info.cls
        traits = [str(cls.kind), "stochastic" if cls.stochastic else "deterministic",
                  "online" if cls.online else "offline"]
        facts.add_row("gradient", Text(", ".join(traits)))
        facts.add_row("requires", Text(", ".join(sorted(info.capabilities)) or "nothing"))
    elif info.kind == "model" or info.capabilities:
        facts.add_row("capabilities", Text(", ".join(sorted(info.capabilities)) or "none"))
    facts.add_row("plugin", Text(info.plugin))
    facts.add_row("distribution", Text(info.distribution or "none (registered in-process)"))
    facts.add_row("version", Text(info.version or "-"))
    console.print(facts)
    fields = info.options.model_fields
    if not fields:
        console.print(Text("options: none"))
        return
    options = Table(box=None, padding=(0, 1), pad_edge=False, show_edge=False,
                    header_style="bold")
    options.add_column("option", no_wrap=True, style="cyan")
    options.add_column("type")
    options.add_column("default")
    options.add_column("description", ratio=1)
    for name, field in fields.items():
        options.add_row(Text(name), Text(type_name(field.annotation)), Text(_default(field)),
                        Text(field.description or ""))
    console.print()
    console.print(options)


def plugins(
    name: Annotated[str | None, typer.Argument(
        metavar="NAME", help="an estimator, model, task or logger: show its options and "
        "details", show_default=False)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """List the registered estimators, models, tasks and loggers: kind, name and description;
    or, given a NAME, that plugin's options (type, default, description), what it requires or
    provides, and its source distribution."""
    reg = gradflow.get_registry()
    infos = list(reg.all()) if name is None else find(reg, name)
    if as_json:
        failures = [{"plugin": f.plugin, "distribution": f.distribution, "error": f.error}
                    for f in reg.failures]
        typer.echo(json.dumps({"plugins": [_row(info) for info in infos], "failures": failures,
                               "disabled": reg.disabled}, indent=2, default=str))
        return
    console = Console(highlight=False)
    if name is not None:
        for i, info in enumerate(infos):
            if i:
                console.print()
            print_details(console, info)
        return
    print_list(console, infos)
    for failure in reg.failures:  # one line each, however narrow the terminal
        console.print(Text.assemble(("failed:", "red"), " ", str(failure)), soft_wrap=True)
    if reg.disabled:
        console.print(Text(f"disabled by GRADFLOW_DISABLE_PLUGINS: {', '.join(reg.disabled)}"),
                      soft_wrap=True)
    console.print(Text("gradflow plugins NAME: one plugin's options and details; --json: all",
                       style="dim"), soft_wrap=True)
