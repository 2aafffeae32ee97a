"""The online trainer: the loop around the one online step.

Step t (t = 1, 2, ...) is :func:`~gradflow.training.step.online_step` — the task's x_t, y_t and
reset mask (streams that reset go back to h_0 and the estimator is told), h_t and the cache from
the forward step, ŷ_t, ℓ_t and ∂ℓ_t/∂ŷ_t, the readout VJP, the estimator's direction — then the
task is shown ℓ_t (``Task.observe``: a curriculum such as ``copy``'s lengthens its sequences on
it) and, when a direction comes, it is clipped (the recurrent part and/or the whole) and the
optimizer updates θ in place with η_t from the schedule. The first steps of a process check every
plugin output once (:mod:`gradflow.training.validation`).

The loss stays on the device: it is summed there and read back only when a metrics line is written
(every ``log_every`` steps, as the running mean since the previous line, with the task's own
numbers, ``Task.metrics()``, such as ``copy_length``). At those moments a non-finite loss or θ
stops the run with a clear message; the last checkpoint, written only from finite states, stays.
Every ``eval_every`` steps the model (θ fixed) runs over the task's held-out stream from h_0 — the
same ``eval_steps`` steps each time, so evaluations are comparable.

The parts of a run and its seeds come from :mod:`gradflow.training.components`; a resume is
planned by :mod:`gradflow.runfiles.resume` and loaded here.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gradflow.contracts.errors import (
    CheckpointError,
    ConfigError,
    GradflowError,
    GradflowWarning,
    PluginFailed,
    RunDirError,
    TrainingDiverged,
    TrainingInterrupted,
)
from gradflow.contracts.estimator import takes_factors
from gradflow.contracts.logger import RunRecord
from gradflow.contracts.losses import LN2, get_loss
from gradflow.contracts.task import Task
from gradflow.registry.discovery import exception_line
from gradflow.registry.guard import blame, culprit
from gradflow.runfiles.checkpoint import (
    save_checkpoint,
    split_state,
)
from gradflow.runfiles.config import PROVENANCE, TrainConfig
from gradflow.runfiles.provenance import provenance
from gradflow.runfiles.resume import (
    check_state_layout,
    layout_record,
    non_finite,
    plan_resume,
)
from gradflow.runfiles.rundir import (
    CONFIG,
    METRICS,
    SUMMARY,
    RunDir,
    default_run_path,
    finite_or_none,
    read_metrics,
)
from gradflow.training.alignment import Alignment
from gradflow.training.clipping import clip_direction
from gradflow.training.components import build
from gradflow.training.loop_state import LoopState
from gradflow.training.schedules import learning_rate, schedule_function
from gradflow.training.signals import StopFlag, stop_requests
from gradflow.training.step import StepOutcome, online_step
from gradflow.training.threads import blas_threads
from gradflow.training.validation import StepChecks, ValidatedSteps
from gradflow.version import __version__

Array = Any
Progress = Callable[[int, "dict[str, Any] | None"], None]


@dataclass
class LoopClock:
    """What a run's loop computes once (see :meth:`Trainer._clock`)."""

    final_from: int
    tick: int
    has_eval: bool
    level: float | None
    bound: float | None
    start: float
    window_start: float


class Trainer:
    """Runs one training run of a :class:`~gradflow.TrainConfig`.

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
        if config.run.replicas > 1:
            raise ConfigError(f"run.replicas = {config.run.replicas}: a Trainer is one run; a "
                              "replicated run is a gradflow.training.replicas.ReplicatedTrainer")
        self.parts = build(config)
        self.config = self.parts.config
        parts = self.parts
        batch, infos, model = self.config.run.batch, parts.infos, parts.model
        checks = StepChecks(infos, batch, parts.task.n_in, parts.task.n_out, model.n_state,
                            model.layout.size, model.layout.n_rec, parts.backend.dtype,
                            parts.backend.dtype_name)
        with blame(infos["model"], "while initialising θ and h"):
            self.theta = model.init_params(parts.seeds["model"])
            self.h = model.initial_state(batch)
            self._h0 = model.initial_state(batch)
        checks.initial(self.theta, self.h)
        with blame(infos["estimator"], "while starting"):
            parts.estimator.start(batch, seed=parts.seeds["estimator"])
        # the clipping and the optimizer take a direction by its factors where it can be
        parts.estimator.factors = takes_factors(parts.estimator)
        #: the exact reference carried alongside (run.align_every), or None
        self._align: Alignment | None = None
        if self.config.run.align_every:
            with blame(infos["estimator"], "while starting the alignment's reference"):
                self._align = Alignment(model, self.config.run.align_every, batch,
                                        parts.seeds["estimator"])
        self.step = 0
        try:
            self.loss_fn = get_loss(parts.task.loss)
        except GradflowError as exc:
            raise PluginFailed(f"{infos['task'].origin}: {exc}") from None
        self._zero = parts.backend.xp.zeros((), dtype=parts.backend.dtype)
        opt = self.config.optimizer
        #: η of each data step, and what advance() would otherwise look up every step
        self._rate = schedule_function(opt.schedule, opt.lr, opt.decay)
        self._n_rec = model.layout.n_rec
        self._observed = type(parts.task).observe is not Task.observe
        self.loop = LoopState.fresh(self._zero)
        #: the checkpoint step this trainer was resumed from (``None`` for a fresh run)
        self.resumed_from: int | None = None
        #: problems of newer checkpoints that could not be read when resuming
        self.skipped_checkpoints: list[str] = []
        #: other things worth telling the user when resuming (e.g. "no checkpoint yet")
        self.notes: list[str] = []
        self._config_changed = False
        #: the online step; its first calls in this process check the plugins' outputs
        self._online_step: Callable[..., StepOutcome] = ValidatedSteps(checks, self._validated)
        self._rundir: RunDir | None = None
        self._evaluating = False
        #: how the run ended, for the loggers (set with each summary written)
        self._status = "failed"

    def _validated(self) -> None:
        """Every plugin output has been checked once: the plain online step from now on."""
        self._online_step = online_step

    # -- one online step -----------------------------------------------------------------------
    def advance(self) -> tuple[Array, Array | None]:
        """One online step (:func:`~gradflow.training.step.online_step`: task → forward → loss →
        readout VJP → estimator), then the clipping of the direction and the optimizer's update.

        Updates ``theta``, ``h`` and ``step``; returns the step's loss (a 0-d array, left on the
        device) and the norm of the estimator's direction before clipping (``None`` on steps
        without an update). This is the unit the benchmarks time.
        """
        parts = self.parts
        batch = parts.task.next()
        out = self._online_step(parts.model, self.loss_fn, self.theta, self.h, batch, self._h0,
                                parts.estimator, materialize=False)
        if self._observed:  # curricula (copy) follow the learner
            parts.task.observe(out.loss)
        self.step += 1
        self.h = out.h
        direction, raw_norm = out.direction, None
        if self._align is not None:
            self._align.observe(out.record, batch.reset)
            if direction is not None:
                self._align.measure(self.step, direction)
        if direction is not None:
            opt = self.config.optimizer
            direction, raw_norm = clip_direction(parts.backend.xp, direction, self._n_rec,
                                                 opt.clip, opt.clip_rec)
            self.theta = parts.optimizer.update(self.theta, direction, self._rate(self.step))
        return out.loss, raw_norm

    # -- evaluation ----------------------------------------------------------------------------
    def evaluate(self) -> float | None:
        """Mean loss (nats) of θ over ``eval_steps`` steps of the held-out stream, or ``None``."""
        held = self.parts.task.held_out()
        if held is None:
            return None
        model, backend = self.parts.model, self.parts.backend
        h0 = model.initial_state(held.batch)
        h = h0
        total = backend.xp.zeros((), dtype=backend.dtype)
        steps = self.config.run.eval_steps
        for _ in range(steps):
            out = self._online_step(model, self.loss_fn, self.theta, h, held.next(), h0,
                                    gradient=False)
            h = out.h
            total = total + out.loss
        return backend.to_float(total) / steps

    # -- checkpoint ----------------------------------------------------------------------------
    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """(arrays, JSON scalars) of the whole training state."""
        parts = self.parts
        return self._state_of(self.theta, self.h, parts.optimizer.state_dict(),
                              parts.estimator.state_dict())

    def _state_of(self, theta: Array, h: Array, optimizer: dict[str, Any],
                  estimator: dict[str, Any]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """The state of :meth:`state` from θ, h and the optimizer's and estimator's state dicts
        (a replica of a replicated run gives its own), with the task's and the loop's."""
        to_numpy = self.parts.backend.to_numpy
        arrays = {"theta": to_numpy(theta), "h": to_numpy(h)}
        arrays.update({f"loop.{k}": v for k, v in self.loop.arrays(to_numpy).items()})
        scalars: dict[str, Any] = {"trainer": {"step": self.step}, "loop": self.loop.scalars()}
        parts = [("optimizer", optimizer), ("estimator", estimator),
                 ("task", self.parts.task.state_dict())]
        if self._align is not None:
            parts.append(("align", self._align.state_dict()))
        for name, part in parts:
            a, s = split_state(part, to_numpy)
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
        if self._align is not None:
            self._align.load_state_dict(part("align"))

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
    def resume(cls, run_dir: str | Path, steps: int | None = None,
               at_most: int | None = None) -> Trainer:
        """A trainer that continues the run in ``run_dir`` from its newest intact checkpoint,
        with the configuration stored there; :meth:`run` then appends to the same directory.

        ``steps`` (optional) changes ``run.steps`` (see
        :func:`gradflow.runfiles.resume.plan_resume`, which chooses the checkpoint and checks
        that it belongs to this run). A run stopped before its first checkpoint starts again
        from step 0 with its ``config.json`` (:attr:`notes` says so): nothing is lost, the run is
        deterministic. ``at_most``: resume from the newest checkpoint at that step or before.
        """
        plan = plan_resume(run_dir, steps, at_most)
        trainer = cls(plan.config)
        trainer.resumed_from = plan.step
        trainer.notes = list(plan.notes)
        if plan.arrays is not None and plan.meta is not None:
            trainer.load_state(plan.arrays, plan.meta["state"], plan.meta)
            if trainer.step != plan.step:
                raise CheckpointError(f"checkpoint {plan.meta.get('path')!r}: its state is at "
                                      f"step {trainer.step}, its metadata says {plan.step}")
            run = trainer.config.run
            if plan.steps_changed and max(run.steps - run.final_window, 0) >= plan.step:
                trainer.loop.final_sum = trainer._zero  # no step before the checkpoint counts
            trainer.skipped_checkpoints = list(plan.skipped)
            for problem in plan.skipped:  # the CLI prints these as warning: lines
                warnings.warn(GradflowWarning(f"skipped an unusable checkpoint: {problem}"),
                              stacklevel=2)
        trainer._config_changed = plan.rewrite_config
        return trainer

    # -- the loop ------------------------------------------------------------------------------
    def run(self, out: str | Path | None = None, force: bool = False,
            progress: Progress | None = None, handle_signals: bool = True) -> dict[str, Any]:
        """Train up to ``run.steps`` steps, writing the run directory; return the summary.

        ``handle_signals``: let SIGINT/SIGTERM stop the run cleanly (main thread only).
        """
        run = self.config.run
        rundir = self._open_rundir(out, force)
        try:
            config = self._write_config(rundir)
            try:
                with blas_threads(run.threads), stop_requests(handle_signals) as stop:
                    try:
                        self._open_loggers(rundir, config)
                        summary = self._loop(rundir, progress, stop)
                    except (GradflowError, MemoryError):
                        raise
                    except (Exception, SystemExit) as exc:  # a plugin may not end the process
                        raise self._plugin_failure(exc, rundir) from exc
            except BaseException:
                with contextlib.suppress(Exception):  # never hide why the run stopped
                    self._close_loggers()
                raise
            self._close_loggers()
        finally:
            rundir.close()
            self._rundir = None
        return summary

    def _open_rundir(self, out: str | Path | None, force: bool) -> RunDir:
        """The run directory, created (a new run) or reopened at the checkpoint's step (a resumed
        one), locked; ``run.out`` names it from now on."""
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
        return rundir

    def _write_config(self, rundir: RunDir) -> dict[str, Any]:
        """Write ``config.json`` (for a new run, or a resumed one whose length changed) with its
        provenance — that of the process that started the run, kept across resumes — and return
        what it holds."""
        config = self.config.model_dump(mode="json")
        try:
            old = json.loads((rundir.path / CONFIG).read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError):
            old = None
        record = old.get(PROVENANCE) if isinstance(old, dict) and self.resumed_from is not None \
            else None
        written = {**config, PROVENANCE: record if isinstance(record, dict) else provenance()}
        if self.resumed_from is None or self._config_changed or record is None:
            rundir.write_json(CONFIG, written)
        return written

    # -- loggers -------------------------------------------------------------------------------
    def _open_loggers(self, rundir: RunDir, config: dict[str, Any]) -> None:
        """Open the run's loggers on the lines already in metrics.jsonl (a resumed run's)."""
        if not self.parts.loggers:
            return
        lines = read_metrics(rundir.path) if (rundir.path / METRICS).exists() else []
        for built in self.parts.loggers:
            built.instance.open(RunRecord(rundir.path, config, list(lines)))

    def _close_loggers(self) -> None:
        for built in self.parts.loggers:
            with blame(built.info, "while closing"):
                built.instance.close(self._status)

    def _plugin_failure(self, exc: BaseException, rundir: RunDir) -> BaseException:
        """``exc`` raised inside a plugin's code → :class:`PluginFailed` naming it (and the
        run's summary says ``failed``); anything else is returned as it is (a bug)."""
        parts = self.parts
        blamed = culprit(exc, parts.plugins())
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
        clock = self._clock()
        run = self.config.run
        while self.step < run.steps:
            loss, raw_norm = self.advance()
            self._accumulate(loss, raw_norm, clock)
            step = self.step
            if step % run.log_every and step != run.steps:
                if progress is not None and step % clock.tick == 0:
                    progress(step, None)
                if stop:
                    self._stop(rundir, stop, clock.start, clock.window_start)
                continue
            record = self._line(rundir, clock)
            if progress is not None:
                progress(step, record)
            if stop and step < run.steps:
                self._stop(rundir, stop, clock.start, clock.window_start)
        return self._finish(rundir, clock)

    # -- the loop's pieces (also driven, replica by replica, by gradflow.training.replicas) -----
    def _clock(self) -> LoopClock:
        """What the loop computes once: the step of the final window, the divergence bound, the
        wall-clock origin (of a resumed run too)."""
        run, task = self.config.run, self.parts.task
        level = task.reference_level()
        now = time.perf_counter()
        return LoopClock(
            final_from=max(run.steps - run.final_window, 0), tick=min(100, run.log_every),
            has_eval=run.eval_every > 0 and task.held_out() is not None, level=level,
            bound=run.divergence_factor * level if level and run.divergence_factor else None,
            start=now - self.loop.elapsed, window_start=now - self.loop.window_seconds)

    def _accumulate(self, loss: Array, raw_norm: Array | None, clock: LoopClock) -> None:
        """Add a step's loss (and the norm of its direction) to the loop's sums, on the device."""
        acc = self.loop
        acc.loss_sum = acc.loss_sum + loss
        if self.step > clock.final_from:
            acc.final_sum = acc.final_sum + loss
        if raw_norm is not None:
            acc.norm_sum = acc.norm_sum + raw_norm
            acc.updates += 1
        acc.window_steps += 1

    def _line(self, rundir: RunDir, clock: LoopClock) -> dict[str, Any]:
        """A metrics line at the current step — the only place numbers come back from the
        device, and so where the loss, the gradient norms and θ are checked for NaN and ±inf
        and the loss against the divergence bound —, the held-out evaluation when due, and a
        checkpoint when due. Returns the line; raises :class:`TrainingDiverged`."""
        cfg = self.config
        run, opt = cfg.run, cfg.optimizer
        task, backend = self.parts.task, self.parts.backend
        xp, acc, step = backend.xp, self.loop, self.step
        is_ce = task.loss == "ce"
        mean_loss = backend.to_float(acc.loss_sum) / acc.window_steps
        grad_norm = backend.to_float(acc.norm_sum) / acc.updates if acc.updates else None
        finite = (math.isfinite(mean_loss) and (grad_norm is None or math.isfinite(grad_norm))
                  and bool(xp.all(xp.isfinite(self.theta))))
        exploded = finite and clock.bound is not None and mean_loss > clock.bound
        now = time.perf_counter()
        record: dict[str, Any] = {
            "step": step,
            "loss": mean_loss,
            "bits": mean_loss / LN2 if is_ce else None,
            "grad_norm": grad_norm,
            "lr": learning_rate(opt.schedule, opt.lr, step, opt.decay),
            **task.metrics(),
            **(self._align.window(backend.to_float) if self._align is not None else {}),
        }
        if finite and not exploded and clock.has_eval and (step % run.eval_every == 0
                                                            or step == run.steps):
            self._evaluating = True
            last_eval = acc.last_eval = self.evaluate()
            self._evaluating = False
            record["eval_loss"] = last_eval
            record["eval_bits"] = last_eval / LN2 if is_ce and last_eval is not None else None
            if last_eval is not None and (acc.best_eval is None or last_eval < acc.best_eval[0]):
                acc.best_eval = (last_eval, step)
        rundir.log(record, {
            "wall": round(now - clock.start, 3),
            "steps_per_s": round(acc.window_steps / max(now - clock.window_start, 1e-9), 1),
        })
        for built in self.parts.loggers:
            built.instance.log(record)
        if not finite or exploded:
            self._diverged(rundir, clock, mean_loss, grad_norm, exploded, now)
        if acc.best is None or mean_loss < acc.best[0]:
            acc.best = (mean_loss, step)
        acc.reset_window(self._zero)
        clock.window_start = time.perf_counter()
        if step == run.steps or (run.checkpoint_every and step % run.checkpoint_every == 0):
            self._checkpoint(rundir, clock.start, clock.window_start)
        return record

    def _diverged(self, rundir: RunDir, clock: LoopClock, mean_loss: float,
                  grad_norm: float | None, exploded: bool, now: float) -> None:
        """Write the summary of a diverged run and raise :class:`TrainingDiverged`."""
        run, acc = self.config.run, self.loop
        if exploded:
            what = (f"the loss exploded: {mean_loss:.4g} nats, the mean of the last "
                    f"{acc.window_steps:,} steps, exceeds {run.divergence_factor:g} × the "
                    f"reference loss {clock.level:.4g} nats of task {self.parts.task.name!r} "
                    "(run.divergence_factor)")
        elif not math.isfinite(mean_loss):
            what = "the loss is not finite"
        elif grad_norm is not None and not math.isfinite(grad_norm):
            what = "the gradient estimate is not finite"
        else:
            what = self._non_finite_theta()
        before = self.step - acc.window_steps
        how = (f"checked at every metrics line, every {run.log_every:,} steps; all "
               f"{'below the bound' if exploded else 'finite'} at step {before:,}"
               if before > 0 else
               f"checked at every metrics line, every {run.log_every:,} steps; this was the "
               "first check")
        rundir.write_json(SUMMARY, self._summary("diverged", None, now - clock.start))
        raise TrainingDiverged(self._diverged_message(what, how))

    def _finish(self, rundir: RunDir, clock: LoopClock) -> dict[str, Any]:
        """The summary of a completed run, written."""
        run = self.config.run
        final = self.parts.backend.to_float(self.loop.final_sum) / (run.steps - clock.final_from)
        summary = self._summary("completed", final, time.perf_counter() - clock.start)
        rundir.write_json(SUMMARY, summary)
        return summary

    def _summary(self, status: str, final: float | None, seconds: float) -> dict[str, Any]:
        """The summary of the run as it stands (``status``: completed, interrupted, diverged,
        failed), with the provenance of this process."""
        self._status = status
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
            PROVENANCE: provenance(),
        }
