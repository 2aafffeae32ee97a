"""Sweeps: a grid of training runs on a local process pool or a Dask distributed cluster.

A grid file is a training config plus a ``[sweep]`` table that maps dotted option names to lists
of values::

    [run]
    steps = 20000
    [sweep]
    "estimator.name" = ["uoro", "tbptt"]
    "run.seed" = [0, 1, 2]

The product of the lists (in the table's order, the last key varying fastest) runs as separate
runs, each in a subdirectory of the sweep directory named by its values
(``estimator.name=uoro,run.seed=0``).

Options that belong together are given as **variants**: ``[[variants]]`` tables, each with a
``name`` and whole config sections that replace the base's (a variant's ``[estimator]`` is the
whole estimator section, so one estimator's options never reach another)::

    [[variants]]
    name = "tbptt-8"
    estimator = { name = "tbptt", truncation = 8 }
    [[variants]]
    name = "uoro"
    estimator = { name = "uoro" }
    optimizer = { name = "sgd", lr = 0.01 }

The runs are then every variant crossed with the product of the ``[sweep]`` lists (which may be
absent), named ``variant=tbptt-8,run.seed=0``. :func:`validate_runs` checks every run's
configuration without training (``gradflow sweep --dry-run``). A run that fails — a bad value, a
diverging loss, a crash in a plugin — is recorded with its error (``error.txt`` in its directory)
and the others go on.

Engines: :func:`run_pool` uses a :class:`concurrent.futures.ProcessPoolExecutor` with the
``spawn`` start method (fresh interpreters, safe with BLAS and threads); runs write their
directories in place. :func:`run_dask` submits the runs to a Dask distributed scheduler; each
run trains into a temporary directory on its worker and sends the directory's files back, so the
workers need gradflow installed but no shared filesystem. Runs are deterministic, so both
engines give the same numbers (when Dask workers run one task at a time: BLAS thread limits are
per process).
"""

from __future__ import annotations

import itertools
import json
import multiprocessing
import os
import re
import shutil
import tempfile
import traceback
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gradflow.contracts.errors import ConfigError, GradflowError, SweepSetupError
from gradflow.runfiles.config import SECTIONS, config_from_dict, load_toml, merge, parse_assignment
from gradflow.runfiles.rundir import (
    CONFIG,
    SUMMARY,
    atomic_write_bytes,
    atomic_write_json,
    finite_or_none,
    fsync_directory,
)

SWEEP_TABLE = "sweep"
VARIANTS_TABLE = "variants"
#: the key under which a run's variant is recorded among its values
VARIANT_KEY = "variant"
ERROR_FILE = "error.txt"
_UNSAFE = re.compile(r"[^A-Za-z0-9._+@=-]+")


@dataclass(frozen=True)
class SweepRun:
    """One point of the grid: its directory name, its assignments and its config (plain data)."""

    name: str
    values: tuple[tuple[str, Any], ...]
    config: dict[str, Any]


@dataclass(frozen=True)
class Variant:
    """A named set of whole config sections that replace the base's (see the module docstring)."""

    name: str
    sections: dict[str, dict[str, Any]]


@dataclass
class Grid:
    """A base config, its variants (none: the base alone) and the axes of the sweep, in order."""

    base: dict[str, Any]
    axes: list[tuple[str, list[Any]]]
    variants: list[Variant] = field(default_factory=list)

    @property
    def keys(self) -> list[str]:
        return ([VARIANT_KEY] if self.variants else []) + [key for key, _ in self.axes]

    def runs(self) -> list[SweepRun]:
        """Every variant crossed with the product of the axes, the last axis varying fastest."""
        runs, names = [], set()
        for variant in self.variants or [None]:
            for combo in itertools.product(*(values for _, values in self.axes)):
                assigned = tuple(zip([key for key, _ in self.axes], combo, strict=True))
                config = json.loads(json.dumps(self.base))
                if variant is not None:
                    config.update(json.loads(json.dumps(variant.sections)))
                for key, value in assigned:
                    section, _, name = key.partition(".")
                    merge(config, section, name, value)
                values = assigned if variant is None else ((VARIANT_KEY, variant.name), *assigned)
                name = ",".join(f"{key}={_label(value)}" for key, value in values) or "run"
                unique, k = name, 2
                while unique in names:
                    unique, k = f"{name}-{k}", k + 1
                names.add(unique)
                runs.append(SweepRun(unique, values, config))
        return runs


def _label(value: Any) -> str:
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, list | tuple):
        text = "+".join(_label(v) for v in value)
    else:
        text = str(value)
    return _UNSAFE.sub("_", text).strip("_") or "_"


def parse_grid(data: dict[str, Any], sets: Iterable[str] = ()) -> Grid:
    """A :class:`Grid` from a grid file's contents; ``sets`` override the base config."""
    data = json.loads(json.dumps(data))
    table = data.pop(SWEEP_TABLE, None)
    variants = parse_variants(data.pop(VARIANTS_TABLE, None))
    if table is None and variants:
        table = {}
    if not isinstance(table, dict) or not (table or variants):
        raise ConfigError("a sweep grid needs a [sweep] table mapping dotted option names to "
                          'lists, e.g. "estimator.name" = ["uoro", "tbptt"], or [[variants]] '
                          "tables")
    axes = []
    for key, values in table.items():
        section, dot, name = key.partition(".")
        if not dot or not name or "." in name or section not in SECTIONS:
            raise ConfigError(f"[sweep] key {key!r}: expected section.key with a section among "
                              f"{', '.join(SECTIONS)}, e.g. \"estimator.name\"")
        if key == "run.out":
            raise ConfigError("[sweep] cannot vary run.out: the sweep names each run's "
                              "directory (use --out for the sweep's directory)")
        if not isinstance(values, list) or not values:
            raise ConfigError(f"[sweep] {key!r} must be a non-empty list of values, got "
                              f"{values!r}")
        axes.append((key, values))
    for item in sets:
        merge(data, *parse_assignment(item))
    config_from_dict(json.loads(json.dumps(data)))  # the base itself must be a valid config
    return Grid(data, axes, variants)


def parse_variants(entries: Any, table: str = VARIANTS_TABLE,
                   allowed: tuple[str, ...] = SECTIONS) -> list[Variant]:
    """The ``[[table]]`` entries of a grid or study file, checked: each a unique ``name`` and
    whole config sections among ``allowed`` (not ``run.out``, which the sweep sets)."""
    if entries is None:
        return []
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"[[{table}]] must be a non-empty array of tables, each with a name "
                          "and whole config sections, e.g. name = \"tbptt-8\" and estimator = "
                          "{ name = \"tbptt\", truncation = 8 }")
    variants: list[Variant] = []
    for i, entry in enumerate(entries):
        where = f"[[{table}]] #{i + 1}"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: expected a table, got {entry!r}")
        name = entry.get("name")
        if not isinstance(name, str) or not name or _label(name) != name or "~" in name:
            raise ConfigError(f"{where}: needs a name of letters, digits and . _ + @ = -, got "
                              f"{name!r}")
        if any(v.name == name for v in variants):
            raise ConfigError(f"{where}: the name {name!r} is used twice")
        sections = {k: v for k, v in entry.items() if k != "name"}
        if not sections:
            raise ConfigError(f"{where} ({name}): gives no config section")
        for key, value in sections.items():
            if key not in allowed:
                raise ConfigError(f"{where} ({name}): unknown section {key!r}; the sections are "
                                  f"{', '.join(allowed)}")
            if not isinstance(value, dict):
                raise ConfigError(f"{where} ({name}): section {key!r} must be a table, got "
                                  f"{value!r}")
        if "out" in sections.get("run", {}):
            raise ConfigError(f"{where} ({name}): cannot set run.out: the sweep names each run's "
                              "directory")
        variants.append(Variant(name, sections))
    return variants


def validate_runs(grid: Grid) -> dict[str, str]:
    """Every run's configuration checked as training would check it before its first step
    (names, options, sizes, capabilities, the estimator's optimizer defaults), without training:
    the problem of each invalid run, by name."""
    from gradflow.training.components import resolve_config

    problems = {}
    for run in grid.runs():
        try:
            resolve_config(config_from_dict(json.loads(json.dumps(run.config))))
        except GradflowError as exc:
            problems[run.name] = str(exc)
    return problems


def load_grid(path: str | Path, sets: Iterable[str] = ()) -> Grid:
    """Read a grid file (see the module's docstring)."""
    return parse_grid(load_toml(path), sets)


# -- one run, in a worker ----------------------------------------------------------------------
def _failure(exc: BaseException) -> dict[str, Any]:
    message = str(exc) if isinstance(exc, GradflowError) else f"{type(exc).__name__}: {exc}"
    return {"status": "failed", "error": message.splitlines()[0] if message else "failed",
            "traceback": "".join(traceback.format_exception(exc))}


def _collect(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def run_one(config: dict[str, Any], out: str, ship: bool = False) -> dict[str, Any]:
    """Train one run of a sweep; never raises. Returns ``{"status", "summary"}`` or
    ``{"status": "failed", "error", "traceback"}``; with ``ship`` the run trains in a temporary
    directory and the result also holds its ``files`` (relative path -> bytes), ``out`` being
    where they will go. In a pool worker (its main thread) Ctrl-C reaches the run as it does
    ``gradflow train``: the step finishes, a checkpoint is written, and the run is reported as
    failed with the command that resumes it."""
    from gradflow.training.trainer import Trainer

    try:
        cfg = config_from_dict(config)
        if not ship:
            summary = Trainer(cfg).run(out, force=True)
            return {"status": summary["status"], "summary": summary}
        with tempfile.TemporaryDirectory(prefix="gradflow-sweep-") as tmp:
            summary = Trainer(cfg).run(Path(tmp) / "run")
            files = _collect(Path(tmp) / "run")
    except Exception as exc:
        return _failure(exc)
    summary["run_dir"] = out
    resolved = json.loads(files[CONFIG])
    resolved["run"]["out"] = out
    for name, data in ((CONFIG, resolved), (SUMMARY, summary)):
        text = json.dumps(finite_or_none(data), indent=2, allow_nan=False)
        files[name] = (text + "\n").encode()
    return {"status": summary["status"], "summary": summary, "files": files}


def install_files(files: dict[str, bytes], directory: Path) -> None:
    """Write a shipped run directory to ``directory`` (replacing it) through a temporary
    directory and a rename."""
    tmp = directory.with_name(f".{directory.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    for rel, data in files.items():
        target = tmp / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    tmp.mkdir(parents=True, exist_ok=True)
    if directory.exists():
        shutil.rmtree(directory)
    os.replace(tmp, directory)
    fsync_directory(directory.parent)


# -- engines -----------------------------------------------------------------------------------
Done = Callable[[SweepRun, dict[str, Any]], None]


@dataclass
class SweepResult:
    """Every run of a sweep with its result."""

    directory: Path
    grid: Grid
    runs: list[SweepRun]
    results: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def failed(self) -> list[str]:
        return [r.name for r in self.runs if self.results.get(r.name, {}).get("status")
                != "completed"]


def run_pool(runs: list[SweepRun], directory: Path, workers: int, done: Done) -> None:
    """Run ``runs`` on a local pool of ``workers`` processes (spawn)."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        futures = {pool.submit(run_one, run.config, str(directory / run.name)): run
                   for run in runs}
        try:
            for future in as_completed(futures):
                try:
                    result = future.result()
                except Exception as exc:  # the worker process died
                    result = _failure(exc)
                done(futures[future], result)
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise


def run_dask(runs: list[SweepRun], directory: Path, scheduler: str, done: Done) -> None:
    """Run ``runs`` on the Dask distributed cluster at ``scheduler`` (``tcp://host:port``)."""
    try:
        from distributed import Client
        from distributed import as_completed as dask_completed
    except ImportError:
        raise SweepSetupError("--scheduler needs Dask distributed: pip install "
                              "'gradflow[dask]'") from None
    try:
        client = Client(scheduler, timeout="20s", set_as_default=False)
    except (OSError, TimeoutError, ValueError) as exc:
        raise SweepSetupError(f"cannot connect to the Dask scheduler {scheduler!r}: "
                              f"{exc}") from None
    with client:
        tag = uuid.uuid4().hex[:12]  # task keys unique to this sweep: Dask caches by key
        futures = {client.submit(run_one, run.config, str(directory / run.name), True,
                                 key=f"gradflow-{tag}-{i}", pure=False): run
                   for i, run in enumerate(runs)}
        for future in dask_completed(list(futures), loop=client.loop):
            try:
                result = future.result()
            except Exception as exc:  # a worker lost too often, a cancelled task
                result = _failure(exc)
            done(futures[future], result)


def record(run: SweepRun, result: dict[str, Any], directory: Path) -> None:
    """Put a finished run's files in place (shipped files; ``error.txt`` for a failure)."""
    target = directory / run.name
    files = result.pop("files", None)
    if files is not None:
        install_files(files, target)
    if result.get("status") == "failed":
        target.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(target / ERROR_FILE, (result.get("traceback") or
                                                 result.get("error", "")).encode())
    elif (target / ERROR_FILE).exists():
        (target / ERROR_FILE).unlink()


def write_manifest(result: SweepResult) -> None:
    """``sweep.json``: the grid, and every run with its values, status and error."""
    atomic_write_json(result.directory / "sweep.json", {
        "base": result.grid.base,
        "axes": [{"key": k, "values": v} for k, v in result.grid.axes],
        "variants": [{"name": v.name, "sections": v.sections} for v in result.grid.variants],
        "runs": [{"name": r.name, "values": dict(r.values),
                  "status": result.results.get(r.name, {}).get("status", "not run"),
                  "error": result.results.get(r.name, {}).get("error")}
                 for r in result.runs],
    })


def prepare_directory(directory: str | Path, force: bool = False) -> Path:
    """Create the sweep directory; an existing non-empty one needs ``force`` (its runs are then
    trained again, other files left alone)."""
    d = Path(directory)
    if d.exists() and not d.is_dir():
        raise SweepSetupError(f"sweep directory {str(d)!r} exists and is not a directory")
    if d.is_dir() and any(d.iterdir()) and not force:
        raise SweepSetupError(f"sweep directory {str(d)!r} already exists and is not empty; "
                              "pass --force to run the sweep again in it, or choose another "
                              "--out")
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SweepSetupError(f"cannot create sweep directory {str(d)!r}: "
                              f"{exc.strerror or exc}") from None
    return d


def completed_before(run: SweepRun, directory: Path) -> dict[str, Any] | None:
    """The outcome of ``run`` if its directory already holds a completed run of the same
    configuration (its ``config.json`` equal to ``run.config`` resolved, run.out aside), else
    ``None``: what a sweep or study started again does not run twice."""
    from gradflow.training.components import resolve_config

    target = directory / run.name
    try:
        summary = json.loads((target / SUMMARY).read_text(encoding="utf-8"))
        stored = json.loads((target / CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if summary.get("status") != "completed":
        return None
    try:
        wanted = resolve_config(config_from_dict(json.loads(json.dumps(run.config))))
    except GradflowError:
        return None
    wanted_data = wanted.model_dump(mode="json")
    stored.pop("provenance", None)
    for data in (wanted_data, stored):
        data.get("run", {}).pop("out", None)
    return {"status": "completed", "summary": summary} if wanted_data == stored else None


def run_sweep(grid: Grid, directory: str | Path, workers: int | None = None,
              scheduler: str | None = None, force: bool = False,
              done: Done | None = None, resume: bool = False) -> SweepResult:
    """Run every point of ``grid`` into ``directory`` (see the module's docstring) and write
    ``sweep.json``, ``runs.csv``, ``summary.csv`` and ``summary.md``; return the results.
    ``done(run, result)`` is called as each run finishes. With ``resume`` the runs that already
    completed there with the same configuration (:func:`completed_before`) are not run again."""
    from gradflow.tools.sweep_summary import write_tables

    runs = grid.runs()
    d = prepare_directory(directory, force)
    result = SweepResult(d, grid, runs)
    if resume:
        for run in runs:
            outcome = completed_before(run, d)
            if outcome is not None:
                result.results[run.name] = outcome
        runs = [run for run in runs if run.name not in result.results]
    write_manifest(result)

    def finished(run: SweepRun, outcome: dict[str, Any]) -> None:
        record(run, outcome, d)
        result.results[run.name] = outcome
        write_manifest(result)
        if done is not None:
            done(run, outcome)

    try:
        if runs and scheduler is not None:
            run_dask(runs, d, scheduler, finished)
        elif runs:
            count = workers or min(len(runs), os.cpu_count() or 1)
            run_pool(runs, d, max(1, count), finished)
    finally:
        write_manifest(result)
        write_tables(result)
    return result
