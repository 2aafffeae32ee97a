"""Building the parts of a run from its configuration: backend, task, model, estimator, optimizer.

:func:`build` creates everything a :class:`~gradflow.TrainConfig` names through the registry's
construction path (:mod:`gradflow.registry.factory`: names, options, capabilities, plugins named
in errors), checks that the model fits the task, applies the estimator's optimizer defaults, and
returns the resolved configuration (every default spelled out) with the parts.

Seeds: the run's seed is split (:meth:`~gradflow.CounterRNG.spawn`) into independent seeds for
the model's initialisation, the task and the estimator, so the same config gives bit-identical
numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import BaseModel, ValidationError

from gradflow.contracts.backend import Backend, get_backend
from gradflow.contracts.errors import ConfigError, PluginError, PluginFailed
from gradflow.contracts.estimator import Estimator
from gradflow.contracts.logger import Logger
from gradflow.contracts.model import Model
from gradflow.contracts.random import CounterRNG
from gradflow.contracts.task import Task
from gradflow.registry.discovery import PluginInfo
from gradflow.registry.factory import (
    Built,
    build_estimator,
    build_logger,
    build_model,
    build_task,
)
from gradflow.registry.guard import blame
from gradflow.runfiles.config import OptimizerSection, PluginSection, TrainConfig
from gradflow.training.optimizers import Optimizer, create_optimizer

#: spawn keys of the seeds derived from ``run.seed``
SEED_KEYS = {"model": 1, "task": 2, "estimator": 3}


@dataclass
class Components:
    """What a config builds: backend, task, model, estimator, optimizer, resolved config."""

    config: TrainConfig
    backend: Backend
    task: Task
    model: Model
    estimator: Estimator
    optimizer: Optimizer
    seeds: dict[str, int] = field(default_factory=dict)
    #: the registry entries of the task, model and estimator (to name them in messages)
    infos: dict[str, PluginInfo] = field(default_factory=dict)
    #: the run's metrics loggers (``run.loggers``), with their registry entries
    loggers: list[Built[Logger]] = field(default_factory=list)
    #: the optimizer settings that came from the estimator's ``optimizer_defaults`` (those the
    #: config did not set), to say so where the settings are shown
    optimizer_defaults: dict[str, Any] = field(default_factory=dict)

    def plugins(self) -> list[tuple[PluginInfo, type]]:
        """(registry entry, class) of every plugin the run uses: to name one in an error."""
        own = [(info, type(getattr(self, kind))) for kind, info in self.infos.items()]
        return own + [(built.info, type(built.instance)) for built in self.loggers]


def derived_seeds(seed: int) -> dict[str, int]:
    """The seeds of the model's initialisation, the task and the estimator, from ``run.seed``."""
    root = CounterRNG(np, seed)
    return {name: root.spawn(key).seed for name, key in SEED_KEYS.items()}


def _resolved(section: PluginSection, options: BaseModel) -> PluginSection:
    return PluginSection(name=section.name, **options.model_dump(mode="json"))


def estimator_defaults(defaults: dict[str, Any], opt: OptimizerSection) -> dict[str, Any]:
    """The estimator's optimizer defaults that apply: those the user did not set. If the user
    chose another optimizer than the one the defaults are tuned for, its learning-rate settings
    do not carry over; only the variance control (clipping) does."""
    chosen = opt.name if "name" in opt.model_fields_set else None
    if chosen is not None and defaults.get("name", chosen) != chosen:
        defaults = {k: v for k, v in defaults.items() if k in ("clip", "clip_rec")}
    return {k: v for k, v in defaults.items() if k not in opt.model_fields_set}


def _task_sizes(task: Task, info: PluginInfo) -> dict[str, int]:
    with blame(info, "while being created"):
        sizes = {key: getattr(task, key) for key in ("n_in", "n_out")}
    for key, size in sizes.items():  # n_in may be 0 (influence: no input), n_out may not
        if isinstance(size, bool) or not isinstance(size, int) or size < (key == "n_out"):
            raise PluginFailed(f"{info.origin} has {key} = {size!r}; it must be a "
                               f"{'positive' if key == 'n_out' else 'non-negative'} integer")
    return sizes


def _model_for(config: TrainConfig, task: Task, sizes: dict[str, int],
               backend: Backend) -> Any:
    """The configured model with the task's ``n_in``/``n_out`` (setting others is an error)."""
    options = config.model.options()
    for key, size in sizes.items():
        if key in options and options[key] != size:
            raise PluginError(f"model.{key} = {options[key]!r} does not match task "
                              f"{task.name!r}, whose {key} is {size}; leave it unset")
        options[key] = size
    try:
        return build_model(config.model.name, options, backend)
    except PluginFailed:
        raise
    except PluginError as exc:
        first = str(exc).split(";")[0]
        if "n_in" not in first and "n_out" not in first:
            raise
        raise PluginError(f"{exc} (the trainer sets n_in = {task.n_in} and n_out = "
                          f"{task.n_out} from task {task.name!r})") from None


def check_updates(estimator: Estimator, task: Task, batch: int) -> None:
    """Refuse an estimator that would never return a direction on this task's stream: one that
    updates only when every stream ends a sequence (``online = False``), on a stream without
    sequences, or whose streams end theirs at different steps."""
    if estimator.online:
        return
    sequences = task.sequences
    if sequences == "aligned" or (sequences == "per-stream" and batch == 1):
        return
    why = ("is one endless stream (no step starts a new sequence)" if sequences == "none" else
           f"ends the sequences of its {batch} streams at different steps")
    raise ConfigError(f"estimator {estimator.name!r} returns a direction only when every stream "
                      f"ends a sequence at the same step, and task {task.name!r} {why}: it "
                      "would never update; choose an online estimator (e.g. tbptt)"
                      + (" or one stream (run.batch = 1)" if sequences == "per-stream" else ""))


def build(config: TrainConfig) -> Components:
    """Create everything ``config`` names, checking names, options, sizes and capabilities.

    The model's ``n_in``/``n_out`` come from the task (setting them to other values is an error);
    the estimator's :attr:`~gradflow.Estimator.optimizer_defaults` fill the optimizer settings the
    config does not set explicitly. The returned config is resolved: every default spelled out.
    """
    run = config.run
    seeds = derived_seeds(run.seed)
    backend = get_backend(run.backend, run.dtype, run.seed)
    task = build_task(config.task.name, config.task.options(), backend, run.batch,
                      seeds["task"])
    sizes = _task_sizes(task.instance, task.info)
    model = _model_for(config, task.instance, sizes, backend)
    estimator = build_estimator(config.estimator.name, config.estimator.options(),
                                model.instance)
    check_updates(estimator.instance, task.instance, run.batch)
    if len(set(run.loggers)) != len(run.loggers):
        raise ConfigError(f"run.loggers names a logger twice: {run.loggers}")
    loggers = [build_logger(name, {}) for name in run.loggers]

    opt = config.optimizer
    defaults = estimator_defaults(estimator.info.cls.optimizer_defaults, opt)
    try:
        opt = OptimizerSection.model_validate({**opt.model_dump(), **defaults})
    except ValidationError as exc:
        raise PluginError(f"estimator {estimator.info.name!r}: invalid optimizer_defaults "
                          f"{defaults!r} ({exc.errors()[0]['msg']})") from None
    opt.lr = opt.resolved_lr()
    optimizer = make_optimizer(opt, backend, model.instance.layout)

    resolved = TrainConfig(
        run=run.model_copy(), model=_resolved(config.model, model.options),
        estimator=_resolved(config.estimator, estimator.options),
        task=_resolved(config.task, task.options), optimizer=opt)
    infos = {"task": task.info, "model": model.info, "estimator": estimator.info}
    return Components(resolved, backend, task.instance, model.instance, estimator.instance,
                      optimizer, seeds, infos, loggers, defaults)


def make_optimizer(opt: OptimizerSection, backend: Backend, layout: Any,
                   replicas: int | None = None) -> Optimizer:
    """The optimizer a (resolved) optimizer section describes, over θ of ``layout`` — for
    ``replicas`` runs advanced together, over (R, P)."""
    return create_optimizer(
        opt.name, backend.xp, layout.size, backend.dtype, layout.n_rec, opt.lr_rec_scale,
        replicas=replicas, momentum=opt.momentum, beta1=opt.beta1, beta2=opt.beta2, eps=opt.eps)


def resolve_config(config: TrainConfig) -> TrainConfig:
    """``config`` with every default spelled out, as a run would use it (see :func:`build`),
    without needing its backend to be usable here (a CuPy config resolves on a CPU machine)."""
    probe = config.model_copy(deep=True)
    probe.run.backend = "numpy"
    resolved = build(probe).config
    resolved.run.backend = config.run.backend
    return resolved
