"""The JSON schema of the whole training configuration, every registered plugin's options
included, and the field descriptions that ``gradflow config show`` writes as comments.

Each plugin section (``model``, ``estimator``, ``task``) is a ``oneOf`` over the registered
plugins of its kind, told apart by ``name`` (a pydantic discriminated union: ``name`` is a
constant in each variant, and the ``discriminator`` keyword maps names to variants). Each variant
is that plugin's own ``Options`` model plus ``name``; the default plugin's variant (``rnn``,
``rtrl``, ``add``) also accepts a section without ``name``, as the loader does. A plugin whose
options cannot be expressed in JSON schema appears as a variant that accepts any keys, with a
description saying so, so that one odd plugin does not take the schema of the others down.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, create_model

from gradflow.registry.discovery import PluginInfo, get_registry
from gradflow.runfiles.config import (
    DEFAULT_PLUGIN,
    PLUGIN_SECTIONS,
    OptimizerSection,
    RunSection,
    TrainConfig,
)

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def _variant(kind: str, info: PluginInfo) -> type[BaseModel]:
    """``info``'s options plus ``name`` (a constant), as one variant of the section's union."""
    title = f"{kind} {info.name}"
    default = info.name if DEFAULT_PLUGIN[kind] == info.name else ...
    name_field = (Literal[info.name], Field(default, description=info.description))
    try:
        variant = create_model(title, __base__=info.options, name=name_field)  # type: ignore[call-overload]
        variant.model_json_schema()
    except Exception:  # options that JSON schema cannot express
        variant = create_model(  # type: ignore[call-overload]
            title, __config__=ConfigDict(extra="allow", title=title,
                                         json_schema_extra={"description": (
                                             f"{info.description} (the options of this plugin "
                                             "cannot be expressed in JSON schema)")}),
            name=name_field)
    variant.__doc__ = info.description or None
    return variant


def _section(kind: str) -> Any:
    infos = [get_registry().entries[kind][n] for n in get_registry().names(kind)]
    variants = tuple(_variant(kind, info) for info in infos)
    if not variants:
        return dict[str, Any]
    if len(variants) == 1:
        return variants[0]
    return Annotated[Union[variants], Field(discriminator="name")]  # noqa: UP007


def schema_model() -> type[BaseModel]:
    """A pydantic model of the whole configuration with every registered plugin spelled out."""
    fields: dict[str, Any] = {
        "run": (RunSection, Field(default_factory=RunSection)),
        "optimizer": (OptimizerSection, Field(default_factory=OptimizerSection)),
    }
    for kind in PLUGIN_SECTIONS:
        fields[kind] = (_section(kind), Field(
            default={"name": DEFAULT_PLUGIN[kind]},
            description=f"the {kind} plugin (`name`, default {DEFAULT_PLUGIN[kind]!r}) and its "
                        "options"))
    order = ("run", "model", "estimator", "task", "optimizer")
    return create_model("TrainConfig", __config__=ConfigDict(extra="forbid"),  # type: ignore[call-overload]
                        __doc__=TrainConfig.__doc__, **{k: fields[k] for k in order})


def config_schema() -> dict[str, Any]:
    """The JSON schema (draft 2020-12) of a training configuration file."""
    schema = schema_model().model_json_schema()
    return {"$schema": SCHEMA_DIALECT, "title": "gradflow training configuration",
            **{k: v for k, v in schema.items() if k != "title"}}


def field_descriptions(config: TrainConfig) -> dict[str, str]:
    """``{"section.key": description}`` for every field of ``config`` that has one (the plugin
    sections from the options of the plugins it names)."""
    out: dict[str, str] = {}
    for section, model in (("run", RunSection), ("optimizer", OptimizerSection)):
        for key, info in model.model_fields.items():
            if info.description:
                out[f"{section}.{key}"] = info.description
    registry = get_registry()
    for kind in PLUGIN_SECTIONS:
        name = getattr(config, kind).name
        if name not in registry.entries[kind]:
            continue
        info = registry.entries[kind][name]
        if info.description:
            out[f"{kind}.name"] = info.description
        for key, field in info.options.model_fields.items():
            if field.description:
                out[f"{kind}.{key}"] = field.description
    return out
