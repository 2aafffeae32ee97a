"""Replicated runs: R independent runs advanced together as one computation.

``run.replicas = R`` asks for R runs of one configuration that differ in their seed
(``run.replica_seeds``, default ``seed``, ``seed + 1``, …) and learning rate
(``optimizer.replica_lrs``, default ``lr`` for all): each has its own θ, estimator state,
optimizer state, task stream and run directory ``out/replica-000``, ``out/replica-001``, …, and
each directory holds exactly what the same run made alone writes — its ``config.json`` (that of the
run alone: ``replicas = 1``, its seed and rate), ``metrics.jsonl`` line for line, its checkpoints
(a replica can be resumed alone, as an ordinary run) and its summary. ``out/replicas.json`` lists
the replicas; ``gradflow train --resume out`` continues all of them from the newest step every
replica has a checkpoint for.

How the R runs advance (:class:`ReplicatedTrainer`):

* **batched**, when the model and the estimator declare ``replicas``
  (:func:`gradflow.contracts.model.runs_replicated`): θ is one (R, P) array, the state
  (R, B, n), the estimator's state carries a leading replica axis and a generator per replica
  (seeded as each run alone), the optimizer updates (R, P) with a learning rate per replica — one
  online step, one clipping and one update for all R runs, so that at small sizes, where a step
  is the fixed cost of its calls, R runs cost little more than one. Replica r's numbers are
  computed by the same operations on its own rows as the run alone's (matrix products per
  replica, reductions over its own rows): the tests compare the two bit for bit;
* **one after the other** otherwise: R ordinary trainers, one step each in turn.

Everything else — metrics lines, held-out evaluations, divergence checks, checkpoints, summaries,
loggers — is each replica's own :class:`~gradflow.Trainer` machinery, driven at the same steps. A
replica that diverges stops (its summary says so) and the others go on; the group then ends with
:class:`~gradflow.TrainingDiverged` naming it. SIGINT/SIGTERM checkpoint every replica.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gradflow.contracts.errors import (
    ConfigError,
    GradflowError,
    RunDirError,
    TrainingDiverged,
    TrainingInterrupted,
)
from gradflow.contracts.estimator import runs_replicated as estimator_replicated
from gradflow.contracts.estimator import takes_factors
from gradflow.contracts.model import runs_replicated as model_replicated
from gradflow.contracts.task import Batch
from gradflow.runfiles.checkpoint import list_checkpoints
from gradflow.runfiles.config import TrainConfig, config_from_dict
from gradflow.runfiles.rundir import CHECKPOINT, RunDir, default_run_path
from gradflow.training.clipping import clip_direction
from gradflow.training.components import make_optimizer
from gradflow.training.signals import StopFlag, stop_requests
from gradflow.training.step import online_step
from gradflow.training.threads import blas_threads
from gradflow.training.trainer import LoopClock, Progress, Trainer

Array = Any
#: the file of a replicated run's directory that lists its replicas
GROUP_FILE = "replicas.json"
GROUP_FORMAT = "gradflow-replicas"


def replica_name(index: int) -> str:
    """The directory of replica ``index`` inside the group's: ``replica-007``."""
    return f"replica-{index:03d}"


def replica_configs(config: TrainConfig, out: str | Path) -> list[TrainConfig]:
    """The configuration of each replica: the run made alone (``replicas = 1``), with its seed,
    its learning rate when the group gives one per replica, and its directory in ``out``. Only
    what the user set is carried (so that an estimator's optimizer defaults resolve as they
    would for the run alone)."""
    run = config.run
    seeds = run.replica_seeds or [run.seed + r for r in range(run.replicas)]
    rates = config.optimizer.replica_lrs
    data = config.model_dump(mode="json", exclude_unset=True)
    members = []
    for r in range(run.replicas):
        member = json.loads(json.dumps(data))
        member_run = member.setdefault("run", {})
        for key in ("replicas", "replica_seeds"):
            member_run.pop(key, None)
        member_run["seed"] = int(seeds[r])
        member_run["out"] = str(Path(out) / replica_name(r))
        optimizer = member.setdefault("optimizer", {})
        optimizer.pop("replica_lrs", None)
        if rates is not None:
            optimizer["lr"] = float(rates[r])
        if not optimizer:
            member.pop("optimizer")
        members.append(config_from_dict(member))
    return members


class ReplicaMember(Trainer):
    """One replica's trainer: its parts, loop and run directory are its own; in a batched group
    its θ is a view of the group's (R, P) θ and its state comes from the group's arrays."""

    engine: _Batched | None = None
    index: int = 0

    def state(self) -> tuple[dict[str, Any], dict[str, Any]]:
        if self.engine is None:
            return super().state()
        return self.engine.member_state(self)


@dataclass
class _Sums:
    """The loop sums of all replicas between two metrics lines, (R,) arrays on the device."""

    loss: Array
    norm: Array
    final: Array
    updates: int = 0
    steps: int = 0


class _Sequential:
    """R ordinary trainers, one step each in turn."""

    batched = False

    def __init__(self, members: list[ReplicaMember]) -> None:
        self.members = members

    def advance(self, clocks: list[LoopClock]) -> None:
        for member, clock in zip(self.members, clocks, strict=True):
            loss, raw_norm = member.advance()
            member._accumulate(loss, raw_norm, clock)

    def sync(self, member: ReplicaMember) -> None:
        """The member's loop sums are its own: nothing to copy."""

    def window_done(self) -> None:
        """Each member reset its own window."""


class _Batched:
    """R runs as one computation (see the module docstring), built from the members' states —
    fresh or resumed — so that each replica continues exactly where its own run is."""

    batched = True

    def __init__(self, members: list[ReplicaMember]) -> None:
        first = members[0]
        parts = first.parts
        self.members = members
        self.backend, self.xp = parts.backend, parts.backend.xp
        xp = self.xp
        self.model, self.loss_fn = parts.model, first.loss_fn
        self.n_rec = self.model.layout.n_rec
        self.opt = first.config.optimizer
        self.final_from = max(first.config.run.steps - first.config.run.final_window, 0)
        self.theta = xp.stack([m.theta for m in members])
        self.h = xp.stack([m.h for m in members])
        self.h0 = xp.stack([m._h0 for m in members])
        estimator = type(parts.estimator)(self.model, parts.estimator.options)
        estimator.precondition = parts.estimator.precondition
        estimator.start(first.config.run.batch,
                        replica_seeds=[m.parts.seeds["estimator"] for m in members])
        optimizer = make_optimizer(self.opt, self.backend, self.model.layout, len(members))
        for r, member in enumerate(members):
            estimator.load_replica_state_dict(r, member.parts.estimator.state_dict())
            optimizer.load_state_dict(member.parts.optimizer.state_dict(), self.backend.asarray,
                                      replica=r)
            member.theta = self.theta[r, ...]  # a view: the member reads its own θ
            member.engine, member.index = self, r
        estimator.factors = takes_factors(estimator)
        self.estimator, self.optimizer = estimator, optimizer
        self.observed = [m for m in members if m._observed]
        self.rates = [m._rate for m in members]
        self._zero = xp.zeros((len(members),), dtype=self.backend.dtype)
        # a resumed window goes on from the members' own sums (a checkpoint taken mid-window)
        self.sums = _Sums(xp.stack([m.loop.loss_sum for m in members]),
                          xp.stack([m.loop.norm_sum for m in members]), self._zero,
                          first.loop.updates, first.loop.window_steps)
        self.step = first.step

    def advance(self, clocks: list[LoopClock]) -> None:
        xp, members = self.xp, self.members
        batches = [m.parts.task.next() for m in members]
        resets = [b.reset for b in batches]
        reset = None
        if any(r is not None for r in resets):
            none = xp.zeros((self.h.shape[1],), dtype=xp.bool)
            reset = self._stacked([none if r is None else r for r in resets])
        batch = Batch(self._stacked([b.inputs for b in batches]),
                      self._stacked([b.targets for b in batches]), reset)
        out = online_step(self.model, self.loss_fn, self.theta, self.h, batch, self.h0,
                          self.estimator, materialize=False)
        for member in self.observed:
            member.parts.task.observe(out.loss[member.index, ...])
        self.step += 1
        self.h = out.h
        sums, raw_norm = self.sums, None
        if out.direction is not None:
            opt = self.opt
            direction, raw_norm = clip_direction(xp, out.direction, self.n_rec, opt.clip,
                                                 opt.clip_rec)
            rates = xp.asarray([rate(self.step) for rate in self.rates],
                               dtype=self.backend.dtype)
            self.optimizer.update(self.theta, direction, rates)
            sums.norm = sums.norm + raw_norm
            sums.updates += 1
        sums.loss = sums.loss + out.loss
        if self.step > self.final_from:
            sums.final = sums.final + out.loss
        sums.steps += 1
        for member in members:
            member.step = self.step

    def _stacked(self, arrays: list[Array]) -> Array:
        """The replicas' arrays (B, …) as one (R, B, …): a concatenation along the streams and a
        reshape (a third of the cost of stacking R small arrays)."""
        first = arrays[0]
        joined = self.xp.concat(arrays, axis=0)
        return self.xp.reshape(joined, (len(arrays), *first.shape))

    def sync(self, member: ReplicaMember) -> None:
        """The member's loop sums, from the group's (before its metrics line or checkpoint)."""
        r, acc, sums = member.index, member.loop, self.sums
        acc.loss_sum, acc.norm_sum = sums.loss[r, ...], sums.norm[r, ...]
        acc.final_sum = acc.final_sum + sums.final[r, ...]
        acc.updates, acc.window_steps = sums.updates, sums.steps
        member.h = self.h[r, ...]

    def window_done(self) -> None:
        """After the metrics line of every member: a new window (the final sums moved into the
        members' own)."""
        self.sums = _Sums(self._zero, self._zero, self._zero)

    def member_state(self, member: ReplicaMember) -> tuple[dict[str, Any], dict[str, Any]]:
        r = member.index
        return member._state_of(self.theta[r, ...], self.h[r, ...],
                                self.optimizer.state_dict(replica=r),
                                self.estimator.replica_state_dict(r))


class ReplicatedTrainer:
    """R runs of one configuration (``run.replicas``), advanced together (module docstring)."""

    def __init__(self, config: TrainConfig, out: str | Path | None = None,
                 members: list[ReplicaMember] | None = None) -> None:
        if config.run.replicas < 2 and members is None:
            raise ConfigError("a replicated run has run.replicas ≥ 2; run one with Trainer")
        self.config = config
        self.out = Path(out or config.run.out or default_run_path(
            config.task.name, config.estimator.name))
        self.resumed = members is not None
        self.members = members if members is not None else [
            ReplicaMember(member) for member in replica_configs(config, self.out)]
        self.notes: list[str] = []
        self.engine: _Batched | _Sequential = self._engine()
        self._clocks: list[LoopClock] | None = None

    def _engine(self) -> _Batched | _Sequential:
        parts = self.members[0].parts
        if model_replicated(parts.model) and estimator_replicated(parts.estimator):
            return _Batched(self.members)
        return _Sequential(self.members)

    @property
    def batched(self) -> bool:
        """Whether the replicas advance as one computation (else one after the other)."""
        return self.engine.batched

    # -- resuming ------------------------------------------------------------------------------
    @classmethod
    def resume(cls, group_dir: str | Path, steps: int | None = None) -> ReplicatedTrainer:
        """The group in ``group_dir`` continued from the newest step all its replicas have a
        checkpoint for (a replica that has a newer one goes back to that step: the run is
        deterministic, so it writes the same lines and checkpoints again)."""
        path = Path(group_dir)
        record = read_group(path)
        names = record["members"]
        newest = []
        for name in names:
            found = list_checkpoints(path / name / CHECKPOINT)
            newest.append(found[-1][0] if found else 0)
        common = min(newest)
        members = [ReplicaMember.resume(path / name, steps, at_most=common) for name in names]
        config = config_from_dict(record["config"])
        if steps is not None:
            config.run.steps = steps
        group = cls(config, path, members)
        if len({m.step for m in members}) > 1:  # a damaged checkpoint sent one further back
            raise RunDirError(f"the replicas of {str(path)!r} have no checkpoint at a common "
                              f"step ({sorted({m.step for m in members})}); resume them one by "
                              "one with gradflow train --resume DIR/replica-NNN")
        group.notes = [f"{name}: {note}" for name, m in zip(names, members, strict=True)
                       for note in m.notes]
        if max(newest) > common:
            group.notes.append(f"resuming every replica at step {common:,}, the newest step all "
                               "of them have a checkpoint for")
        return group

    @property
    def step(self) -> int:
        return self.members[0].step

    def advance(self) -> None:
        """One online step of every replica (the unit ``gradflow bench --replicas`` times):
        their losses and direction norms go to the loop sums, read at the next metrics line."""
        if self._clocks is None:
            self._clocks = [m._clock() for m in self.members]
        self.engine.advance(self._clocks)

    # -- the loop ------------------------------------------------------------------------------
    def run(self, force: bool = False, progress: Progress | None = None,
            handle_signals: bool = True) -> list[dict[str, Any]]:
        """Train every replica to ``run.steps``; return their summaries (replica order)."""
        members = self.members
        rundirs: list[RunDir] = []
        try:
            if not self.resumed:
                create_group(self.out, self.config, len(members), force)
            for member in members:
                rundir = member._open_rundir(None, force)
                rundirs.append(rundir)
                member._open_loggers(rundir, member._write_config(rundir))
            threads = members[0].config.run.threads
            with blas_threads(threads), stop_requests(handle_signals) as stop:
                try:
                    summaries = self._loop(rundirs, progress, stop)
                except (GradflowError, MemoryError):
                    raise
                except (Exception, SystemExit) as exc:  # a plugin may not end the process
                    raise members[0]._plugin_failure(exc, rundirs[0]) from exc
        except BaseException:
            for member in members:
                with contextlib.suppress(Exception):  # never hide why the run stopped
                    member._close_loggers()
            raise
        finally:
            for rundir in rundirs:
                rundir.close()
            for member in members:
                member._rundir = None
        for member in members:
            member._close_loggers()
        return summaries

    def _loop(self, rundirs: list[RunDir], progress: Progress | None,
              stop: StopFlag) -> list[dict[str, Any]]:
        members, engine = self.members, self.engine
        run = members[0].config.run
        clocks = self._clocks = [m._clock() for m in members]
        active = list(range(len(members)))
        diverged: dict[int, str] = {}
        while self.step < run.steps:
            engine.advance(clocks)
            step = self.step
            if step % run.log_every and step != run.steps:
                if progress is not None and step % clocks[0].tick == 0:
                    progress(step, None)
                if stop:
                    self._stop(rundirs, clocks, active, stop)
                continue
            records = []
            for r in list(active):
                engine.sync(members[r])
                try:
                    records.append(members[r]._line(rundirs[r], clocks[r]))
                except TrainingDiverged as exc:
                    diverged[r] = str(exc)
                    active.remove(r)
            engine.window_done()
            if progress is not None and records:
                progress(step, _mean_record(records))
            if stop and step < run.steps and active:
                self._stop(rundirs, clocks, active, stop)
            if not active:
                break
        summaries: list[dict[str, Any]] = []
        for r, member in enumerate(members):
            if r in active:
                engine.sync(member)
                summaries.append(member._finish(rundirs[r], clocks[r]))
            else:
                summaries.append(member._summary("diverged", None, member.loop.elapsed))
        if diverged:
            first = min(diverged)
            raise TrainingDiverged(
                f"{len(diverged)} of {len(members)} replicas diverged "
                f"({', '.join(replica_name(r) for r in sorted(diverged))}); the others "
                f"{'completed' if active else 'had diverged too'}. {replica_name(first)}: "
                f"{diverged[first]}")
        return summaries

    def _stop(self, rundirs: list[RunDir], clocks: list[LoopClock], active: list[int],
              stop: StopFlag) -> None:
        """Checkpoint every replica still running and raise one interruption for the group."""
        stopped = []
        for r in active:
            self.engine.sync(self.members[r])
            try:
                self.members[r]._stop(rundirs[r], stop, clocks[r].start, clocks[r].window_start)
            except TrainingInterrupted as exc:
                stopped.append(exc)
        raise TrainingInterrupted(
            f"training stopped by {stop.name} at step {self.step:,} of "
            f"{self.config.run.steps:,}; every replica's checkpoint saved; resume with: "
            f"gradflow train --resume {self.out}", stop.signum)


def _mean_record(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The replicas' metrics lines as one line for a progress bar: the mean of each number."""
    out: dict[str, Any] = {"step": records[0]["step"]}
    for key in records[0]:
        values = [r.get(key) for r in records]
        if key != "step" and all(isinstance(v, int | float) for v in values):
            out[key] = sum(values) / len(values)
    return out


# -- the group's directory ---------------------------------------------------------------------
def create_group(path: Path, config: TrainConfig, replicas: int, force: bool) -> None:
    """The group's directory with its ``replicas.json`` (written under a temporary name and
    renamed). A non-empty directory that is not this kind of group is refused without
    ``force``; the replicas' own directories are created by their run directories."""
    if path.exists() and not path.is_dir():
        raise RunDirError(f"run directory {str(path)!r} is a file")
    if path.is_dir() and any(path.iterdir()) and not force:
        raise RunDirError(f"run directory {str(path)!r} is not empty; choose another --out or "
                          "use --force")
    path.mkdir(parents=True, exist_ok=True)
    record = {"format": GROUP_FORMAT, "version": 1, "replicas": replicas,
              "members": [replica_name(r) for r in range(replicas)],
              "config": config.model_dump(mode="json", exclude_unset=True)}
    tmp = path / f".{GROUP_FILE}.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path / GROUP_FILE)


def read_group(path: Path) -> dict[str, Any]:
    """The ``replicas.json`` of a group directory, checked."""
    try:
        record = json.loads((path / GROUP_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunDirError(f"{str(path)!r} is not a replicated run ({GROUP_FILE} is "
                          "missing)") from None
    except (OSError, ValueError) as exc:
        raise RunDirError(f"{str(path / GROUP_FILE)!r} cannot be read "
                          f"({type(exc).__name__})") from None
    if not (isinstance(record, dict) and record.get("format") == GROUP_FORMAT
            and isinstance(record.get("members"), list) and record["members"]
            and isinstance(record.get("config"), dict)):
        raise RunDirError(f"{str(path / GROUP_FILE)!r} is not a gradflow replicas file")
    return record


def is_group(path: str | Path) -> bool:
    """Whether ``path`` is the directory of a replicated run."""
    return (Path(path) / GROUP_FILE).is_file()

