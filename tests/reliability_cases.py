"""Every bad input gradflow was tried on, with the one line it answers and its exit status.

This list is the single source of two things: ``tests/test_reliability.py`` runs every case
through the real ``gradflow`` command (in-process, or in a subprocess with the hostile plugin
distributions of tests/plugins installed) and checks the exact line and the exit status, and
``docs/reliability.md`` is generated from it::

    python -m tests.reliability_cases          # rewrite docs/reliability.md

(a test fails when the document and the list disagree). In a message, ``…`` stands for text
that varies (a process id, a list of names); paths are relative to the directory the command
runs in.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import shutil
import socket
import subprocess
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

DOC = Path(__file__).resolve().parent.parent / "docs" / "reliability.md"
CKPT_100, CKPT_200 = "run/checkpoint/step-000000000100", "run/checkpoint/step-000000000200"
SMALL = ("--set", "model.n_hidden=4", "--set", "run.log_every=50", "--set",
         "run.checkpoint_every=100", "--set", "run.eval_every=0")
Setup = Callable[[Path], Callable[[], None] | None]


@dataclass(frozen=True)
class Case:
    """One bad input: how to make it (``setup`` in the working directory, then ``gradflow
    ARGV``), and what gradflow must answer (``message``, ``code``)."""

    id: str
    area: str
    what: str
    argv: tuple[str, ...]
    message: str
    code: int
    setup: Setup | None = None
    #: run in a subprocess with the test plugin distributions on PYTHONPATH
    plugins: bool = False
    env: dict[str, str] = field(default_factory=dict)
    #: more to check afterwards (files that must not exist, a checkpoint that must be intact)
    check: Callable[[Path], None] | None = None
    #: optional modules the case needs (an extra): without them it is skipped, with the reason
    needs: tuple[str, ...] = ()


# -- setups ---------------------------------------------------------------------------------
def write(name: str, content: str | bytes) -> Setup:
    def setup(tmp: Path) -> None:
        path = tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    return setup


def train_run(tmp: Path, name: str = "run", steps: int = 200, hidden: int = 4) -> Path:
    """A small finished run in ``tmp/name``: checkpoints at 100 and ``steps``."""
    import gradflow
    from gradflow.runfiles.config import build_config

    cwd = Path.cwd()
    os.chdir(tmp)
    try:
        gradflow.train(build_config(sets=[f"run.steps={steps}", "run.log_every=50",
                                          "run.checkpoint_every=100", "run.eval_every=0",
                                          f"model.n_hidden={hidden}"]),
                       out=name, handle_signals=False)
    finally:
        os.chdir(cwd)
    return tmp / name


def with_run(*changes: Callable[[Path], None], steps: int = 200) -> Setup:
    """Train ``run`` (``steps`` steps), then apply ``changes`` to it (in order)."""
    def setup(tmp: Path) -> None:
        run = train_run(tmp, steps=steps)
        for change in changes:
            change(run)
    return setup


def _meta(ckpt: Path) -> dict[str, Any]:
    return json.loads((ckpt / "meta.json").read_text())


def _set_meta(ckpt: Path, **changes: Any) -> None:
    (ckpt / "meta.json").write_text(json.dumps({**_meta(ckpt), **changes}))


def _replace_arrays(ckpt: Path, data: bytes) -> None:
    """Put ``data`` in as the checkpoint's arrays, with a matching SHA-256 (as an attacker
    who writes the file can)."""
    (ckpt / "arrays.npz").write_bytes(data)
    _set_meta(ckpt, sha256=hashlib.sha256(data).hexdigest())


def truncate(step: int) -> Callable[[Path], None]:
    def change(run: Path) -> None:
        path = run / "checkpoint" / f"step-{step:012d}" / "arrays.npz"
        path.write_bytes(path.read_bytes()[:-100])
    return change


def flip_byte(run: Path) -> None:
    path = run / "checkpoint" / "step-000000000200" / "arrays.npz"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


class Hostile:
    """Unpickling this creates the file ``pwned`` in the current directory."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, ("pwned", "w"))


def hostile_npz(run: Path) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, theta=np.array([Hostile()], dtype=object))
    _replace_arrays(run / "checkpoint" / "step-000000000100", buffer.getvalue())


def pickle_npz(run: Path) -> None:
    _replace_arrays(run / "checkpoint" / "step-000000000100", pickle.dumps(Hostile()))


def compressed_npz(run: Path) -> None:
    from gradflow.runfiles.checkpoint import read_arrays

    ckpt = run / "checkpoint" / "step-000000000100"
    arrays = read_arrays((ckpt / "arrays.npz").read_bytes(), "x")
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    _replace_arrays(ckpt, buffer.getvalue())


def huge_shape_npz(run: Path) -> None:
    ckpt = run / "checkpoint" / "step-000000000100"
    small = io.BytesIO()
    np.save(small, np.zeros(2))
    raw = small.getvalue().replace(b"'shape': (2,), ", b"'shape': (1000000000000,),")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("theta.npy", raw)
    _replace_arrays(ckpt, buffer.getvalue())


def no_pwned(tmp: Path) -> None:
    assert not (tmp / "pwned").exists(), "the pickle was executed"


def rewrite_arrays(run: Path, step: int, edit: Callable[[dict[str, np.ndarray]], None],
                   **meta: Any) -> None:
    """Rewrite a checkpoint's arrays through gradflow's own writer (valid SHA-256)."""
    from gradflow.runfiles.checkpoint import load_checkpoint, save_checkpoint

    ckpt = run / "checkpoint" / f"step-{step:012d}"
    arrays, old = load_checkpoint(ckpt)
    edit(arrays)
    keep = {k: v for k, v in old.items() if k not in ("format", "version", "step", "arrays",
                                                     "sha256", "path", "skipped")}
    tmp = run / "rewrite"
    save_checkpoint(tmp, step, arrays, {**keep, **meta})
    shutil.rmtree(ckpt)
    (tmp / ckpt.name).rename(ckpt)
    tmp.rmdir()


def nan_theta(run: Path) -> None:
    def edit(arrays: dict[str, np.ndarray]) -> None:
        arrays["theta"][3] = np.nan
    for step in (100, 200):
        rewrite_arrays(run, step, edit)


def other_layout(run: Path, keep_layout: bool) -> None:
    """Say n_hidden = 8 in the run's config.json and in both checkpoints' metadata, while
    their arrays are of n_hidden = 4."""
    config = json.loads((run / "config.json").read_text())
    config["model"]["n_hidden"] = 8
    (run / "config.json").write_text(json.dumps(config))
    for ckpt in (run / "checkpoint").iterdir():
        meta = _meta(ckpt)
        meta["config"]["model"]["n_hidden"] = 8
        if not keep_layout:
            meta.pop("layout")
        (ckpt / "meta.json").write_text(json.dumps(meta))


def copy_other_checkpoint(tmp: Path) -> None:
    run, other = train_run(tmp), train_run(tmp, "other", hidden=6)
    shutil.rmtree(run / "checkpoint")
    shutil.copytree(other / "checkpoint", run / "checkpoint")


def before_first_checkpoint(run: Path) -> None:
    """As if killed at step 80: one metrics line (step 50), no checkpoint yet."""
    shutil.rmtree(run / "checkpoint")
    for name in ("metrics.jsonl", "timing.jsonl"):
        lines = (run / name).read_text().splitlines(keepends=True)
        (run / name).write_text(lines[0])
    (run / "summary.json").unlink()


def link_metrics(run: Path) -> None:
    (run.parent / "precious.txt").write_text("keep me\n")
    (run / "metrics.jsonl").unlink()
    (run / "metrics.jsonl").symlink_to(run.parent / "precious.txt")


def precious_untouched(tmp: Path) -> None:
    assert (tmp / "precious.txt").read_text() == "keep me\n"


def dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    return int(proc.stdout)  # the process has exited and been reaped: its pid is free


def stale_lock(run: Path) -> None:
    (run / ".lock").write_text(f"{dead_pid()} {socket.gethostname()}\n")


def held_lock(tmp: Path) -> Callable[[], None]:
    """Train ``run``, then hold its lock from another live process (as a running ``gradflow
    train --resume`` does) until the returned cleanup ends it."""
    train_run(tmp)
    code = ("import sys, time\nfrom gradflow.runfiles.rundir import RunDir\n"
            "held = RunDir.reopen('run', 200)\nprint('held', flush=True)\ntime.sleep(120)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=tmp, stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"

    def cleanup() -> None:
        proc.kill()
        proc.wait()
    return cleanup


def checkpoint_intact(step: int) -> Callable[[Path], None]:
    def check(tmp: Path) -> None:
        from gradflow.runfiles.checkpoint import load_checkpoint

        arrays, meta = load_checkpoint(tmp / "run" / "checkpoint")
        assert meta["step"] == step and np.isfinite(arrays["theta"]).all()
    return check


def resumed_to(steps: int) -> Callable[[Path], None]:
    def check(tmp: Path) -> None:
        summary = json.loads((tmp / "run" / "summary.json").read_text())
        assert summary["status"] == "completed" and summary["steps"] == steps
    return check


def _nothing_written(tmp: Path) -> None:
    assert not (tmp / "runs").exists()  # refused before a run directory was made


def absolute_out(tmp: Path) -> None:
    """A config file naming a run directory by its absolute path (beside the working one)."""
    target = (tmp.parent / "elsewhere-absolute").resolve()
    (tmp / "c.toml").write_text(f'[run]\nout = "{target}"\n')


def ran_in(name: str) -> Callable[[Path], None]:
    """The run went where its config file said: ``name`` beside the working directory."""
    def check(tmp: Path) -> None:
        assert (tmp.parent / name / "summary.json").is_file()
    return check


# -- the cases --------------------------------------------------------------------------------
CONFIG = "config value"
FILE = "config file"
CLI = "command line"
DATA = "data file"
CKPT = "checkpoint"
RUNDIR = "run directory"
PATHS = "output path"
PLUGIN = "plugin"
NUM = "numerics"
TRAIN = ("train", "-q", "--steps", "200", *SMALL)
RESUME = ("train", "--resume", "run", "--steps", "300", "-q")

CASES: list[Case] = [
    # -- configuration values (--set and config files share the validation) -----------------
    Case("bptt-endless", CONFIG, "an estimator that updates only at sequence ends, on an "
         "endless stream", ("train", "--estimator", "bptt", "--task", "add"),
         "error: estimator 'bptt' returns a direction only when every stream ends a sequence at "
         "the same step, and task 'add' is one endless stream (no step starts a new sequence): "
         "it would never update; choose an online estimator (e.g. tbptt)", 2,
         check=lambda tmp: _nothing_written(tmp)),
    Case("steps-zero", CONFIG, "`run.steps` of 0", ("train", "--set", "run.steps=0"),
         "error: invalid config: run.steps: Input should be greater than or equal to 1", 2),
    Case("steps-text", CONFIG, "`run.steps` that is not a number",
         ("train", "--set", "run.steps=ten"),
         "error: invalid config: run.steps: Input should be a valid integer, unable to parse "
         "string as an integer", 2),
    Case("batch-negative", CONFIG, "a negative batch", ("train", "--set", "run.batch=-3"),
         "error: invalid config: run.batch: Input should be greater than or equal to 1", 2),
    Case("dtype", CONFIG, "an unsupported dtype", ("train", "--set", "run.dtype=float16"),
         "error: invalid config: run.dtype: Input should be 'float64' or 'float32'", 2),
    Case("backend", CONFIG, "an unknown backend", ("train", "--set", "run.backend=tpu"),
         "error: invalid config: run.backend: Input should be 'numpy', 'cupy' or "
         "'array_api_strict'", 2),
    Case("checkpoint-every", CONFIG, "checkpoints between metrics lines",
         ("train", "--set", "run.checkpoint_every=150"),
         "error: invalid config: run: checkpoint_every (150) must be a multiple of log_every "
         "(1000)", 2),
    Case("lr-negative", CONFIG, "a negative learning rate", ("train", "--set", "optimizer.lr=-1"),
         "error: invalid config: optimizer.lr: Input should be greater than 0", 2),
    Case("lr-nan", CONFIG, "a NaN learning rate", ("train", "--set", "optimizer.lr=nan"),
         "error: invalid config: optimizer.lr: Input should be a finite number", 2),
    Case("clip-inf", CONFIG, "an infinite clipping norm", ("train", "--set", "optimizer.clip=inf"),
         "error: invalid config: optimizer.clip: Input should be a finite number", 2),
    Case("optimizer", CONFIG, "an unknown optimizer", ("train", "--set", "optimizer.name=rmsprop"),
         "error: invalid config: optimizer.name: Input should be 'sgd' or 'adam'", 2),
    Case("beta2", CONFIG, "Adam's β₂ = 1", ("train", "--set", "optimizer.beta2=1"),
         "error: invalid config: optimizer.beta2: Input should be less than 1", 2),
    Case("momentum-list", CONFIG, "a list where a number belongs",
         ("train", "--set", "optimizer.momentum=[1, 2]"),
         "error: invalid config: optimizer.momentum: Input should be a valid number", 2),
    Case("unknown-key", CONFIG, "an unknown key", ("train", "--set", "run.colour=red"),
         "error: invalid config: run.colour: unknown key", 2),
    Case("unknown-section", CONFIG, "an unknown section", ("train", "--set", "colour.x=1"),
         "error: --set 'colour.x=1': unknown section 'colour'; the sections are run, model, "
         "estimator, task, optimizer", 2),
    Case("set-no-value", CONFIG, "`--set` without a value", ("train", "--set", "run.steps"),
         "error: --set 'run.steps': expected section.key=value, e.g. estimator.truncation=10",
         2),
    Case("model-option-typo", CONFIG, "a misspelt model option",
         ("train", "--set", "model.n_hiden=8"),
         "error: model 'rnn': invalid options (n_hiden: unknown option); its options are: "
         "…", 2),
    Case("model-option-zero", CONFIG, "a model of 0 hidden units",
         ("train", "--set", "model.n_hidden=0"),
         "error: model 'rnn': invalid options (n_hidden: Input should be greater than or equal "
         "to 1); its options are: …", 2),
    Case("model-size-mismatch", CONFIG, "a model input size that contradicts the task",
         ("train", "--set", "model.n_in=5"),
         "error: model.n_in = 5 does not match task 'add', whose n_in is 2; leave it unset", 2),
    Case("estimator-option", CONFIG, "a truncation of 0 for TBPTT",
         ("train", "--estimator", "tbptt", "--set", "estimator.truncation=0"),
         "error: estimator 'tbptt': invalid options (truncation: Input should be greater than "
         "or equal to 1); its options are: …", 2),
    Case("estimator-option-inf", CONFIG, "an infinite ε for UORO",
         ("train", "--estimator", "uoro", "--set", "estimator.eps=inf"),
         "error: estimator 'uoro': invalid options (eps: Input should be a finite number)", 2),
    Case("out-empty", CONFIG, "an empty run directory name", ("train", "--set", "run.out="),
         "error: invalid config: run.out: must be a non-empty path without NUL characters", 2),
    # -- configuration files ------------------------------------------------------------------
    Case("file-missing", FILE, "a config file that does not exist",
         ("train", "--config", "missing.toml"),
         "error: config file 'missing.toml' does not exist", 2),
    Case("file-not-toml", FILE, "a config file that is not TOML", ("train", "--config", "c.toml"),
         "error: config file 'c.toml' is not valid TOML: Expected ']' at the end of a table "
         "declaration (at line 1, column 5)", 2, setup=write("c.toml", "[run\nsteps = 1\n")),
    Case("file-directory", FILE, "a directory given as the config file",
         ("train", "--config", "conf"),
         "error: config file 'conf' is a directory", 2, setup=write("conf/x", "")),
    Case("file-binary", FILE, "a binary (non-UTF-8) config file", ("train", "--config", "c.toml"),
         "error: config file 'c.toml' is not valid TOML: …", 2,
         setup=write("c.toml", b"\xff\xfe\x00binary")),
    Case("file-unknown-section", FILE, "a misspelt section", ("train", "--config", "c.toml"),
         "error: unknown config section(s) 'modle'; the sections are run, model, estimator, "
         "task, optimizer", 2, setup=write("c.toml", "[modle]\nn_hidden = 8\n")),
    Case("file-section-not-table", FILE, "a section that is a number",
         ("train", "--config", "c.toml"),
         "error: config section 'model' must be a table, got 3", 2,
         setup=write("c.toml", "model = 3\n")),
    Case("file-unknown-key", FILE, "a misspelt key", ("train", "--config", "c.toml"),
         "error: invalid config: run.stepz: unknown key", 2,
         setup=write("c.toml", "[run]\nstepz = 10\n")),
    Case("file-json-list", FILE, "a JSON config that is a list", ("train", "--config", "c.json"),
         "error: config file 'c.json' must hold a JSON object", 2, setup=write("c.json", "[1]")),
    Case("file-deep", FILE, "a TOML file nested 5,000 levels deep",
         ("config", "show", "deep.toml"),
         "error: config file 'deep.toml' is nested too deeply", 2,
         setup=write("deep.toml", "a = " + "[" * 5000 + "]" * 5000 + "\n")),
    Case("file-huge-number", FILE, "`steps = 1e400` (infinite after parsing)",
         ("config", "show", "c.toml"),
         "error: invalid config: run.steps: Input should be a finite number", 2,
         setup=write("c.toml", "[run]\nsteps = 1e400\n")),
    # -- command-line arguments ----------------------------------------------------------------
    Case("command-typo", CLI, "a misspelt command", ("trian",),
         "error: No such command 'trian'. Did you mean 'train'? (see 'gradflow --help')", 2),
    Case("option-typo", CLI, "a misspelt option", ("train", "--stepz", "3"),
         "error: No such option: --stepz (Possible options: --seed, --set, --steps) (see "
         "'gradflow --help')", 2),
    Case("option-type", CLI, "a word where a number belongs", ("train", "--steps", "ten"),
         "error: Invalid value for '--steps': Input should be a valid integer, unable to parse "
         "string as an integer (see 'gradflow --help')", 2),
    Case("estimator-unknown", CLI, "an unknown estimator", ("train", "--estimator", "nope"),
         "error: unknown estimator 'nope'; available: …", 2),
    Case("model-unknown", CLI, "an unknown model", ("train", "--model", "transformer"),
         "error: unknown model 'transformer'; available: …", 2),
    Case("task-unknown", CLI, "an unknown task", ("train", "--task", "chess"),
         "error: unknown task 'chess'; available: …", 2),
    Case("resume-with-config", CLI, "`--resume` combined with a new configuration",
         ("train", "--resume", "run", "--estimator", "uoro"),
         "error: --resume continues a run with the configuration it was started with; it "
         "cannot be combined with --estimator (only --steps, to change its length)", 2),
    Case("resume-missing", CLI, "`--resume` of a directory that does not exist",
         ("train", "--resume", "nowhere"),
         "error: cannot resume 'nowhere': no such run directory", 2),
    Case("out-not-empty", CLI, "`--out` naming another run's directory",
         ("train", "--out", "run", "-q"),
         "error: run directory 'run' already exists and is not empty; pass --force to "
         "overwrite it, or choose another --out", 2, setup=with_run(),
         check=checkpoint_intact(200)),
    Case("out-is-file", CLI, "`--out` naming a file", ("train", "--out", "notes.txt"),
         "error: run directory 'notes.txt' exists and is not a directory", 2,
         setup=write("notes.txt", "mine")),
    Case("check-samples", CLI, "`gradflow check` with one sample",
         ("check", "uoro", "--samples", "1"), "error: --samples must be at least 2, got 1", 2),
    Case("check-loss", CLI, "`gradflow check` with an unknown loss",
         ("check", "uoro", "--loss", "hinge"), "error: --loss must be mse or ce, got 'hinge'", 2),
    Case("check-set", CLI, "`gradflow check --set` of an unknown target",
         ("check", "uoro", "--set", "foo.bar=1"),
         "error: --set 'foo.bar=1': expected TARGET.OPTION=VALUE with TARGET one of model, "
         "estimator, reference (e.g. model.n_hidden=8)", 2),
    Case("plot-format", CLI, "`gradflow plot` to an unsupported format",
         ("plot", "run", "--out", "curves.jpg"),
         "error: cannot write 'curves.jpg': the output must end in .png, .svg, .pdf", 2),
    Case("plot-not-a-run", CLI, "`gradflow plot` of a directory that is not a run",
         ("plot", "somewhere", "--out", "c.png"),
         "error: 'somewhere' is not a gradflow run directory (config.json is missing)", 2,
         setup=write("somewhere/x.txt", "")),
    Case("plot-metric", CLI, "`gradflow plot` of a metric no run has",
         ("plot", "run", "--out", "c.png", "--metric", "accuracy"),
         "error: no run has values of 'accuracy'; available: …", 2, setup=with_run(),
         needs=("matplotlib",)),
    Case("sweep-no-table", CLI, "a sweep grid without a `[sweep]` table",
         ("sweep", "grid.toml", "--dry-run"),
         "error: a sweep grid needs a [sweep] table mapping dotted option names to lists, e.g. "
         "\"estimator.name\" = [\"uoro\", \"tbptt\"], or [[variants]] tables", 2,
         setup=write("grid.toml", "[run]\n")),
    Case("sweep-out", CLI, "a sweep grid varying `run.out`", ("sweep", "grid.toml", "--dry-run"),
         "error: [sweep] cannot vary run.out: the sweep names each run's directory (use --out "
         "for the sweep's directory)", 2,
         setup=write("grid.toml", '[sweep]\n"run.out" = ["/tmp/a", "/tmp/b"]\n')),
    Case("sweep-workers-scheduler", CLI, "`--workers` together with a Dask `--scheduler`",
         ("sweep", "grid.toml", "--workers", "2", "--scheduler", "tcp://localhost:1"),
         "error: Invalid value for --workers: --workers sizes the local pool; a Dask cluster "
         "has its own workers (see 'gradflow --help')", 2),
    Case("bench-sizes", CLI, "`gradflow bench` with sizes that are not numbers",
         ("bench", "--sizes", "a,b"),
         "error: --sizes: 'a' is not a whole number of hidden units", 2),
    Case("show-format", CLI, "`config show` in an unknown format",
         ("config", "show", "--format", "yaml"),
         "error: Invalid value for '--format' / '-f': 'yaml' is not one of 'toml', 'json'. (see "
         "'gradflow --help')", 2),
    Case("schema-out", CLI, "`config schema --out` into a missing directory",
         ("config", "schema", "--out", "nodir/schema.json"),
         "error: cannot write 'nodir/schema.json': No such file or directory", 2),
    # -- data files ----------------------------------------------------------------------------
    Case("text-missing", DATA, "a text file that does not exist",
         ("train", "--task", "text", "--set", "task.path=missing.txt"),
         "error: task 'text': 'missing.txt': no such file", 2),
    Case("text-empty", DATA, "an empty text file",
         ("train", "--task", "text", "--set", "task.path=empty.txt"),
         "error: task 'text': 'empty.txt': the file is empty", 2, setup=write("empty.txt", "")),
    Case("text-latin1", DATA, "a Latin-1 (not UTF-8) text file",
         ("train", "--task", "text", "--set", "task.path=latin1.txt"),
         "error: task 'text': 'latin1.txt' is not UTF-8 text (byte 0xe9 at offset 3); convert "
         "it first, e.g. iconv -f latin1 -t utf-8", 2,
         setup=write("latin1.txt", "caf\xe9".encode("latin-1"))),
    Case("text-directory", DATA, "a directory given as the text file",
         ("train", "--task", "text", "--set", "task.path=texts"),
         "error: task 'text': 'texts' is a directory, not a text file", 2,
         setup=write("texts/a.txt", "abc")),
    # -- checkpoints -----------------------------------------------------------------------------
    Case("ckpt-truncated", CKPT, "the newest checkpoint's arrays truncated (a full disk)", RESUME,
         f"warning: skipped an unusable checkpoint: checkpoint '{CKPT_200}': arrays.npz is "
         "damaged (SHA-256 differs from the one in meta.json)", 0,
         setup=with_run(truncate(200)), check=resumed_to(300)),
    Case("ckpt-bitflip", CKPT, "one bit flipped in the newest checkpoint's arrays", RESUME,
         f"warning: skipped an unusable checkpoint: checkpoint '{CKPT_200}': arrays.npz is "
         "damaged (SHA-256 differs from the one in meta.json)", 0,
         setup=with_run(flip_byte), check=resumed_to(300)),
    Case("ckpt-meta-garbage", CKPT, "the newest checkpoint's meta.json not JSON", RESUME,
         f"warning: skipped an unusable checkpoint: checkpoint '{CKPT_200}': unreadable "
         "meta.json (Expecting value: line 1 column 1 (char 0))", 0,
         setup=with_run(lambda r: (r / "checkpoint/step-000000000200/meta.json").write_text(
             "garbage")), check=resumed_to(300)),
    Case("ckpt-step-mismatch", CKPT, "a checkpoint whose meta.json names another step", RESUME,
         f"warning: skipped an unusable checkpoint: checkpoint '{CKPT_200}': meta.json says "
         "step 999, its directory step 200", 0,
         setup=with_run(lambda r: _set_meta(r / "checkpoint/step-000000000200", step=999)),
         check=resumed_to(300)),
    Case("ckpt-all-damaged", CKPT, "every checkpoint damaged", RESUME,
         f"error: checkpoint '{CKPT_200}': arrays.npz is damaged (SHA-256 differs from the one "
         "in meta.json) (and 1 older one(s) unusable too)", 2,
         setup=with_run(truncate(100), truncate(200))),
    Case("ckpt-pickle-object", CKPT, "an object array whose pickle would create a file (SHA-256 "
         "made to match)", ("train", "--resume", "run", "--steps", "200"),
         f"error: checkpoint '{CKPT_100}': arrays.npz: array 'theta' has dtype '|O' (pickled "
         "Python objects); a gradflow checkpoint holds only numbers and booleans: refusing it "
         "(nothing was unpickled)", 2, setup=with_run(hostile_npz, steps=100), check=no_pwned),
    Case("ckpt-raw-pickle", CKPT, "a pickle stream in place of arrays.npz (SHA-256 made to "
         "match)", ("train", "--resume", "run", "--steps", "200"),
         f"error: checkpoint '{CKPT_100}': arrays.npz is not an .npz archive", 2,
         setup=with_run(pickle_npz, steps=100), check=no_pwned),
    Case("ckpt-compressed", CKPT, "a compressed archive (a possible zip bomb)",
         ("train", "--resume", "run", "--steps", "200"),
         f"error: checkpoint '{CKPT_100}': arrays.npz: member 'theta.npy' is compressed, which "
         "gradflow never writes; refusing it", 2, setup=with_run(compressed_npz, steps=100)),
    Case("ckpt-huge-shape", CKPT, "an array header claiming 10¹² numbers in a 150-byte file",
         ("train", "--resume", "run", "--steps", "200"),
         f"error: checkpoint '{CKPT_100}': arrays.npz: array 'theta' claims shape "
         "(1000000000000,), more data than the file holds", 2,
         setup=with_run(huge_shape_npz, steps=100)),
    Case("ckpt-path-traversal", CKPT, "meta.json pointing the array file outside the "
         "checkpoint", ("train", "--resume", "run", "--steps", "200"),
         f"error: checkpoint '{CKPT_100}': meta.json names the array file '../../secret.npz'; "
         "a gradflow checkpoint's is 'arrays.npz'", 2,
         setup=with_run(lambda r: _set_meta(r / "checkpoint/step-000000000100",
                                            arrays="../../secret.npz"), steps=100)),
    Case("ckpt-version", CKPT, "a checkpoint of a future format version",
         ("train", "--resume", "run", "--steps", "200"),
         f"error: checkpoint '{CKPT_100}' has format version 99; this gradflow reads version 2",
         2, setup=with_run(lambda r: _set_meta(r / "checkpoint/step-000000000100", version=99),
                           steps=100)),
    Case("ckpt-deep-meta", CKPT, "a meta.json nested 100,000 levels deep",
         ("train", "--resume", "run", "--steps", "200"),
         f"error: checkpoint '{CKPT_100}': unreadable meta.json (nested too deeply)", 2,
         setup=with_run(lambda r: (r / "checkpoint/step-000000000100/meta.json").write_text(
             "[" * 100_000 + "]" * 100_000), steps=100)),
    Case("ckpt-nan", CKPT, "a checkpoint whose θ holds NaN (SHA-256 valid)", RESUME,
         f"error: checkpoint '{CKPT_200}': theta holds NaN or infinite values; gradflow never "
         "writes such a checkpoint, so it was altered: refusing it", 2,
         setup=with_run(nan_theta)),
    Case("ckpt-other-run", CKPT, "another run's checkpoints copied into the run", RESUME,
         f"error: checkpoint '{CKPT_200}' belongs to another run: its configuration differs "
         "from this run directory's config.json in model.n_hidden 6 vs 4; refusing to resume "
         "from it", 2, setup=copy_other_checkpoint),
    Case("ckpt-other-layout", CKPT, "a checkpoint whose θ is of another layout than its "
         "configuration says", RESUME,
         f"error: checkpoint '{CKPT_200}' is of model 'rnn' with θ = W_hh (4, 4), W_xh (4, 2), "
         "b_h (4,), W_hy (2, 4), b_y (2,); the configured model 'rnn' has θ = W_hh (8, 8), "
         "W_xh (8, 2), b_h (8,), W_hy (2, 8), b_y (2,): refusing to load another model's "
         "parameters", 2, setup=with_run(lambda r: other_layout(r, keep_layout=True))),
    Case("ckpt-other-shape", CKPT, "the same, without the layout in meta.json (shapes only)",
         RESUME,
         f"error: checkpoint '{CKPT_200}' does not fit the configured run: h is float64 (1, 4), "
         "the run needs float64 (1, 8) (a checkpoint of another model or layout; the model is "
         "'rnn' with θ = W_hh (8, 8), W_xh (8, 2), b_h (8,), W_hy (2, 8), b_y (2,))", 2,
         setup=with_run(lambda r: other_layout(r, keep_layout=False))),
    Case("ckpt-deleted", CKPT, "a run whose checkpoints were deleted", RESUME,
         "error: no checkpoint in 'run/checkpoint', although the run logged step 200 (its "
         "first checkpoint was due at step 100): the checkpoints were deleted; nothing to "
         "resume from", 2, setup=with_run(lambda r: shutil.rmtree(r / "checkpoint"))),
    Case("ckpt-none-yet", CKPT, "a run killed before its first checkpoint",
         ("train", "--resume", "run", "-q"),
         "note: no checkpoint had been written yet (the first is due at step 100): starting "
         "again from step 0 with config.json", 0, setup=with_run(before_first_checkpoint),
         check=resumed_to(200)),
    Case("resume-finished", CKPT, "`--resume` of a finished run", ("train", "--resume", "run"),
         "error: run 'run' has already reached step 200 of 200; pass --steps N to train it "
         "further", 2, setup=with_run()),
    # -- run directories -----------------------------------------------------------------------
    Case("rundir-locked", RUNDIR, "a run directory being written by another live process",
         RESUME,
         "error: run directory 'run' is being written by another gradflow process (pid … on …)",
         2, setup=held_lock),
    Case("rundir-stale-lock", RUNDIR, "the lock left by a process that was killed", RESUME,
         "warning: took over the stale lock of run directory 'run': process … on …, which held "
         "it, is no longer running (killed or crashed)", 0, setup=with_run(stale_lock),
         check=resumed_to(300)),
    Case("rundir-symlink", RUNDIR, "a run directory whose metrics.jsonl links to another file",
         RESUME,
         "error: run directory 'run': metrics.jsonl is a symbolic link; gradflow does not "
         "write through links", 2, setup=with_run(link_metrics), check=precious_untouched),
    # -- paths written by a configuration ------------------------------------------------------
    Case("out-absolute", PATHS, "a config file whose `run.out` is an absolute path (accepted)",
         ("train", "--config", "c.toml", *TRAIN[1:]), "run directory: /…/elsewhere-absolute", 0,
         setup=absolute_out, check=ran_in("elsewhere-absolute")),
    Case("out-dotdot", PATHS, "a config file whose `run.out` climbs out with `..` (accepted)",
         ("train", "--config", "c.toml", *TRAIN[1:]), "run directory: ../elsewhere", 0,
         setup=write("c.toml", '[run]\nout = "../elsewhere"\n'), check=ran_in("elsewhere")),
    Case("out-asked", PATHS, "the same file, the directory given with `--out` (asked)",
         ("train", "--config", "c.toml", "--out", "../elsewhere-asked", *TRAIN[1:]),
         "run directory: ../elsewhere-asked", 0,
         setup=write("c.toml", '[run]\nout = "../elsewhere"\n')),
    # -- numerics --------------------------------------------------------------------------------
    Case("explode", NUM, "a learning rate that makes the loss explode while it stays finite",
         ("train", "--optimizer", "sgd", "--lr", "1e12", "--set", "optimizer.schedule=constant",
          "--out", "run", *TRAIN[1:]),
         "error: training diverged at step 50: the loss exploded: … nats, the mean of the last "
         "50 steps, exceeds 100 × the reference loss 0.6931 nats of task 'add' "
         "(run.divergence_factor) (checked at every metrics line, every 50 steps; this was the "
         "first check), with estimator 'rtrl' (plugin 'builtin', distribution gradflow 0.1.0); "
         "lower optimizer.lr or set optimizer.clip; no checkpoint was written", 3),
    Case("diverge", NUM, "a learning rate that makes the loss overflow",
         ("train", "--task", "influence", "--model", "influence", "--optimizer", "sgd",
          "--lr", "1", "--set", "optimizer.schedule=constant", "--out", "run", "-q",
          "--steps", "400", "--set", "run.log_every=50", "--set", "run.checkpoint_every=100"),
         "error: training diverged at step 200: the loss is not finite (checked at every "
         "metrics line, every 50 steps; all finite at step 150), with estimator 'rtrl' (plugin "
         "'builtin', distribution gradflow 0.1.0); lower optimizer.lr or set optimizer.clip; "
         "the last good checkpoint (step 100) is in run/checkpoint", 3,
         check=checkpoint_intact(100)),
    # -- plugins (a subprocess with tests/plugins/* installed) -------------------------------
    Case("plugin-import", PLUGIN, "a plugin that fails to import", ("plugins",),
         "failed: plugin 'broken' (distribution gradflow-broken-plugin): failed to import: "
         "ImportError: gradflow_broken needs a library that is not installed", 0, plugins=True),
    Case("plugin-exit", PLUGIN, "a plugin that calls sys.exit while imported", ("plugins",),
         "failed: plugin 'exiting' (distribution gradflow-hostile-plugin): failed to import: "
         "SystemExit: the hostile plugin ends the process", 0, plugins=True),
    Case("plugin-duplicate", PLUGIN, "a plugin registering a name already taken", ("plugins",),
         "failed: plugin 'duplicate' (distribution gradflow-hostile-plugin): estimator 'rtrl' "
         "is already registered by plugin 'builtin'; the later registration is ignored", 0,
         plugins=True),
    Case("plugin-hook-raises", PLUGIN, "a registration hook that raises", ("plugins",),
         "failed: plugin 'raising' (distribution gradflow-hostile-plugin): hook "
         "gradflow_register_models raised: RuntimeError: the hostile model registry is on fire",
         0, plugins=True),
    Case("plugin-options-type", PLUGIN, "options that are not a pydantic model", ("plugins",),
         "failed: plugin 'badoptions' (distribution gradflow-hostile-plugin): estimator "
         "'bad-options': Options must be a pydantic model", 0, plugins=True),
    Case("plugin-options-lax", PLUGIN, "options without extra=\"forbid\"", ("plugins",),
         "failed: plugin 'laxoptions' (distribution gradflow-hostile-plugin): estimator "
         "'lax-options': Options must forbid unknown keys (extra='forbid')", 0, plugins=True),
    Case("plugin-name", PLUGIN, "a plugin name that would climb out of `runs/`", ("plugins",),
         "failed: plugin 'badname' (distribution gradflow-hostile-plugin): estimator name "
         "'x/../../escape' is not allowed: use letters, digits, '.', '_' and '-', starting "
         "with a letter or digit", 0, plugins=True),
    Case("plugin-rejected-name", PLUGIN, "training with an estimator that was refused",
         ("train", "--estimator", "lax-options"),
         "error: unknown estimator 'lax-options'; available: …, hostile-quiet, … (plugin "
         "'laxoptions' (distribution gradflow-hostile-plugin): estimator 'lax-options': "
         "Options must forbid unknown keys (extra='forbid'))", 2, plugins=True),
    Case("plugin-others-work", PLUGIN, "a valid estimator of the hostile distribution, next to "
         "the broken ones", ("train", "--estimator", "hostile-quiet", "--out", "run", *TRAIN[1:]),
         "run directory: run", 0, plugins=True),
    Case("plugin-builtin-wins", PLUGIN, "`rtrl` while a plugin also registers `rtrl`",
         ("train", "--estimator", "rtrl", "--out", "run", *TRAIN[1:]),
         "run directory: run", 0, plugins=True),
    Case("plugin-capability", PLUGIN, "an estimator the model cannot serve",
         ("train", "--model", "vjp-only", "--estimator", "rtrl"),
         "error: estimator 'rtrl' needs jvp_state, param_jacobian, which model 'vjp-only' does "
         "not provide (it provides forward, param_jacobian_units_accumulate, readout, vjp)", 2,
         plugins=True),
    Case("plugin-long-direction", PLUGIN, "an estimator returning P + 1 numbers",
         ("train", "--estimator", "long-direction", "--out", "run", *TRAIN[1:]),
         "error: estimator 'long-direction' (plugin 'faulty', distribution "
         "gradflow-faulty-plugin 0.0.7) returned a direction of shape (39,); the model has "
         "P = 38 parameters, so it must be (38,)", 2, plugins=True),
    Case("plugin-dtype", PLUGIN, "an estimator returning float32 in a float64 run",
         ("train", "--estimator", "single-direction", "--out", "run", *TRAIN[1:]),
         "error: estimator 'single-direction' (plugin 'faulty', distribution "
         "gradflow-faulty-plugin 0.0.7) returned a direction of dtype float32; the run "
         "computes in float64", 2, plugins=True),
    Case("plugin-wide-state", PLUGIN, "a model whose forward returns one state too many",
         ("train", "--model", "wide-state", "--out", "run", *TRAIN[1:]),
         "error: model 'wide-state' (plugin 'faulty', distribution gradflow-faulty-plugin "
         "0.0.7) returned a state h from forward of shape (1, 5); the run has B = 1 streams "
         "and the model n_state = 4, so it must be (1, 4)", 2, plugins=True),
    Case("plugin-raises", PLUGIN, "an estimator raising inside a step",
         ("train", "--estimator", "raising-step", "--out", "run", *TRAIN[1:]),
         "error: estimator 'raising-step' (plugin 'faulty', distribution gradflow-faulty-plugin "
         "0.0.7) raised ZeroDivisionError: division by zero at step 3; no checkpoint was "
         "written", 2, plugins=True),
    Case("plugin-exits", PLUGIN, "an estimator calling sys.exit inside a step",
         ("train", "--estimator", "exiting-step", "--out", "run", *TRAIN[1:]),
         "error: estimator 'exiting-step' (plugin 'faulty', distribution gradflow-faulty-plugin "
         "0.0.7) raised SystemExit: 0 at step 2; no checkpoint was written", 2, plugins=True),
    Case("plugin-check", PLUGIN, "`gradflow check` of an estimator returning P + 1 numbers",
         ("check", "long-direction", "--samples", "4", "--steps", "3"),
         "error: estimator 'long-direction' (plugin 'faulty', distribution "
         "gradflow-faulty-plugin 0.0.7) returned a direction of shape (1122,); the model has "
         "P = 1121 parameters, so it must be (1121,)", 2, plugins=True),
    Case("plugin-nan", PLUGIN, "an estimator returning NaN from step 5 on",
         ("train", "--estimator", "nan-direction", "--out", "run", *TRAIN[1:]),
         "error: training diverged at step 50: the loss is not finite (checked at every "
         "metrics line, every 50 steps; this was the first check), with estimator "
         "'nan-direction' (plugin 'faulty', distribution gradflow-faulty-plugin 0.0.7); lower "
         "optimizer.lr or set optimizer.clip; no checkpoint was written", 3, plugins=True),
    Case("plugin-disabled", PLUGIN, "`GRADFLOW_DISABLE_PLUGINS` naming the faulty plugin",
         ("train", "--estimator", "long-direction"),
         "error: unknown estimator 'long-direction'; available: …, hostile-quiet, … (7 "
         "plugin problem(s) reported: see 'gradflow plugins')", 2, plugins=True,
         env={"GRADFLOW_DISABLE_PLUGINS": "faulty"}),
    Case("plugin-disabled-dist", PLUGIN, "`GRADFLOW_DISABLE_PLUGINS` naming a distribution",
         ("plugins",),
         "disabled by GRADFLOW_DISABLE_PLUGINS: badname, badoptions, duplicate, exiting, "
         "laxoptions, raising", 0, plugins=True,
         env={"GRADFLOW_DISABLE_PLUGINS": "gradflow-hostile-plugin"}),
]


# -- the document --------------------------------------------------------------------------------
INTRO = """\
# Reliability: bad input, crashes, damaged files, hostile plugins

<!-- generated by `python -m tests.reliability_cases` from tests/reliability_cases.py: edit
the cases there, not this table (tests/test_reliability.py fails when the two disagree) -->

Online training runs for days; gradflow must survive what real life does to a run, and a file
or a plugin from elsewhere must never take the machine. This page states the rules and lists
every bad input gradflow was tried on — each row is a test (`tests/test_reliability.py` runs the
real `gradflow` command and checks the exact line and exit status).

## The rules

**One line, an exit status.** Every error is one line on standard error, `error: ...`, naming
the problem; no traceback unless `--debug` is given (`gradflow --debug ...`). Exit statuses:

| status | meaning |
|---|---|
| 0 | done (warnings, if any, are `warning: ...` lines) |
| 1 | a bug in gradflow (`error: internal error: ...`, with the hint to rerun with `--debug`) |
| 2 | bad usage or input: a value, a file, a checkpoint, a plugin |
| 3 | the numbers went non-finite: the run diverged |
| 128 + N | stopped by signal N (130: Ctrl-C; 143: SIGTERM), after a checkpoint |

**Crashes lose nothing but the steps since the last checkpoint.** Checkpoints are written to a
temporary directory, fsynced and committed by a rename; `meta.json` holds the SHA-256 of
`arrays.npz`, checked on load, so a truncated or altered file is detected and the checkpoint
before it (the last two are kept) is used with a `warning:` line. `metrics.jsonl` and
`timing.jsonl` are appended a line at a time and cut back to the checkpoint on resume; JSON files
are replaced atomically. `gradflow train --resume DIR` after a SIGKILL at any moment — during a
step, a metrics line, a checkpoint's write, its commit or the cleanup of an older one, a JSON
file's replacement — continues bit for bit: the final θ and `metrics.jsonl` equal those of a run
that was never stopped (`tests/test_crash_safety.py`: 3 kills in the default test run, 20 under
`pytest -m slow`, each compared bitwise). A run killed before its first checkpoint starts again
from step 0 on `--resume` (it is deterministic); one killed after its final checkpoint but before
its summary writes the summary.

**Files from elsewhere are data, never code.** Checkpoint arrays are read with
`allow_pickle=False` after every member of the archive has been checked: stored uncompressed (as
gradflow writes them: no zip bomb), a plain numeric or boolean dtype (no object arrays, whose
payload is a pickle), data no larger than the member. `meta.json` cannot name another array
file, and its step must match its directory. A checkpoint of another run (its configuration
differs from the run directory's `config.json`), of another model or layout (θ's recorded layout,
and the shapes of θ, h, the optimizer's and the loop's arrays), or holding NaN is refused with
a message naming the mismatch. Deeply nested JSON or TOML is refused, not a crash.

**Paths.** The only path of a training config that gradflow writes to is `run.out`, the run
directory; a config file, `--set run.out=DIR` and `--out DIR` may all name any directory,
relative or absolute, as other trainers allow — it is the user's own file. What protects the
user's files is the run directory's rule, whoever names it: an existing non-empty directory is
refused unless `--force`, and then only gradflow's own files in it are replaced. The other
outputs are command-line options only (`gradflow plot --out`, `gradflow sweep --out`, `gradflow
config schema --out`); a sweep's runs are named by the sweep from sanitised values inside its
directory, and `[sweep]` cannot vary `run.out`. gradflow's own files in a run directory it
continues may not be symbolic links, and plugin names are restricted to letters, digits, `.`,
`_` and `-` (they become part of default run directory names).

**One writer per run directory.** A run directory being written is locked (`flock` on `.lock`,
which holds the writer's pid and host): a second `gradflow train` into it (`--resume`, or
`--force`) is refused, naming the holder. The OS releases the lock when the writer dies, even by
SIGKILL; the next writer recognises the dead pid and takes over with a warning. Where `flock` is
not available (some network filesystems), the pid in the file is the lock: a live holder on this
host refuses, a dead one is taken over (best effort: two writers starting in the same instant
could both pass).

**Numerics.** The loss stays on the device between metrics lines; at every metrics line (every
`run.log_every` steps) the mean loss, the mean norm of the gradient estimates and θ are checked,
and before every checkpoint the whole state (θ, h, the optimizer's moments, the loop's sums and
the estimator's arrays). A NaN or ±inf stops the run with exit status 3 and a message naming the
step, what went non-finite (which parameters of θ), the granularity of the check (the step of the
last check that passed), the estimator (plugin and distribution) and the last good checkpoint —
which is never overwritten by a non-finite state: no non-finite checkpoint is ever written. The
run's `summary.json` says `diverged`. The rank-one estimators' balancing factors keep ε in both
norms (ρ = √((|w̃| + ε)/(|ṽ| + ε)): finite and positive when every unit is saturated or the state
is zero), and the Kalman-like filter inverts J_θ + λ with λ > 0 and J_θ capped at √(largest
float), so (J_θ + λ)⁻¹ stays positive and finite even where ĝ² overflows (saturated units with
huge loss gradients feed back through the metric). `tests/test_numerics.py` runs uoro,
nobacktrack and kalman-nobacktrack on rnn, gru and lstm with θ × 1000 (saturated units), with
all-zero inputs and with a zero state, in float64 and float32: no NaN.

**Plugins.** A third-party plugin that fails to import (even with `sys.exit`), whose hook raises,
that registers a name already taken, a name that is not allowed, options that are not a pydantic
model or that accept unknown keys, is reported by plugin and distribution (`gradflow plugins`);
everything else keeps working. One that raises during a run — while being created, in a step, in
the evaluation, even `sys.exit` — or returns arrays of the wrong shape or dtype (checked on the
first step of every process) stops the run with a message naming it, its plugin and its
distribution (exit 2); `GRADFLOW_DISABLE_PLUGINS=name,...` (entry-point or distribution names)
blocks plugins before they are imported. A plugin is code you chose to install: it runs with your
permissions, and nothing in-process can sandbox it — disabling it is the defence.

**Property-based tests.** `tests/test_properties.py` feeds hypothesis-generated configurations
(nested dicts of TOML values into the config model, then built as a run would build them, and
`--set` strings) and argument lists (`gradflow train`, `config show`, `config schema`, `check`,
`plot`, `sweep`, `bench`, `plugins`) to gradflow, and resumes runs whose checkpoint metadata was
altered at random: whatever the input, the answer is a result or one `error:` line with status
2, never a traceback or an internal error — 600 configuration and command-line examples (and 40
altered checkpoints) in the default test run, 1,800 (and 300) under `pytest -m slow`.

## Every bad input tried

"""


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render_markdown() -> str:
    """docs/reliability.md, from :data:`CASES`."""
    lines = [INTRO.rstrip("\n"), "",
             f"{len(CASES)} cases. `…` in a message stands for text that varies.", "",
             "| # | area | bad input | command | answer | exit |",
             "|---|---|---|---|---|---|"]
    for i, case in enumerate(CASES, 1):
        env = "".join(f"{k}={v} " for k, v in case.env.items())
        command = f"`{env}gradflow {' '.join(_quote(a) for a in case.argv)}`"
        lines.append(f"| {i} | {case.area} | {_cell(case.what)} | {_cell(command)} | "
                     f"`{_cell(case.message)}` | {case.code} |")
    return "\n".join(lines) + "\n"


def _quote(arg: str) -> str:
    return arg if arg and all(c.isalnum() or c in "-_.=/,:+@" for c in arg) else repr(arg)


if __name__ == "__main__":
    DOC.write_text(render_markdown(), encoding="utf-8")
    print(f"wrote {DOC} ({len(CASES)} cases)")
