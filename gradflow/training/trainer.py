"""The online trainer: for every step, task → forward → loss → estimator → optimizer.

Step t (t = 1, 2, ...):

1. the task gives x_t, y_t and a reset mask; streams that reset go back to h_0 and the estimator
   is told (``Estimator.reset``);
2. h_t, cache = model.forward(θ, h_{t−1}, x_t); ŷ_t = model.readout(θ, h_t);
   ℓ_t, ∂ℓ_t/∂ŷ_t = loss(ŷ_t, y_t); the task is shown ℓ_t (``Task.observe``: a curriculum such
   as ``copy``'s lengthens its sequences on it);
3. δ_t, ∂ℓ_t/∂θ_out = model.readout_vjp(θ, h_t, ∂ℓ_t/∂ŷ_t);
4. g = estimator.step(θ, cache, δ_t, ∂ℓ_t/∂θ_out); when it returns a direction: clip it (the
   recurrent part and/or the whole), then θ ← optimizer.update(θ, g, η_t), η_t from the schedule.

The loss stays on the device: it is summed there and read back only when a metrics line is written
(every ``log_every`` steps, as the running mean since the previous line, with the task's own
numbers, ``Task.metrics()``, such as ``copy_length``). At those moments a
non-finite loss or θ stops the run with a clear message; the last checkpoint, written only from
finite states, stays. Every ``eval_every`` steps the model (θ fixed) runs over the task's held-out
stream from h_0 — the same ``eval_steps`` steps each time, so evaluations are comparable.

Seeds: the run's seed is split (``CounterRNG.spawn``) into independent seeds for the model's
initialisation, the task and the estimator, so the same config gives bit-identical numbers.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from gradflow.contracts.backend import get_backend
from gradflow.contracts.errors import (
    CheckpointError,
    ConfigError,
    GradflowError,
    GradflowWarning,
    PluginError,
    PluginFailed,
    RunDirError,
    TrainingDiverged,
    TrainingInterrupted,
)
from gradflow.contracts.estimator import Estimator, StepRecord
from gradflow.contracts.losses import LN2, get_loss
from gradflow.contracts.model import Model
from gradflow.contracts.random import CounterRNG
from gradflow.contracts.task import Task
from gradflow.registry.discovery import PluginInfo, exception_line, get_registry, validate_options
from gradflow.registry.factory import check_capabilities
from gradflow.registry.guard import StepChecks, blame, culprit
from gradflow.runfiles.checkpoint import (
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
    split_state,
)
from gradflow.runfiles.config import OptimizerSection, PluginSection, TrainConfig
from gradflow.runfiles.resume import (
    check_against_run_config,
    check_state_layout,
    first_checkpoint_step,
    layout_record,
    non_finite,
    read_run_config,
)
from gradflow.runfiles.rundir import (
    CHECKPOINT,
    CONFIG,
    SUMMARY,
    RunDir,
    default_run_path,
    finite_or_none,
    read_metrics,
)
from gradflow.training.clipping import clip_direction
from gradflow.training.loop_state import LoopState
from gradflow.training.optimizers import Optimizer, create_optimizer
from gradflow.training.schedules import learning_rate
from gradflow.training.signals import StopFlag, stop_requests
from gradflow.version import __version__

Array = Any
Progress = Callable[[int, "dict[str, Any] | None"], None]
#: spawn keys of the seeds derived from ``run.seed``
SEED_KEYS = {"model": 1, "task": 2, "estimator": 3}


@dataclass
class Components:
    """What a config builds: backend, task, model, estimator, optimizer, resolved config."""

    config: TrainConfig
    backend: Any
    task: Task
    model: Model
    estimator: Estimator
    optimizer: Optimizer
    seeds: dict[str, int] = field(default_factory=dict)
    #: the registry entries of the task, model and estimator (to name them in messages)
    infos: dict[str, PluginInfo] = field(default_factory=dict)


@contextmanager
def _blas_threads(threads: int | None) -> Iterator[None]:
    """Limit the BLAS thread pools (OpenBLAS, MKL) to ``threads`` while training.

    One step of online training multiplies small matrices: BLAS threads cost more in
    synchronisation than they gain (measured: RTRL on add, n = 32, five times slower with two
    threads on a busy two-core machine), and a fixed thread count keeps float sums in one order.
    """
    if threads is None:
        yield
        return
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=threads, user_api="blas"):
        yield


def derived_seeds(seed: int) -> dict[str, int]:
    root = CounterRNG(np, seed)
    return {name: root.spawn(key).seed for name, key in SEED_KEYS.items()}


def _plugin(kind: str, section: PluginSection) -> tuple[Any, Any]:
    info = get_registry().get(kind, section.name)
    return info, validate_options(info, section.options())


def _resolved(section: PluginSection, options: Any) -> PluginSection:
    return PluginSection(name=section.name, **options.model_dump(mode="json"))


def _estimator_defaults(defaults: dict[str, Any], opt: OptimizerSection) -> dict[str, Any]:
    """The estimator's optimizer defaults that apply: those the user did not set. If the user
    chose another optimizer than the one the defaults are tuned for, its learning-rate settings
    do not carry over; only the variance control (clipping) does."""
    chosen = opt.name if "name" in opt.model_fields_set else None
    if chosen is not None and defaults.get("name", chosen) != chosen:
        defaults = {k: v for k, v in defaults.items() if k in ("clip", "clip_rec")}
    return {k: v for k, v in defaults.items() if k not in opt.model_fields_set}


def build(config: TrainConfig) -> Components:
    """Create everything ``config`` names, checking names, options, sizes and capabilities.

    The model's ``n_in``/``n_out`` come from the task (setting them to other values is an error);
    the estimator's :attr:`~gradflow.Estimator.optimizer_defaults` fill the optimizer settings the
    config does not set explicitly. The returned config is resolved: every default spelled out.
    """
    run = config.run
    seeds = derived_seeds(run.seed)
    backend = get_backend(run.backend, run.dtype, run.seed)

    task_info, task_opts = _plugin("task", config.task)
    with blame(task_info, "while being created"):
        task = task_info.cls(task_opts, backend, batch=run.batch, seed=seeds["task"])
        sizes = {key: getattr(task, key) for key in ("n_in", "n_out")}
    for key, size in sizes.items():  # n_in may be 0 (influence: no input), n_out may not
        if isinstance(size, bool) or not isinstance(size, int) or size < (key == "n_out"):
            raise PluginFailed(f"{task_info.origin} has {key} = {size!r}; it must be a "
                               f"{'positive' if key == 'n_out' else 'non-negative'} integer")

    model_info = get_registry().get("model", config.model.name)
    model_raw = config.model.options()
    for key, size in sizes.items():
        if key in model_raw and model_raw[key] != size:
            raise PluginError(f"model.{key} = {model_raw[key]!r} does not match task "
                              f"{task.name!r}, whose {key} is {size}; leave it unset")
        model_raw[key] = size
    try:
        model_opts = validate_options(model_info, model_raw)
    except PluginError as exc:
        if "n_in" not in str(exc).split(";")[0] and "n_out" not in str(exc).split(";")[0]:
            raise
        raise PluginError(f"{exc} (the trainer sets n_in = {task.n_in} and n_out = "
                          f"{task.n_out} from task {task.name!r})") from None
    with blame(model_info, "while being created"):
        model = model_info.cls(model_opts, backend)
        _check_layout(model, model_info)

    est_info, est_opts = _plugin("estimator", config.estimator)
    check_capabilities(est_info.cls, model)
    with blame(est_info, "while being created"):
        estimator = est_info.cls(model, est_opts)

    opt = config.optimizer
    defaults = _estimator_defaults(est_info.cls.optimizer_defaults, opt)
    try:
        opt = OptimizerSection.model_validate({**opt.model_dump(), **defaults})
    except ValidationError as exc:
        raise PluginError(f"estimator {est_info.name!r}: invalid optimizer_defaults "
                          f"{defaults!r} ({exc.errors()[0]['msg']})") from None
    opt.lr = opt.resolved_lr()
    optimizer = create_optimizer(
        opt.name, backend.xp, model.layout.size, backend.dtype, model.layout.n_rec,
        opt.lr_rec_scale, momentum=opt.momentum, beta1=opt.beta1, beta2=opt.beta2, eps=opt.eps)

    resolved = TrainConfig(
        run=run.model_copy(), model=_resolved(config.model, model_opts),
        estimator=_resolved(config.estimator, est_opts),
        task=_resolved(config.task, task_opts), optimizer=opt)
    infos = {"task": task_info, "model": model_info, "estimator": est_info}
    return Components(resolved, backend, task, model, estimator, optimizer, seeds, infos)


def _check_layout(model: Model, info: PluginInfo) -> None:
    layout, n_state = getattr(model, "layout", None), getattr(model, "n_state", None)
    size, n_rec = getattr(layout, "size", None), getattr(layout, "n_rec", None)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (size, n_rec, n_state)) \
            or not 0 <= n_rec <= size or size < 1 or n_state < 1:
        raise PluginFailed(f"{info.origin} has no usable layout and n_state (P = {size!r}, "
                           f"P_rec = {n_rec!r}, n_state = {n_state!r})")


def _completed(path: Path) -> bool:
    """Whether the run in ``path`` wrote its summary as completed (a run killed after its final
    checkpoint but before its summary is resumed to write the summary)."""
    try:
        return json.loads((path / SUMMARY).read_text(encoding="utf-8")).get("status") \
            == "completed"
    except (OSError, ValueError, AttributeError):
        return False


def resolve_config(config: TrainConfig) -> TrainConfig:
    """``config`` with every default spelled out, as a run would use it (see :func:`build`),
    without needing its backend to be usable here (a CuPy config resolves on a CPU machine)."""
    probe = config.model_copy(deep=True)
    probe.run.backend = "numpy"
    resolved = build(probe).config
    resolved.run.backend = config.run.backend
    return resolved


class Trainer:
    """Runs one training run of a :class:`~gradflow.runfiles.config.TrainConfig`.

    ``Trainer(config).run(out, force, progress)`` trains, writes the run directory and returns
    the summary dict; ``Trainer.resume(run_dir).run()`` continues a run from its newest
    checkpoint. ``progress(step, record)`` is called every ``min(100, log_every)`` steps with
    ``record=None`` and at every metrics line with the line.

    Checkpoints are written every ``run.checkpoint_every`` steps and at the end (the last two are
    kept). While :meth:`run` trains, SIGINT and SIGTERM (in the main thread) let the current step
    finish, write a checkpoint and raise :class:`TrainingInterrupted`. A resumed run restores θ,
    h, the optimizer, the estimator (its generator included), the task's position and the loop's
    running sums, so that it writes the same metrics lines and ends at the same θ, bit for bit,
    as a run that was never stopped.
    """

    def __init__(self, config: TrainConfig) -> None:
        self.parts = build(config)
        self.config = self.parts.config
        parts = self.parts
        batch, infos, model = self.config.run.batch, parts.infos, parts.model
        self.checks = StepChecks(infos, batch, parts.task.n_in, parts.task.n_out, model.n_state,
                                 model.layout.size, model.layout.n_rec, parts.backend.dtype,
                                 parts.backend.dtype_name)
        with blame(infos["model"], "while initialising θ and h"):
            self.theta = model.init_params(parts.seeds["model"])
            self.h = model.initial_state(batch)
            self._h0 = model.initial_state(batch)
        self.checks.initial(self.theta, self.h)
        with blame(infos["estimator"], "while starting"):
            parts.estimator.start(batch, seed=parts.seeds["estimator"])
        self.step = 0
        try:
            self.loss_fn = get_loss(parts.task.loss)
        except GradflowError as exc:
            raise PluginFailed(f"{infos['task'].origin}: {exc}") from None
        self._zero = parts.backend.xp.zeros((), dtype=parts.backend.dtype)
        self.loop = LoopState.fresh(self._zero)
        #: the checkpoint step this trainer was resumed from (``None`` for a fresh run)
        self.resumed_from: int | None = None
        #: problems of newer checkpoints that could not be read when resuming
        self.skipped_checkpoints: list[str] = []
        #: other things worth telling the user when resuming (e.g. "no checkpoint yet")
        self.notes: list[str] = []
        self._config_changed = False
        #: the first step of this process checks the plugins' shapes (see gradflow.registry.guard)
        self._unverified = True
        self._direction_unverified = True
        self._rundir: RunDir | None = None
        self._evaluating = False

    # -- one online step -----------------------------------------------------------------------
    def advance(self) -> tuple[Array, Array | None]:
        """One online step: task → forward → loss → estimator → (clip) → optimizer.

        Updates ``theta``, ``h`` and ``step``; returns the step's loss (a 0-d array, left on the
        device) and the norm of the estimator's direction before clipping (``None`` on steps
        without an update). This is the unit the benchmarks time.
        """
        parts, opt = self.parts, self.config.optimizer
        model, estimator, xp = parts.model, parts.estimator, parts.backend.xp
        first = self._unverified  # the plugins' shapes are checked on a process's first step
        batch = parts.task.next()
        if first:
            self.checks.batch_of_task(batch)
        h, theta = self.h, self.theta
        if batch.reset is not None:
            h = xp.where(batch.reset[:, None], self._h0, h)
            estimator.reset(batch.reset)
        h, cache = model.forward(theta, h, batch.inputs)
        if first:
            self.checks.forward(h)
        y = model.readout(theta, h)
        if first:
            self.checks.readout(y)
            loss, dy = self._first_loss(y, batch.targets)
        else:
            loss, dy = self.loss_fn(y, batch.targets)
        parts.task.observe(loss)  # curricula (copy) follow the learner; a no-op by default
        delta, g_out = model.readout_vjp(theta, h, dy)
        if first:
            self.checks.readout_vjp(delta, g_out)
            self._unverified = False
        direction = estimator.step(StepRecord(theta=theta, cache=cache, delta=delta,
                                              grad_out=g_out))
        self.step += 1
        raw_norm = None
        if direction is not None:
            if self._direction_unverified:
                self.checks.direction(direction)
                self._direction_unverified = False
            direction, raw_norm = clip_direction(xp, direction, model.layout.n_rec, opt.clip,
                                                 opt.clip_rec)
            theta = parts.optimizer.update(
                theta, direction, learning_rate(opt.schedule, opt.lr, self.step, opt.decay))
        self.theta, self.h = theta, h
        return loss, raw_norm

    def _first_loss(self, y: Array, targets: Array) -> tuple[Array, Array]:
        """The loss of the first step: targets that do not fit the outputs (already checked)
        are the task's fault, and the message says so."""
        try:
            return self.loss_fn(y, targets)
        except GradflowError as exc:
            raise PluginFailed(f"{self.parts.infos['task'].origin} gave targets that do not "
                               f"fit its {self.parts.task.loss!r} loss: {exc}") from None

    # -- evaluation ----------------------------------------------------------------------------
    def evaluate(self) -> float | None:
        """Mean loss (nats) of θ over ``eval_steps`` steps of the held-out stream, or ``None``."""
        held = self.parts.task.held_out()
        if held is None:
            return None
        model, xp, theta = self.parts.model, self.parts.backend.xp, self.theta
        h0 = model.initial_state(held.batch)
        h = h0
        total = xp.zeros((), dtype=self.parts.backend.dtype)
        steps = self.config.run.eval_steps
        for _ in range(steps):
            batch = held.next()
            if batch.reset is not None:
                h = xp.where(batch.reset[:, None], h0, h)
            h, _ = model.forward(theta, h, batch.inputs)
            total = total + xp.mean(self.loss_fn.per_stream(model.readout(theta, h),
                                                           batch.targets))
        return self.parts.backend.to_float(total) / steps

    # -- checkpoint ----------------------------------------------------------------------------
    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """(arrays, JSON scalars) of the whole training state."""
        to_numpy = self.parts.backend.to_numpy
        arrays = {"theta": to_numpy(self.theta), "h": to_numpy(self.h)}
        arrays.update({f"loop.{k}": v for k, v in self.loop.arrays(to_numpy).items()})
        scalars: dict[str, Any] = {"trainer": {"step": self.step}, "loop": self.loop.scalars()}
        for name, obj in (("optimizer", self.parts.optimizer),
                          ("estimator", self.parts.estimator), ("task", self.parts.task)):
            a, s = split_state(obj.state_dict(), to_numpy)
            arrays.update({f"{name}.{k}": v for k, v in a.items()})
            scalars[name] = s
        return arrays, scalars

    def load_state(self, arrays: dict[str, np.ndarray], scalars: dict[str, Any],
                   meta: dict[str, Any] | None = None) -> None:
        """Restore a state produced by :meth:`state` (the same configuration's).

        The arrays are checked first (:func:`gradflow.runfiles.resume.check_state_layout`): a
        checkpoint of another model or layout, or one holding NaN, is refused with a
        :class:`CheckpointError` naming the mismatch. ``meta`` (the checkpoint's metadata) adds
        θ's recorded layout to the check.
        """
        be, parts = self.parts.backend, self.parts
        check_state_layout(self.state()[0], arrays, {"path": "?"} if meta is None else meta,
                           parts.model.name, parts.model.layout)

        def part(name: str) -> dict[str, Any]:
            prefix = f"{name}."
            return {**scalars[name],
                    **{k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}}

        # fresh, writable copies: θ and h are updated in place from here on
        self.theta, self.h = (be.asarray(np.array(arrays[k])) for k in ("theta", "h"))
        try:
            states = {name: part(name) for name in ("optimizer", "loop", "estimator", "task")}
            parts.optimizer.load_state_dict(states["optimizer"], be.asarray)
            self.loop = LoopState.restore(states["loop"], scalars["loop"], be.asarray)
            self.step = int(scalars["trainer"]["step"])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            where = (meta or {}).get("path", "?")
            raise CheckpointError(f"checkpoint {where!r}: its state cannot be restored "
                                  f"({exception_line(exc)})") from None
        for kind, obj in (("estimator", parts.estimator), ("task", parts.task)):
            with blame(parts.infos[kind], "while loading its state from a checkpoint"):
                obj.load_state_dict(states[kind])

    def save_checkpoint(self, directory: str | Path,
                        state: tuple[dict[str, np.ndarray], dict[str, Any]] | None = None) -> Path:
        """Write the whole state (default :meth:`state`) as a checkpoint in ``directory`` (the
        last two are kept).

        A state that is not finite (θ, h, the optimizer, the loop sums or the estimator) is
        never written: :class:`TrainingDiverged` instead, so the last good checkpoint stays the
        newest.
        """
        arrays, scalars = self.state() if state is None else state
        bad = non_finite(arrays)
        if bad:
            raise TrainingDiverged(self._diverged_message(
                f"{', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''} not finite",
                "checked before writing a checkpoint"))
        model = self.parts.model
        return save_checkpoint(directory, self.step, arrays, finite_or_none({
            "gradflow_version": __version__,
            "model": model.name, "layout": layout_record(model.layout),
            "config": self.config.model_dump(mode="json"), "state": scalars}))

    @classmethod
    def resume(cls, run_dir: str | Path, steps: int | None = None) -> Trainer:
        """A trainer that continues the run in ``run_dir`` from its newest intact checkpoint,
        with the configuration stored there; :meth:`run` then appends to the same directory.

        ``steps`` (optional) changes ``run.steps``: to extend a finished run, or to stop
        earlier. It may not move the final window (the last ``final_window`` steps, whose mean
        is the final loss) to before the checkpoint, since those losses were not all summed.

        A checkpoint that belongs to another run (its configuration differs from the
        directory's ``config.json``), of another model or layout, or holding NaN is refused. A
        run stopped before its first checkpoint starts again from step 0 with its
        ``config.json`` (:attr:`notes` says so): nothing is lost, the run is deterministic.
        """
        path = Path(run_dir)
        if not path.is_dir():
            raise RunDirError(f"cannot resume {str(path)!r}: no such run directory")
        run_config = read_run_config(path)
        if not list_checkpoints(path / CHECKPOINT):
            return cls._restart(path, run_config, steps)
        arrays, meta = load_checkpoint(path / CHECKPOINT)
        try:
            config = TrainConfig.model_validate(meta["config"])
        except (KeyError, ValidationError) as exc:
            raise CheckpointError(f"checkpoint {meta.get('path')!r}: its configuration cannot "
                                  f"be used ({type(exc).__name__})") from None
        if not isinstance(meta.get("state"), dict):
            raise CheckpointError(f"checkpoint {meta.get('path')!r}: its metadata has no state")
        if run_config is not None:
            check_against_run_config(config, run_config, f"checkpoint {meta.get('path')!r}")
        step = int(meta["step"])
        trainer = cls._continuing(path, config, step, steps)
        trainer.load_state(arrays, meta["state"], meta)
        if trainer.step != step:
            raise CheckpointError(f"checkpoint {meta.get('path')!r}: its state is at step "
                                  f"{trainer.step}, its metadata says {step}")
        if trainer._config_changed and max(trainer.config.run.steps
                                           - trainer.config.run.final_window, 0) >= step:
            trainer.loop.final_sum = trainer._zero  # no step before the checkpoint counts
        trainer.skipped_checkpoints = list(meta.get("skipped", []))
        for problem in trainer.skipped_checkpoints:  # the CLI prints these as warning: lines
            warnings.warn(GradflowWarning(f"skipped an unusable checkpoint: {problem}"),
                          stacklevel=2)
        trainer._config_changed = trainer._config_changed or run_config is None
        return trainer

    @classmethod
    def _continuing(cls, path: Path, config: TrainConfig, step: int,
                    steps: int | None) -> Trainer:
        """A trainer of ``config`` that continues the run in ``path`` after ``step`` (with
        ``steps`` as its new length, if given); the state is not loaded yet."""
        run = config.run
        final_window = run.final_window
        new_steps = run.steps if steps is None else int(steps)
        if new_steps < step:
            raise ConfigError(f"cannot resume {str(path)!r} with {new_steps:,} steps: its "
                              f"checkpoint is at step {step:,}")
        if new_steps == step and _completed(path):
            hint = "" if steps is not None else "; pass --steps N to train it further"
            raise ConfigError(f"run {str(path)!r} has already reached step {step:,} of "
                              f"{new_steps:,}{hint}")
        old_from, new_from = max(run.steps - final_window, 0), max(new_steps - final_window, 0)
        if new_from != old_from and new_from < step:
            raise ConfigError(
                f"cannot resume {str(path)!r} with {new_steps:,} steps: the final window (the "
                f"last {final_window:,} steps) would start before the checkpoint at step "
                f"{step:,}; use at least {step + final_window:,} steps")
        changed = new_steps != run.steps
        try:
            run.steps = new_steps
        except ValidationError as exc:
            raise ConfigError(f"run.steps = {new_steps}: {exc.errors()[0]['msg']}") from None
        run.out = str(path)
        trainer = cls(config)
        trainer.resumed_from = step
        trainer._config_changed = changed
        return trainer

    @classmethod
    def _restart(cls, path: Path, config: TrainConfig | None, steps: int | None) -> Trainer:
        """Resume a run that has no checkpoint: from step 0 with its ``config.json``, if no
        metrics line shows that a checkpoint should exist (else its checkpoints were lost)."""
        where = path / CHECKPOINT
        if config is None:
            raise CheckpointError(f"no checkpoint in {str(where)!r} and no readable {CONFIG} in "
                                  f"{str(path)!r}: nothing to resume from; start the run again")
        first = first_checkpoint_step(config)
        logged = [r.get("step") for r in read_metrics(path)] if (path / "metrics.jsonl").exists() \
            else []
        last = max((s for s in logged if isinstance(s, int)), default=0)
        if last > first:  # (the line of the checkpoint's step comes before the checkpoint)
            raise CheckpointError(
                f"no checkpoint in {str(where)!r}, although the run logged step {last:,} (its "
                f"first checkpoint was due at step {first:,}): the checkpoints were deleted; "
                "nothing to resume from")
        trainer = cls._continuing(path, config, 0, steps)
        trainer.notes.append(f"no checkpoint had been written yet (the first is due at step "
                             f"{first:,}): starting again from step 0 with {CONFIG}")
        return trainer

    # -- the loop ------------------------------------------------------------------------------
    def run(self, out: str | Path | None = None, force: bool = False,
            progress: Progress | None = None, handle_signals: bool = True) -> dict[str, Any]:
        """Train up to ``run.steps`` steps, writing the run directory; return the summary.

        ``handle_signals``: let SIGINT/SIGTERM stop the run cleanly (main thread only).
        """
        cfg = self.config
        run = cfg.run
        if self.resumed_from is not None:
            if out is not None and Path(out).resolve() != Path(str(run.out)).resolve():
                raise RunDirError(f"a resumed run continues in its own directory {run.out!r}, "
                                  f"not {str(out)!r}")
            rundir = RunDir.reopen(str(run.out), self.step)
        else:
            path = out or run.out or default_run_path(cfg.task.name, cfg.estimator.name)
            rundir = RunDir.create(path, force=force)
            cfg.run.out = str(rundir.path)
        self._rundir = rundir
        try:
            if self.resumed_from is None or self._config_changed:
                rundir.write_json(CONFIG, cfg.model_dump(mode="json"))
            with _blas_threads(run.threads), stop_requests(handle_signals) as stop:
                try:
                    summary = self._loop(rundir, progress, stop)
                except (GradflowError, MemoryError):
                    raise
                except (Exception, SystemExit) as exc:  # a plugin may not end the process
                    raise self._plugin_failure(exc, rundir) from exc
        finally:
            rundir.close()
            self._rundir = None
        return summary

    def _plugin_failure(self, exc: BaseException, rundir: RunDir) -> BaseException:
        """``exc`` raised inside a plugin's code → :class:`PluginFailed` naming it (and the
        run's summary says ``failed``); anything else is returned as it is (a bug)."""
        parts = self.parts
        blamed = culprit(exc, [(info, type(getattr(parts, kind)))
                               for kind, info in parts.infos.items()])
        if blamed is None:
            return exc
        rundir.write_json(SUMMARY, self._summary("failed", None, self.loop.elapsed))
        kept = (f"the last checkpoint (step {self.loop.last_good:,}) is in {rundir.checkpoint}"
                if self.loop.last_good is not None else "no checkpoint was written")
        when = (f"in the held-out evaluation after step {self.step:,}" if self._evaluating
                else f"at step {self.step + 1:,}")
        return PluginFailed(f"{blamed.origin} raised {exception_line(exc)} {when}; {kept}")

    def _diverged_message(self, what: str, how: str) -> str:
        """The message of a :class:`TrainingDiverged` at the current step."""
        acc, rundir = self.loop, self._rundir
        if acc.last_good is not None and rundir is not None:
            kept = f"the last good checkpoint (step {acc.last_good:,}) is in {rundir.checkpoint}"
        else:
            kept = "no checkpoint was written"
        return (f"training diverged at step {self.step:,}: {what} ({how}), with "
                f"{self.parts.infos['estimator'].origin}; lower optimizer.lr or set "
                f"optimizer.clip; {kept}")

    def _non_finite_theta(self) -> str:
        """Which parameters of θ are not finite (called once, when the run stops)."""
        theta = self.parts.backend.to_numpy(self.theta)
        names = [name for name, spec in self.parts.model.layout.specs.items()
                 if not np.isfinite(theta[spec.slice]).all()]
        count = int((~np.isfinite(theta)).sum())
        return f"θ is not finite ({count:,} of {theta.size:,} entries, in {', '.join(names)})"

    def _checkpoint(self, rundir: RunDir, start: float, window_start: float) -> None:
        now = time.perf_counter()
        self.loop.elapsed, self.loop.window_seconds = now - start, now - window_start
        arrays, scalars = self.state()
        scalars["loop"]["last_good"] = self.step  # the checkpoint is the last good one
        try:
            self.save_checkpoint(rundir.checkpoint, (arrays, scalars))
        except TrainingDiverged:
            rundir.write_json(SUMMARY, self._summary("diverged", None, now - start))
            raise
        self.loop.last_good = self.step

    def _finite(self, loss_sum: Array) -> bool:
        xp, backend = self.parts.backend.xp, self.parts.backend
        return math.isfinite(backend.to_float(loss_sum)) and bool(xp.all(xp.isfinite(self.theta)))

    def _stop(self, rundir: RunDir, stop: StopFlag, start: float, window_start: float) -> None:
        """Checkpoint (if θ is finite and not already saved at this step) and raise."""
        acc, step = self.loop, self.step
        finite = self._finite(acc.loss_sum)
        if finite and acc.last_good != step:
            self._checkpoint(rundir, start, window_start)
        seconds = time.perf_counter() - start
        rundir.write_json(SUMMARY, self._summary("interrupted", None, seconds))
        where = f"training stopped by {stop.name} at step {step:,} of {self.config.run.steps:,}"
        if acc.last_good is None:
            raise TrainingInterrupted(f"{where}; θ is not finite and no checkpoint was written",
                                      stop.signum)
        saved = ("checkpoint saved" if acc.last_good == step else
                 f"θ is not finite; the last good checkpoint is at step {acc.last_good:,}")
        raise TrainingInterrupted(f"{where}; {saved}; resume with: gradflow train --resume "
                                  f"{rundir.path}", stop.signum)

    def _loop(self, rundir: RunDir, progress: Progress | None, stop: StopFlag) -> dict[str, Any]:
        cfg = self.config
        run, opt = cfg.run, cfg.optimizer
        parts = self.parts
        task, backend = parts.task, parts.backend
        xp = backend.xp
        lr, schedule, decay = opt.lr, opt.schedule, opt.decay
        zero = self._zero
        is_ce = task.loss == "ce"
        tick = min(100, run.log_every)
        has_eval = run.eval_every > 0 and task.held_out() is not None
        final_from = max(run.steps - run.final_window, 0)
        acc = self.loop
        start = time.perf_counter() - acc.elapsed
        window_start = time.perf_counter() - acc.window_seconds

        while self.step < run.steps:
            loss, raw_norm = self.advance()
            step = self.step
            acc.loss_sum = acc.loss_sum + loss
            if step > final_from:
                acc.final_sum = acc.final_sum + loss
            if raw_norm is not None:
                acc.norm_sum = acc.norm_sum + raw_norm
                acc.updates += 1
            acc.window_steps += 1
            if step % run.log_every and step != run.steps:
                if progress is not None and step % tick == 0:
                    progress(step, None)
                if stop:
                    self._stop(rundir, stop, start, window_start)
                continue

            # -- a metrics line: the only place numbers come back from the device --------------
            # (and so where the loss, the gradient norms and θ are checked for NaN and ±inf)
            theta = self.theta
            mean_loss = backend.to_float(acc.loss_sum) / acc.window_steps
            grad_norm = backend.to_float(acc.norm_sum) / acc.updates if acc.updates else None
            finite = (math.isfinite(mean_loss) and (grad_norm is None or math.isfinite(grad_norm))
                      and bool(xp.all(xp.isfinite(theta))))
            now = time.perf_counter()
            record: dict[str, Any] = {
                "step": step,
                "loss": mean_loss,
                "bits": mean_loss / LN2 if is_ce else None,
                "grad_norm": grad_norm,
                "lr": learning_rate(schedule, lr, step, decay),
                **task.metrics(),
            }
            if finite and has_eval and (step % run.eval_every == 0 or step == run.steps):
                self._evaluating = True
                last_eval = acc.last_eval = self.evaluate()
                self._evaluating = False
                record["eval_loss"] = last_eval
                record["eval_bits"] = last_eval / LN2 if is_ce and last_eval is not None \
                    else None
                if last_eval is not None and (acc.best_eval is None
                                              or last_eval < acc.best_eval[0]):
                    acc.best_eval = (last_eval, step)
            rundir.log(record, {
                "wall": round(now - start, 3),
                "steps_per_s": round(acc.window_steps / max(now - window_start, 1e-9), 1),
            })
            if not finite:
                if not math.isfinite(mean_loss):
                    what = "the loss is not finite"
                elif grad_norm is not None and not math.isfinite(grad_norm):
                    what = "the gradient estimate is not finite"
                else:
                    what = self._non_finite_theta()
                before = step - acc.window_steps
                how = (f"checked at every metrics line, every {run.log_every:,} steps; all "
                       f"finite at step {before:,}" if before > 0 else
                       f"checked at every metrics line, every {run.log_every:,} steps; this "
                       "was the first check")
                rundir.write_json(SUMMARY, self._summary("diverged", None, now - start))
                raise TrainingDiverged(self._diverged_message(what, how))
            if acc.best is None or mean_loss < acc.best[0]:
                acc.best = (mean_loss, step)
            acc.reset_window(zero)
            window_start = time.perf_counter()
            if step == run.steps or (run.checkpoint_every and step % run.checkpoint_every == 0):
                self._checkpoint(rundir, start, window_start)
            if progress is not None:
                progress(step, record)
            if stop and step < run.steps:
                self._stop(rundir, stop, start, window_start)

        counted = run.steps - final_from
        final = backend.to_float(acc.final_sum) / counted
        summary = self._summary("completed", final, time.perf_counter() - start)
        rundir.write_json(SUMMARY, summary)
        return summary

    def _summary(self, status: str, final: float | None, seconds: float) -> dict[str, Any]:
        cfg, task, acc = self.config, self.parts.task, self.loop
        is_ce = task.loss == "ce"
        counted = min(cfg.run.final_window, cfg.run.steps)
        best, best_eval = acc.best, acc.best_eval
        return {
            "status": status,
            "steps": self.step,
            "final_loss": final,
            "final_bits": final / LN2 if is_ce and final is not None else None,
            "final_window": counted,
            "best_loss": best[0] if best else None,
            "best_loss_step": best[1] if best else None,
            "eval_loss": acc.last_eval,
            "best_eval_loss": best_eval[0] if best_eval else None,
            "best_eval_step": best_eval[1] if best_eval else None,
            "optimum": task.optimum,
            "references": task.reference_losses(),
            "loss_kind": task.loss,
            "model": cfg.model.name,
            "estimator": cfg.estimator.name,
            "task": cfg.task.name,
            "n_params": self.parts.model.layout.size,
            "seconds": round(seconds, 3),
            "steps_per_s": round(self.step / max(seconds, 1e-9), 1),
            "run_dir": cfg.run.out,
        }
