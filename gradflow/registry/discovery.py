"""The plugin registry: estimators, models and tasks found through pluggy and entry points.

Loading is lazy (on first use) and guarded: a plugin that fails to import, whose hook raises, or
that registers something malformed is recorded as a :class:`PluginFailure` naming the plugin, its
distribution and the exception, and every other plugin still works. The environment variable
``GRADFLOW_DISABLE_PLUGINS=name,...`` blocks plugins by entry-point name before they are imported.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata as md
import math
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pluggy
from pydantic import BaseModel

from gradflow.contracts.errors import GradflowError, PluginError, validation_problems
from gradflow.registry import hookspecs

#: the kinds of plugin, in the order they are listed
PLUGIN_KINDS = ("estimator", "model", "task", "logger")
_HOOKS = {
    "estimator": "gradflow_register_estimators",
    "model": "gradflow_register_models",
    "task": "gradflow_register_tasks",
    "logger": "gradflow_register_loggers",
}
DISABLE_ENV = "GRADFLOW_DISABLE_PLUGINS"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@dataclass(frozen=True)
class PluginInfo:
    """One registered estimator, model or task."""

    kind: str
    name: str
    cls: Any
    description: str
    options: type[BaseModel]
    capabilities: frozenset[str]
    plugin: str
    distribution: str | None
    version: str | None

    @property
    def origin(self) -> str:
        """``estimator 'uoro' (plugin 'builtin', distribution gradflow 0.1.0)``: what to name in
        a message about something this plugin did."""
        source = describe_source(self.plugin, self.distribution, self.version)
        return f"{self.kind} {self.name!r} ({source})"


def exception_line(exc: BaseException) -> str:
    """``TypeError: message`` on one line (a multi-line message is joined)."""
    text = " ".join(part.strip() for part in str(exc).splitlines() if part.strip())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def describe_source(plugin: str, distribution: str | None, version: str | None = None) -> str:
    """``plugin 'toy', distribution gradflow-toy-plugin 0.3.1`` (the parts that are known)."""
    if distribution is None:
        return f"plugin {plugin!r}, registered in-process"
    return f"plugin {plugin!r}, distribution {distribution}{' ' + version if version else ''}"


@dataclass(frozen=True)
class PluginFailure:
    """A plugin that could not be loaded or registered."""

    plugin: str
    distribution: str | None
    error: str

    def __str__(self) -> str:
        dist = f" (distribution {self.distribution})" if self.distribution else ""
        return f"plugin {self.plugin!r}{dist}: {self.error}"


@dataclass
class Registry:
    """Everything the loaded plugins registered."""

    entries: dict[str, dict[str, PluginInfo]] = field(
        default_factory=lambda: {k: {} for k in PLUGIN_KINDS}
    )
    failures: list[PluginFailure] = field(default_factory=list)
    disabled: list[str] = field(default_factory=list)
    manager: pluggy.PluginManager = field(
        default_factory=lambda: pluggy.PluginManager(hookspecs.PROJECT)
    )

    def __post_init__(self) -> None:
        self.manager.add_hookspecs(hookspecs)

    # -- lookup ------------------------------------------------------------------------------
    def get(self, kind: str, name: str) -> PluginInfo:
        table = self.entries[kind]
        if name in table:
            return table[name]
        available = ", ".join(sorted(table)) or "none"
        close = difflib.get_close_matches(str(name), list(table), n=1, cutoff=0.6)
        guess = f" (did you mean {close[0]!r}?)" if close else ""
        hint = ""
        failed = [f for f in self.failures if name in f.plugin or name in f.error]
        if failed:
            hint = f" ({failed[0]})"
        elif self.failures:
            hint = (f" ({len(self.failures)} plugin problem(s) reported: see 'gradflow plugins')")
        raise PluginError(f"unknown {kind} {name!r}{guess}; available: {available}{hint}")

    def names(self, kind: str) -> list[str]:
        return sorted(self.entries[kind])

    def all(self) -> Iterable[PluginInfo]:
        for kind in PLUGIN_KINDS:
            yield from (self.entries[kind][n] for n in sorted(self.entries[kind]))

    # -- loading -----------------------------------------------------------------------------
    def add_plugin(self, plugin: Any, name: str, distribution: str | None = None,
                   version: str | None = None) -> None:
        """Register a plugin object (a module with hook implementations) and collect its classes.

        Errors inside the plugin are recorded in :attr:`failures`, never raised.
        """
        try:
            self.manager.register(plugin, name=name)
        except Exception as exc:
            self._fail(name, distribution, exc)
            return
        for kind, hook_name in _HOOKS.items():
            hook = getattr(self.manager.hook, hook_name)
            for impl in hook.get_hookimpls():
                if impl.plugin is not plugin:
                    continue
                collected: list[Any] = []
                try:
                    impl.function(register=collected.append)
                except BaseException as exc:  # SystemExit too: a plugin never ends the process
                    if isinstance(exc, KeyboardInterrupt):
                        raise
                    self._fail(name, distribution, exc, f"hook {hook_name} raised")
                    continue
                for cls in collected:
                    try:
                        self._add(kind, cls, name, distribution, version)
                    except Exception as exc:  # a property of the class that raises...
                        self._fail(name, distribution, exc, f"registering {cls!r} failed")

    def _add(self, kind: str, cls: Any, plugin: str, dist: str | None,
             version: str | None) -> None:
        problem = _validate(kind, cls)
        if problem:
            self.failures.append(PluginFailure(plugin, dist, problem))
            return
        existing = self.entries[kind].get(cls.name)
        if existing is not None:
            self.failures.append(PluginFailure(
                plugin, dist,
                f"{kind} {cls.name!r} is already registered by plugin {existing.plugin!r}; "
                "the later registration is ignored"))
            return
        caps = getattr(cls, "requires" if kind == "estimator" else "capabilities", frozenset())
        self.entries[kind][cls.name] = PluginInfo(
            kind=kind, name=cls.name, cls=cls,
            description=str(getattr(cls, "description", "") or (cls.__doc__ or "").strip()
                            .split("\n")[0]),
            options=cls.Options, capabilities=frozenset(caps or ()), plugin=plugin,
            distribution=dist, version=version,
        )

    def _fail(self, plugin: str, dist: str | None, exc: BaseException,
              what: str = "failed to load") -> None:
        self.failures.append(
            PluginFailure(plugin, dist, f"{what}: {exception_line(exc)}")
        )


def _validate(kind: str, cls: Any) -> str | None:
    """Why ``cls`` cannot be registered as a ``kind``, or None."""
    from gradflow.contracts.estimator import KINDS, Estimator
    from gradflow.contracts.logger import Logger
    from gradflow.contracts.model import Model
    from gradflow.contracts.task import Task

    base = {"estimator": Estimator, "model": Model, "task": Task, "logger": Logger}[kind]
    if not (isinstance(cls, type) and issubclass(cls, base)):
        return (f"registered {cls!r} as a {kind}, but it is not a subclass of "
                f"gradflow.{base.__name__}")
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        return f"{kind} class {cls.__name__} has no name"
    if not _NAME.fullmatch(name):  # names end up in run directory names and messages
        return (f"{kind} name {name!r} is not allowed: use letters, digits, '.', '_' and '-', "
                "starting with a letter or digit")
    options = getattr(cls, "Options", None)
    if not (isinstance(options, type) and issubclass(options, BaseModel)):
        return f"{kind} {name!r}: Options must be a pydantic model"
    if options.model_config.get("extra") != "forbid":
        return f"{kind} {name!r}: Options must forbid unknown keys (extra='forbid')"
    if kind == "estimator" and getattr(cls, "kind", None) not in KINDS:
        return (f"estimator {name!r}: kind must be one of {', '.join(KINDS)}, got "
                f"{getattr(cls, 'kind', None)!r}")
    return None


def disabled_plugins() -> list[str]:
    raw = os.environ.get(DISABLE_ENV, "")
    return [p.strip() for p in raw.split(",") if p.strip()]


def _entry_points() -> list[md.EntryPoint]:
    eps = md.entry_points(group=hookspecs.ENTRY_POINT_GROUP)
    seen: set[tuple[str, str]] = set()
    unique = []
    for ep in eps:  # the same distribution can be visible twice on sys.path
        key = (ep.name, ep.value)
        if key not in seen:
            seen.add(key)
            unique.append(ep)
    return sorted(unique, key=lambda ep: (ep.name != "builtin", ep.name))


def load_registry() -> Registry:
    """Discover the plugins of the ``gradflow`` entry-point group and collect what they register."""
    registry = Registry()
    blocked = set(disabled_plugins())
    for ep in _entry_points():
        dist = ep.dist.name if ep.dist is not None else None
        version = ep.dist.version if ep.dist is not None else None
        if ep.name in blocked or (dist is not None and dist in blocked):
            registry.disabled.append(ep.name)
            continue
        try:
            plugin = ep.load()
        except BaseException as exc:  # a hostile plugin may raise SystemExit at import
            if isinstance(exc, KeyboardInterrupt):
                raise
            registry._fail(ep.name, dist, exc, "failed to import")
            continue
        registry.add_plugin(plugin, ep.name, dist, version)
    return registry


_REGISTRY: Registry | None = None
_EXTRA: list[tuple[Any, str]] = []


def get_registry() -> Registry:
    """The process-wide registry, loaded on first use."""
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = load_registry()
        for plugin, name in _EXTRA:
            _REGISTRY.add_plugin(plugin, name)
    return _REGISTRY


def exact_reference() -> str:
    """The exact per-step reference: the first registered estimator that declares
    ``kind = "exact"`` and runs online (returns a direction every step: RTRL). Chosen by what
    the estimators declare, never by name."""
    for info in get_registry().entries["estimator"].values():
        if info.cls.kind == "exact" and info.cls.online:
            return info.name
    raise GradflowError("no registered estimator is exact and online: there is no reference")


def reload_registry() -> Registry:
    """Forget the loaded registry and discover the plugins again (after installing one)."""
    global _REGISTRY
    _REGISTRY = None
    importlib.invalidate_caches()
    return get_registry()


def register_plugin(plugin: Any, name: str) -> None:
    """Register a plugin object in this process without packaging it (notebooks, tests)."""
    _EXTRA.append((plugin, name))
    if _REGISTRY is not None:
        _REGISTRY.add_plugin(plugin, name)


def unregister_plugin(name: str) -> None:
    """Undo :func:`register_plugin` (the registry is rebuilt on next use)."""
    global _REGISTRY
    _EXTRA[:] = [(p, n) for p, n in _EXTRA if n != name]
    _REGISTRY = None


def validate_options(info: PluginInfo, options: dict[str, Any]) -> BaseModel:
    """Validate plugin options with the plugin's own pydantic model; one-line errors."""
    from pydantic import ValidationError

    try:
        validated = info.options.model_validate(options)
    except ValidationError as exc:
        problems = validation_problems(exc, "(options)", "unknown option")
        known = ", ".join(info.options.model_fields) or "none"
        raise PluginError(
            f"{info.kind} {info.name!r}: invalid options ({problems}); "
            f"its options are: {known}"
        ) from None
    for key, value in validated:  # NaN or ±inf is never a setting (an ε of inf is a typo)
        if isinstance(value, float) and not math.isfinite(value) and key in options:
            raise PluginError(f"{info.kind} {info.name!r}: invalid options ({key}: Input "
                              "should be a finite number)")
    return validated

