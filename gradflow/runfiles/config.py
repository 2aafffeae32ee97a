"""The configuration of a training run: one pydantic model with the sections ``run``, ``model``,
``estimator``, ``task`` and ``optimizer``.

The plugin sections (``model``, ``estimator``, ``task``) hold ``name`` and that plugin's options;
the options are validated by the plugin's own ``Options`` model when the run is built
(:func:`gradflow.registry.validate_options`), and the resolved config written to the run directory
spells every default out. A config comes from a TOML file (or a JSON file such as a run's
``config.json``), ``section.key=value`` overrides (values parsed as TOML literals, falling back to
plain strings) and command-line flags, in that order of precedence (the later wins).
"""

from __future__ import annotations

import json
import math
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from gradflow.contracts.errors import ConfigError, validation_problems

SECTIONS = ("run", "model", "estimator", "task", "optimizer")
#: the key of a run's config.json that records where and with what it ran (not a setting)
PROVENANCE = "provenance"
PLUGIN_SECTIONS = ("model", "estimator", "task")
#: the optimizers and learning-rate schedules a config can name (gradflow.training implements them)
OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("constant", "inv-sqrt", "smooth-inv-sqrt")
#: learning rate of each optimizer when the config does not give one
DEFAULT_LR = {"sgd": 0.1, "adam": 0.003}
#: plugin used by a section that does not name one
DEFAULT_PLUGIN = {"model": "rnn", "estimator": "rtrl", "task": "add"}


class _Strict(BaseModel):
    # NaN and ±inf are refused everywhere (a learning rate of inf is a typo, not a setting)
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class RunSection(_Strict):
    """How long, on what, and where the results go."""

    steps: int = Field(100_000, ge=1, description="number of data steps")
    batch: int = Field(1, ge=1, description="B: number of independent streams")
    seed: int = Field(0, ge=0, description="seeds the model's initialisation, task and estimator")
    backend: Literal["numpy", "cupy", "array_api_strict"] = "numpy"
    dtype: Literal["float64", "float32"] = "float64"
    threads: int | None = Field(1, ge=1, description="BLAS threads while training (None: the "
                                "library's default); one is fastest for small online steps")
    out: str | None = Field(None, description="run directory (default runs/<time>-<task>-<est>)")
    log_every: int = Field(1000, ge=1, description="steps per metrics line (running mean)")
    eval_every: int = Field(10_000, ge=0, description="steps between held-out evaluations "
                            "(0: never; a multiple of log_every)")
    eval_steps: int = Field(2000, ge=1, description="steps of the held-out stream per evaluation")
    checkpoint_every: int = Field(10_000, ge=0, description="steps between checkpoints (0: at "
                                  "the end only; a multiple of log_every)")
    final_window: int = Field(5000, ge=1, description="the final loss is the mean over the "
                              "last final_window steps")
    divergence_factor: float = Field(
        100.0, ge=0, description="stop as diverged when a metrics line's mean loss exceeds this "
        "many times the task's largest reference loss (0: never; see docs/training.md)")
    loggers: list[str] = Field(default_factory=list, description="metrics loggers besides "
                               "metrics.jsonl: names of registered loggers (tensorboard, mlflow)")
    replicas: int = Field(1, ge=1, le=4096, description="R: independent runs advanced together "
                          "(own θ, seed, learning rate, state and run directory "
                          "out/replica-000 ...), each equal to the same run made alone")
    replica_seeds: list[int] | None = Field(
        None, description="the seed of each replica (R numbers; default seed, seed + 1, ...)")
    align_every: int = Field(
        0, ge=0, description="measure, at the first update every this many steps, the cosine and "
        "relative error of the estimator's direction against the exact online gradient (an exact "
        "estimator, RTRL, carried alongside on the run's own trajectory and θ; metrics align_cos "
        "and align_relerr; 0: off)")

    @field_validator("out")
    @classmethod
    def _usable_path(cls, value: str | None) -> str | None:
        if value is not None and (not value.strip() or "\x00" in value):
            raise ValueError("must be a non-empty path without NUL characters")
        return value

    @model_validator(mode="after")
    def _aligned(self) -> RunSection:
        for key in ("eval_every", "checkpoint_every"):
            value = getattr(self, key)
            if value and value % self.log_every:
                raise ValueError(f"{key} ({value}) must be a multiple of log_every "
                                 f"({self.log_every})")
        if self.replica_seeds is not None and any(seed < 0 for seed in self.replica_seeds):
            raise ValueError("replica_seeds must be non-negative")
        return self


class PluginSection(BaseModel):
    """``name`` of a registered plugin plus its options (checked by the plugin's own model)."""

    model_config = ConfigDict(extra="allow")

    name: str

    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class OptimizerSection(_Strict):
    """Optimizer, learning-rate schedule and clipping (see gradflow.training.optimizers, .schedules,
    .clipping)."""

    name: Literal[OPTIMIZERS] = "adam"  # type: ignore[valid-type]
    lr: float | None = Field(None, gt=0, description="γ; default per optimizer: sgd 0.1, "
                             "adam 0.003")
    schedule: Literal[SCHEDULES] = Field(  # type: ignore[valid-type]
        "smooth-inv-sqrt", description="constant: γ; inv-sqrt: γ/√t; smooth-inv-sqrt: γ/(1+α√t)")
    decay: float = Field(0.01, ge=0, description="α of smooth-inv-sqrt")
    momentum: float = Field(0.0, ge=0, lt=1, description="sgd: momentum μ")
    beta1: float = Field(0.9, ge=0, lt=1, description="adam: β₁")
    beta2: float = Field(0.999, ge=0, lt=1, description="adam: β₂")
    eps: float = Field(1e-8, gt=0, description="adam: ε")
    clip: float | None = Field(None, gt=0, description="clip the direction's norm to this")
    clip_rec: float | None = Field(None, gt=0, description="clip the recurrent part's norm to "
                                   "this (variance control for rank-one estimators)")
    lr_rec_scale: float = Field(1.0, gt=0, description="learning-rate factor on θ_rec")
    replica_lrs: list[float] | None = Field(
        None, description="γ of each replica of a replicated run (run.replicas numbers; "
        "default: lr for all)")

    @field_validator("replica_lrs")
    @classmethod
    def _positive(cls, value: list[float] | None) -> list[float] | None:
        if value is not None and not all(lr > 0 and math.isfinite(lr) for lr in value):
            raise ValueError("replica_lrs must be positive numbers")
        return value

    def resolved_lr(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[self.name]

    def describe(self) -> str:
        """Every setting that shapes the updates, in one line: the optimizer, its rate and
        schedule, its own constants and the clipping (e.g. ``sgd lr 0.01, constant schedule,
        momentum 0, clip_rec 0.1``)."""
        schedule = f"{self.schedule} schedule" + (
            f" (α {self.decay:g})" if self.schedule == "smooth-inv-sqrt" else "")
        parts = [f"{self.name} lr {self.resolved_lr():g}", schedule]
        if self.name == "sgd":
            parts.append(f"momentum {self.momentum:g}")
        else:
            parts.append(f"β₁ {self.beta1:g}, β₂ {self.beta2:g}, ε {self.eps:g}")
        clipping = [f"{key} {value:g}" for key, value in (("clip", self.clip),
                                                            ("clip_rec", self.clip_rec))
                    if value is not None]
        parts.extend(clipping or ["no clipping"])
        if self.lr_rec_scale != 1.0:
            parts.append(f"lr_rec_scale {self.lr_rec_scale:g}")
        return ", ".join(parts)


class TrainConfig(_Strict):
    """The whole configuration of ``gradflow train``."""

    run: RunSection = Field(default_factory=RunSection)
    model: PluginSection = Field(
        default_factory=lambda: PluginSection(name=DEFAULT_PLUGIN["model"]))
    estimator: PluginSection = Field(
        default_factory=lambda: PluginSection(name=DEFAULT_PLUGIN["estimator"]))
    task: PluginSection = Field(
        default_factory=lambda: PluginSection(name=DEFAULT_PLUGIN["task"]))
    optimizer: OptimizerSection = Field(default_factory=OptimizerSection)

    @model_validator(mode="after")
    def _replicas(self) -> TrainConfig:
        replicas = self.run.replicas
        if replicas > 1 and self.run.align_every:
            raise ValueError(f"run.align_every measures one run; it cannot be combined with "
                             f"run.replicas = {replicas}")
        for key, values, what in (("run.replica_seeds", self.run.replica_seeds, "seeds"),
                                  ("optimizer.replica_lrs", self.optimizer.replica_lrs, "rates")):
            if values is not None and len(values) != replicas:
                raise ValueError(f"{key} has {len(values)} {what} for run.replicas = {replicas}")
        return self


#: what :func:`as_config` accepts
ConfigLike = TrainConfig | Mapping[str, Any] | str | Path | None


# -- building a config ---------------------------------------------------------------------------
def _one_line(exc: ValidationError) -> str:
    return validation_problems(exc, "(config)", "unknown key")


def config_from_dict(data: dict[str, Any]) -> TrainConfig:
    """Validate a nested dict (as read from TOML); one-line :class:`ConfigError` on failure."""
    unknown = [k for k in data if k not in SECTIONS]
    if unknown:
        raise ConfigError(f"unknown config section(s) {', '.join(map(repr, unknown))}; "
                          f"the sections are {', '.join(SECTIONS)}")
    for key in PLUGIN_SECTIONS:
        section = data.get(key)
        if section is not None and not isinstance(section, dict):
            raise ConfigError(f"config section {key!r} must be a table, got {section!r}")
        if section is not None and "name" not in section:
            data = {**data, key: {"name": DEFAULT_PLUGIN[key], **section}}
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"invalid config: {_one_line(exc)}") from None


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML config file into a dict; one-line :class:`ConfigError` on failure."""
    p = Path(path)
    try:
        with p.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {str(p)!r} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {str(p)!r} is a directory") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {str(p)!r}: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {str(p)!r} is not valid TOML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"config file {str(p)!r} is nested too deeply") from None


def load_file(path: str | Path) -> dict[str, Any]:
    """Read a config file: JSON if its name ends in ``.json`` (e.g. a run's ``config.json``),
    else TOML; a run directory stands for its ``config.json``."""
    p = Path(path)
    if p.is_dir() and (p / "config.json").is_file():
        p = p / "config.json"
    if p.suffix.lower() != ".json":
        return load_toml(p)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {str(p)!r} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {str(p)!r}: {exc.strerror or exc}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {str(p)!r} is not valid JSON: {exc}") from None
    except RecursionError:
        raise ConfigError(f"config file {str(p)!r} is nested too deeply") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(p)!r} must hold a JSON object")
    data.pop(PROVENANCE, None)  # a run's record of where it ran, not a setting
    return data


def run_config(data: Any) -> TrainConfig:
    """The configuration in a run's ``config.json`` (its ``provenance`` record set aside)."""
    if isinstance(data, dict):
        data = {k: v for k, v in data.items() if k != PROVENANCE}
    return TrainConfig.model_validate(data)


def parse_value(text: str) -> Any:
    """A TOML literal (``10``, ``1e-3``, ``true``, ``"x"``, ``[1, 2]``), else the string itself."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text
    except RecursionError:
        raise ConfigError(f"value {text[:40]!r}... is nested too deeply") from None


def parse_assignment(item: str) -> tuple[str, str, Any]:
    """``"section.key=value"`` -> (section, key, parsed value)."""
    lhs, sep, rhs = item.partition("=")
    section, dot, key = lhs.strip().partition(".")
    if not sep or not dot or not key or "." in key:
        raise ConfigError(f"--set {item!r}: expected section.key=value, e.g. "
                          "estimator.truncation=10")
    if section not in SECTIONS:
        raise ConfigError(f"--set {item!r}: unknown section {section!r}; the sections are "
                          f"{', '.join(SECTIONS)}")
    return section, key.strip(), parse_value(rhs.strip())


def merge(data: dict[str, Any], section: str, key: str, value: Any) -> None:
    """Set ``data[section][key] = value`` in place (creating the section)."""
    table = data.setdefault(section, {})
    if not isinstance(table, dict):
        raise ConfigError(f"config section {section!r} must be a table, got {table!r}")
    table[key] = value


def build_config(path: str | Path | None = None, sets: list[str] | tuple[str, ...] = (),
                 flags: dict[str, Any] | None = None) -> TrainConfig:
    """File, then ``--set`` overrides, then flags (``{"section.key": value}``; ``None`` values
    are ignored), validated into a :class:`TrainConfig`.

    ``run.out`` may name any directory, relative or absolute, from any of the three: a run never
    overwrites a non-empty directory without ``--force``, and then only gradflow's own files
    (:mod:`gradflow.runfiles.rundir`).
    """
    data: dict[str, Any] = load_file(path) if path is not None else {}
    for item in sets:
        merge(data, *parse_assignment(item))
    for dotted, value in (flags or {}).items():
        if value is not None:
            section, _, key = dotted.partition(".")
            merge(data, section, key, value)
    return config_from_dict(data)


def as_config(config: ConfigLike = None, sets: Sequence[str] = (),
              out: str | Path | None = None) -> TrainConfig:
    """A :class:`TrainConfig` from a config, a nested dict, a TOML path or ``None``, with
    ``section.key=value`` overrides applied (keys the config does not set keep their defaults,
    including an estimator's optimizer defaults). ``out``, when given, is the run directory the
    caller asked for: a TOML file's own ``run.out`` is then not used."""
    if config is None or isinstance(config, str | Path):
        return build_config(config, sets, {"run.out": None if out is None else str(out)})
    if isinstance(config, TrainConfig):
        if not sets:
            return config
        data = config.model_dump(mode="json", exclude_unset=True)
    elif isinstance(config, Mapping):
        data = json.loads(json.dumps(config, default=str))  # a deep copy of plain values
    else:
        raise ConfigError(f"a config is a TrainConfig, a dict or a TOML path, not "
                          f"{type(config).__name__}")
    for item in sets:
        merge(data, *parse_assignment(item))
    return config_from_dict(data)
