"""Resuming a run: which checkpoint, with which configuration, and is it this run's and sane?

:func:`plan_resume` decides how the run in a directory continues — from its newest intact
checkpoint (skipping damaged newer ones), or from step 0 with its ``config.json`` when it was
stopped before its first checkpoint — and with how many steps (``--steps`` may change its length
but not move its final window before the checkpoint); the trainer then loads the plan's state.

A checkpoint could come from another run (a ``checkpoint/`` directory copied between runs), from
a model of another size, or be altered by hand. Loading it must fail with a message that names
the mismatch, not continue a different run under this run's name or fail later with a shape
error inside a model:

* :func:`check_state_layout`: θ's layout (parameter names and shapes, stored in the checkpoint's
  metadata) is the configured model's; θ, h, the optimizer's and the loop's arrays are there with
  the shapes and dtypes the configuration fixes (the plugins' own arrays may change shape as a
  run goes, so only their dtypes are compared); and the state is finite (gradflow never writes a
  checkpoint with a NaN or ±inf in θ, h, the optimizer, the loop or the estimator);
* :func:`check_against_run_config`: the checkpoint's configuration is the run directory's
  ``config.json`` (except ``run.steps``, which ``--resume --steps`` changes, and ``run.out``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from gradflow.contracts.errors import CheckpointError, ConfigError, RunDirError
from gradflow.contracts.layout import ParamLayout
from gradflow.runfiles.checkpoint import list_checkpoints, load_checkpoint
from gradflow.runfiles.config import TrainConfig, run_config
from gradflow.runfiles.rundir import CHECKPOINT, CONFIG, METRICS, SUMMARY, read_metrics

#: run settings that may differ between a checkpoint and its run directory's config.json
MAY_DIFFER = {("run", "steps"), ("run", "out")}


def layout_record(layout: ParamLayout) -> list[list[Any]]:
    """θ's layout as JSON: ``[[name, [shape...], recurrent], ...]``."""
    return [[s.name, list(s.shape), s.recurrent] for s in layout.specs.values()]


def _layout_text(record: Any) -> str:
    try:
        return ", ".join(f"{name} {tuple(shape)}" for name, shape, *_ in record)
    except (TypeError, ValueError):  # not a layout gradflow wrote
        return f"an unreadable layout {str(record)[:40]!r}"


#: arrays whose shapes the configuration fixes (the plugins' own arrays may change shape as a
#: run goes: TBPTT's window, copy's recent losses)
FIXED = ("theta", "h", "optimizer.", "loop.")
#: arrays that must be finite in a checkpoint (a task's state is the task's business)
FINITE = ("theta", "h", "optimizer.", "loop.", "estimator.")


def _among(key: str, prefixes: tuple[str, ...]) -> bool:
    return any(key == p or (p.endswith(".") and key.startswith(p)) for p in prefixes)


def check_state_layout(expected: dict[str, np.ndarray], arrays: dict[str, np.ndarray],
                       meta: dict[str, Any], model_name: str, layout: ParamLayout) -> None:
    """Raise :class:`CheckpointError` naming the mismatch if a checkpoint's ``arrays`` do not fit
    the ``expected`` arrays of the configured run: θ's layout recorded in ``meta`` is another
    model's, an array whose shape the configuration fixes (θ, h, the optimizer's and the loop's)
    is missing, extra, or of another shape or dtype, a plugin array has another dtype, or an
    array of θ, h, the optimizer, the loop or the estimator holds NaN or ±inf."""
    where = f"checkpoint {meta.get('path', '?')!r}"
    ours = layout_record(layout)
    theirs = meta.get("layout")
    if theirs is not None and theirs != ours:
        raise CheckpointError(
            f"{where} is of model {meta.get('model', '?')!r} with θ = {_layout_text(theirs)}; "
            f"the configured model {model_name!r} has θ = {_layout_text(ours)}: refusing to "
            "load another model's parameters")
    fixed_ours = {k for k in expected if _among(k, FIXED)}
    fixed_theirs = {k for k in arrays if _among(k, FIXED)}
    missing, extra = sorted(fixed_ours - fixed_theirs), sorted(fixed_theirs - fixed_ours)
    if missing or extra:
        parts = ([f"lacks {', '.join(missing)}"] if missing else []) + \
                ([f"has unexpected {', '.join(extra)}"] if extra else [])
        raise CheckpointError(f"{where} does not fit the configured run: it "
                              f"{' and '.join(parts)} (a checkpoint of another model, optimizer "
                              "or version)")
    for key in sorted(set(expected) & set(arrays)):
        got, want = arrays[key], expected[key]
        shape_differs = key in fixed_ours and got.shape != want.shape
        if shape_differs or got.dtype != want.dtype:
            raise CheckpointError(
                f"{where} does not fit the configured run: {key} is {got.dtype} "
                f"{tuple(got.shape)}, the run needs {want.dtype}"
                f"{' ' + str(tuple(want.shape)) if key in fixed_ours else ''} (a checkpoint of "
                f"another model or layout; the model is {model_name!r} with θ = "
                f"{_layout_text(ours)})")
    for key, got in arrays.items():
        if _among(key, FINITE) and got.dtype.kind == "f" and not np.isfinite(got).all():
            raise CheckpointError(f"{where}: {key} holds NaN or infinite values; gradflow never "
                                  "writes such a checkpoint, so it was altered: refusing it")


def non_finite(arrays: dict[str, np.ndarray]) -> list[str]:
    """The arrays of a state that must be finite (see ``FINITE``) but are not."""
    return [k for k, v in arrays.items()
            if _among(k, FINITE) and v.dtype.kind == "f" and not np.isfinite(v).all()]


def read_run_config(path: Path) -> TrainConfig | None:
    """The run directory's ``config.json`` as a config, or ``None`` if missing or unreadable."""
    try:
        return run_config(json.loads((path / CONFIG).read_text(encoding="utf-8")))
    except (OSError, ValueError, ValidationError, RecursionError):
        return None


def _flat(config: TrainConfig) -> dict[tuple[str, str], Any]:
    data = config.model_dump(mode="json")
    return {(section, key): value for section, table in data.items()
            for key, value in table.items() if (section, key) not in MAY_DIFFER}


def check_against_run_config(checkpoint: TrainConfig, run: TrainConfig, where: str) -> None:
    """Raise :class:`CheckpointError` if the checkpoint's configuration differs from the run
    directory's (``where`` names the checkpoint) in anything but ``run.steps`` and ``run.out``."""
    a, b = _flat(checkpoint), _flat(run)
    diffs = [f"{s}.{k} {a.get((s, k))!r} vs {b.get((s, k))!r}"
             for s, k in sorted(set(a) | set(b)) if a.get((s, k)) != b.get((s, k))]
    if diffs:
        more = f" (and {len(diffs) - 3} more)" if len(diffs) > 3 else ""
        raise CheckpointError(
            f"{where} belongs to another run: its configuration differs from this run "
            f"directory's {CONFIG} in {'; '.join(diffs[:3])}{more}; refusing to resume from it")


def first_checkpoint_step(config: TrainConfig) -> int:
    """The step of a run's first checkpoint (``checkpoint_every``, or the end of the run)."""
    run = config.run
    return min(run.checkpoint_every, run.steps) if run.checkpoint_every else run.steps


@dataclass
class ResumePlan:
    """How a run continues (see :func:`plan_resume`)."""

    #: the run's configuration, with ``run.steps`` (possibly changed) and ``run.out`` set
    config: TrainConfig
    #: the step it continues after (0: from the start)
    step: int
    #: the checkpoint's arrays and metadata (``None`` when starting again from step 0)
    arrays: dict[str, np.ndarray] | None = None
    meta: dict[str, Any] | None = None
    #: ``--steps`` changed the run's length
    steps_changed: bool = False
    #: the run directory's ``config.json`` must be written again
    rewrite_config: bool = False
    #: problems of newer checkpoints that could not be read
    skipped: list[str] = field(default_factory=list)
    #: what is worth telling the user ("no checkpoint yet")
    notes: list[str] = field(default_factory=list)


def _completed(path: Path) -> bool:
    """Whether the run in ``path`` wrote its summary as completed (a run killed after its final
    checkpoint but before its summary is resumed to write the summary)."""
    try:
        return json.loads((path / SUMMARY).read_text(encoding="utf-8")).get("status") \
            == "completed"
    except (OSError, ValueError, AttributeError):
        return False


def _continuing(path: Path, config: TrainConfig, step: int, steps: int | None) -> bool:
    """Set ``config``'s length (``steps``, if given) and directory for a run that continues in
    ``path`` after ``step``; return whether the length changed."""
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
    return changed


def _restart(path: Path, config: TrainConfig | None, steps: int | None) -> ResumePlan:
    """A run that has no checkpoint: from step 0 with its ``config.json``, if no metrics line
    shows that a checkpoint should exist (else its checkpoints were lost)."""
    where = path / CHECKPOINT
    if config is None:
        raise CheckpointError(f"no checkpoint in {str(where)!r} and no readable {CONFIG} in "
                              f"{str(path)!r}: nothing to resume from; start the run again")
    first = first_checkpoint_step(config)
    logged = [r.get("step") for r in read_metrics(path)] if (path / METRICS).exists() else []
    last = max((s for s in logged if isinstance(s, int)), default=0)
    if last > first:  # (the line of the checkpoint's step comes before the checkpoint)
        raise CheckpointError(
            f"no checkpoint in {str(where)!r}, although the run logged step {last:,} (its "
            f"first checkpoint was due at step {first:,}): the checkpoints were deleted; "
            "nothing to resume from")
    changed = _continuing(path, config, 0, steps)
    note = (f"no checkpoint had been written yet (the first is due at step {first:,}): "
            f"starting again from step 0 with {CONFIG}")
    return ResumePlan(config, 0, steps_changed=changed, rewrite_config=changed, notes=[note])


def plan_resume(run_dir: str | Path, steps: int | None = None,
                at_most: int | None = None) -> ResumePlan:
    """How the run in ``run_dir`` continues: from its newest intact checkpoint, with the
    configuration stored there.

    ``steps`` (optional) changes ``run.steps``: to extend a finished run, or to stop earlier. It
    may not move the final window (the last ``final_window`` steps, whose mean is the final
    loss) to before the checkpoint, since those losses were not all summed. A checkpoint that
    belongs to another run (its configuration differs from the directory's ``config.json``) is
    refused; its layout and values are checked when it is loaded (:func:`check_state_layout`).
    With ``at_most``, the newest checkpoint at that step or before (a replica of a replicated
    run resumes where all the replicas have one).
    """
    path = Path(run_dir)
    if not path.is_dir():
        raise RunDirError(f"cannot resume {str(path)!r}: no such run directory")
    run_config = read_run_config(path)
    if not [s for s, _ in list_checkpoints(path / CHECKPOINT) if at_most is None or s <= at_most]:
        return _restart(path, run_config, steps)
    arrays, meta = load_checkpoint(path / CHECKPOINT, at_most)
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
    changed = _continuing(path, config, step, steps)
    return ResumePlan(config, step, arrays, meta, steps_changed=changed,
                      rewrite_config=changed or run_config is None,
                      skipped=list(meta.get("skipped", [])))
