"""Property-based tests: whatever configuration or argument list gradflow is given, it answers
with a result or one clear ``error:`` line (exit status 2) — never a traceback, never an
internal error.

* the config model: random nested dicts of TOML/JSON values (real section and key names mixed
  with random ones) into :func:`~gradflow.runfiles.config.config_from_dict`, then, when valid,
  resolved as a run would build them (:func:`~gradflow.training.trainer.resolve_config`: every
  plugin's options
  validated, the plugins created); and random ``--set`` strings into
  :func:`~gradflow.runfiles.config.build_config`;
* the command line: random argument lists for ``gradflow train``, ``config show``,
  ``config schema``, ``check``, ``plot``, ``sweep``, ``bench`` and ``plugins`` through the real
  entry point (:func:`gradflow_cli.app.main`), in-process. Work that would start (training, a
  check's sampling, a benchmark, a sweep) is replaced by a stop once everything has been
  validated and built, so that a valid argument list costs milliseconds.

* checkpoint metadata from elsewhere: a small run's ``meta.json`` files (and at times its
  ``config.json``) altered at random, then ``gradflow train --resume``.

The default run draws a fixed set of examples (derandomised): 200 for each of the three
config/CLI properties (600 in all) and 40 altered checkpoints; ``pytest -m slow`` draws fresh
ones: 600 for each (1,800 in all) and 300 altered checkpoints.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from gradflow_cli.app import main
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import gradflow
from gradflow import GradflowError
from gradflow.runfiles.config import SECTIONS, TrainConfig, build_config, config_from_dict
from gradflow.training.components import resolve_config

DEFAULT_EXAMPLES, SLOW_EXAMPLES = 200, 600


def _settings(examples: int, derandomize: bool) -> settings:
    return settings(max_examples=examples, deadline=None, derandomize=derandomize,
                    database=None, suppress_health_check=[HealthCheck.too_slow,
                                                         HealthCheck.function_scoped_fixture])


# -- vocabulary: real names and plausible values, so that most examples get deep into the
# validation (a real section, a real key, a value of about the right type), with junk mixed in
def _section_keys() -> dict[str, list[str]]:
    keys = {s: sorted(TrainConfig.model_fields[s].annotation.model_fields)
            for s in ("run", "optimizer")}
    for kind in ("model", "estimator", "task"):
        names = {"name"}
        for info in gradflow.get_registry().all():
            if info.kind == kind:
                names |= set(info.options.model_fields)
        keys[kind] = sorted(names)
    return keys


SECTION_KEYS = _section_keys()
NAMES = {kind: gradflow.get_registry().names(kind) for kind in ("model", "estimator", "task")}
ALL_NAMES = sorted({n for names in NAMES.values() for n in names})
WORDS = ["sgd", "adam", "numpy", "cupy", "array_api_strict", "float32", "float64", "constant",
         "inv-sqrt", "smooth-inv-sqrt", "uniform", "orthogonal", "sampled", "soft", ""]

junk = (st.none() | st.integers() | st.floats(allow_nan=True, allow_infinity=True)
        | st.text(max_size=12) | st.lists(st.integers(), max_size=3)
        | st.dictionaries(st.text(max_size=4), st.integers(), max_size=2))
plausible = (st.integers(min_value=-2, max_value=12) | st.sampled_from([50, 100, 1000])
             | st.sampled_from([0.0, 0.5, 1.0, 1e-3, 0.9, 1e300]) | st.booleans()
             | st.sampled_from(ALL_NAMES + WORDS))
values = st.one_of(plausible, plausible, plausible, junk)  # mostly plausible


@st.composite
def sections(draw: Any, name: str) -> dict[str, Any]:
    known = st.sampled_from(SECTION_KEYS[name])
    key = known | st.text(max_size=6) if draw(st.integers(0, 3)) == 0 else known
    table = draw(st.dictionaries(key, values, max_size=4))
    if name in NAMES and draw(st.integers(0, 3)):  # usually a real plugin name
        table["name"] = draw(st.sampled_from(NAMES[name]))
    return table


@st.composite
def configs(draw: Any) -> dict[str, Any]:
    chosen = draw(st.lists(st.sampled_from(SECTIONS), unique=True, max_size=5))
    data: dict[str, Any] = {name: draw(sections(name)) for name in chosen}
    if draw(st.integers(0, 9)) == 0:  # now and then a section that is not a table, or junk
        data[draw(st.sampled_from(SECTIONS) | st.text(max_size=5))] = draw(junk)
    return data


LITERALS = ["8", "3", "1", "0", "-1", "2", "1e400", "nan", "inf", "[1, 2]", "true", '"x"',
            "{a = 1}", "", "1e-3", "0.5", "99999999999999999999", "[[[[]]]]", *ALL_NAMES,
            "sgd", "constant", "float32", "orthogonal"]


@st.composite
def settings_strings(draw: Any) -> str:
    if draw(st.integers(0, 9)) == 0:
        return draw(st.text(max_size=20))
    section = draw(st.sampled_from(SECTIONS))
    key = draw(st.sampled_from(SECTION_KEYS[section]) | st.text(max_size=5))
    value = draw(st.sampled_from(LITERALS) | st.text(max_size=8))
    return f"{section}.{key}={value}"


def _resolve(config: TrainConfig) -> None:
    try:
        resolve_config(config)
    except GradflowError as exc:
        event(f"valid config, refused when built: {type(exc).__name__}")
    else:
        event("valid config, built")


def config_property(data: dict[str, Any]) -> None:
    try:
        config = config_from_dict(data)
    except GradflowError as exc:
        event(f"refused: {type(exc).__name__}")
        return
    _resolve(config)


def sets_property(items: list[str]) -> None:
    try:
        config = build_config(sets=items)
    except GradflowError as exc:
        event(f"refused: {type(exc).__name__}")
        return
    _resolve(config)


# -- the command line ------------------------------------------------------------------------------
class Stop(BaseException):
    """Raised in place of the real work once an argument list has been validated."""


ints = st.sampled_from(["1", "2", "3", "10", "20", "0", "-1", "ten", "1e3", "",
                        "100000000000000000000", "-99999999999999999999"])
small_steps = st.sampled_from(["1", "5", "20", "0", "-3", "x"])
floats_text = st.sampled_from(["0.1", "1e-3", "1", "0", "-1", "nan", "inf", "x"])
paths = st.sampled_from(["run", "c.toml", "grid.toml", "missing", "out.png", "out.svg",
                         "out.jpg", "new-run", "../up", "/dev/null", "", "\x00", "run/x"])
COMMAND_OPTIONS: dict[str, dict[str, Any]] = {
    "train": {"--steps": small_steps, "--batch": ints, "--seed": ints, "--lr": floats_text,
              "--estimator": st.sampled_from(NAMES["estimator"] + ["nope"]),
              "--model": st.sampled_from(NAMES["model"] + ["nope"]),
              "--task": st.sampled_from(NAMES["task"] + ["nope"]),
              "--set": settings_strings(), "--out": paths, "--config": paths,
              "--resume": paths, "--force": None, "-q": None,
              "--backend": st.sampled_from(["numpy", "array_api_strict", "cupy", "tpu"]),
              "--dtype": st.sampled_from(["float64", "float32", "int8"]),
              "--optimizer": st.sampled_from(["sgd", "adam", "lbfgs"]),
              "--checkpoint-every": ints},
    "config show": {"": paths, "--set": settings_strings(),
                    "--format": st.sampled_from(["toml", "json", "yaml"]),
                    "--comments": None, "--no-comments": None},
    "config schema": {"--out": paths, "-o": paths},
    "check": {"": st.sampled_from(NAMES["estimator"] + ["nope"]),
              "--model": st.sampled_from(NAMES["model"] + ["nope"]),
              "--reference": st.sampled_from(["rtrl", "bptt", "uoro", "nope"]),
              "--samples": ints, "--steps": ints, "--seed": ints,
              "--backend": st.sampled_from(["numpy", "array_api_strict", "tpu"]),
              "--dtype": st.sampled_from(["float64", "float32", "x"]),
              "--loss": st.sampled_from(["mse", "ce", "hinge"]), "--theta-scale": floats_text,
              "--set": st.sampled_from(["model.n_hidden=3", "model.n_hidden=0",
                                        "estimator.eps=1", "reference.x=1", "foo.bar=1",
                                        "model.n_hidden"]),
              "--per-step": None, "--json": None},
    "plot": {"": paths, "--out": paths,
             "--metric": st.sampled_from(["loss", "bits", "accuracy", "steps_per_s", ""]),
             "--smooth": ints, "--title": st.text(max_size=5), "--log-y": None, "--dpi": ints},
    "sweep": {"": paths, "--out": paths, "--workers": ints,
              "--scheduler": st.sampled_from(["tcp://localhost:1", "nonsense"]),
              "--set": settings_strings(), "--dry-run": None, "--force": None, "-q": None},
    "bench": {"--sizes": st.sampled_from(["8", "8,16", "a,b", "", "0", "-4", "100000"]),
              "--estimators": st.sampled_from(["uoro", "rtrl,uoro", "nope", ""]),
              "--json": None},
    "plugins": {"--json": None},
}
noise = st.sampled_from(["--stepz", "--help", "-", "--", "--json", "x", "", "--set"]) \
    | st.text(max_size=6)


@st.composite
def argvs(draw: Any) -> list[str]:
    command = draw(st.sampled_from([*COMMAND_OPTIONS, ""]))
    argv = command.split()
    options = COMMAND_OPTIONS.get(command, {})
    for _ in range(draw(st.integers(0, 5))):
        if not options or draw(st.integers(0, 7)) == 0:
            argv.append(draw(noise))
            continue
        name = draw(st.sampled_from(sorted(options)))
        if name:
            argv.append(name)
        if options[name] is not None:
            argv.append(draw(options[name]))
    return argv


def _stop(*args: Any, **kwargs: Any) -> Any:
    raise Stop


class FakeTrainer:
    """Builds everything a run needs (names, options, sizes, capabilities), then stops."""

    def __init__(self, config: TrainConfig) -> None:
        resolve_config(config)
        raise Stop

    @classmethod
    def resume(cls, run_dir: Any, steps: Any = None) -> Any:
        raise Stop


@pytest.fixture
def cli_sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[list[str]], None]:
    """``run(argv)``: gradflow ARGV in-process in an empty directory (with a small valid run,
    config and grid in it), the real work replaced by :class:`Stop`; asserts the answer."""
    import gradflow_cli.bench
    import gradflow_cli.check
    import gradflow_cli.sweep
    import gradflow_cli.train

    import gradflow.tools.plot

    monkeypatch.chdir(tmp_path)
    gradflow.train(build_config(sets=["run.steps=20", "run.log_every=10", "run.eval_every=0",
                                      "run.checkpoint_every=10", "model.n_hidden=3"]),
                   out="run", handle_signals=False)
    (tmp_path / "c.toml").write_text("[run]\nsteps = 30\n[model]\nn_hidden = 3\n")
    (tmp_path / "grid.toml").write_text('[run]\nsteps = 20\n[sweep]\n"run.seed" = [0, 1]\n')
    monkeypatch.setattr(gradflow_cli.train, "Trainer", FakeTrainer)
    monkeypatch.setattr(gradflow_cli.check, "estimator_statistics", _stop)
    monkeypatch.setattr(gradflow_cli.bench, "run_bench", _stop)
    monkeypatch.setattr(gradflow_cli.sweep, "run_sweep", _stop)
    monkeypatch.setattr(gradflow.tools.plot.CurvePlot, "save", _stop)  # the figure is drawn

    def run(argv: list[str]) -> None:
        out, err = io.StringIO(), io.StringIO()
        code: Any = 0
        sys.argv = ["gradflow", *argv]
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main()
            except SystemExit as exc:
                code = exc.code
            except Stop:
                code = "stopped"
        text = err.getvalue()
        event(f"{argv[0] if argv else '(none)'}: {code}")
        assert "Traceback" not in text + out.getvalue(), (argv, text)
        assert "internal error" not in text, (argv, text)
        assert code in (0, 2, "stopped"), (argv, code, text)
        if code == 2:
            errors = [line for line in text.splitlines() if line.startswith("error:")]
            assert len(errors) <= 1, (argv, text)
            assert not errors or text.splitlines()[-1] == errors[0], (argv, text)

    monkeypatch.setattr(sys, "argv", ["gradflow"])  # restored afterwards
    return run


# -- checkpoint metadata from elsewhere ----------------------------------------------------------
JUNK = [None, 1, -1, 2**70, 1.5, float("nan"), "x", "../x", [], [1, 2], {}, {"a": 1}, True]


def _mutate(obj: Any, rnd: Any, depth: int = 0) -> None:
    """Replace (or delete) one value somewhere inside ``obj`` with junk."""
    if isinstance(obj, dict) and obj:
        key = rnd.choice(sorted(obj, key=str))
        if rnd.random() < 0.3 or depth > 4:
            if rnd.random() < 0.2:
                del obj[key]
            else:
                obj[key] = copy.deepcopy(rnd.choice(JUNK))
        else:
            _mutate(obj[key], rnd, depth + 1)
    elif isinstance(obj, list) and obj:
        i = rnd.randrange(len(obj))
        if rnd.random() < 0.4 or depth > 4:
            obj[i] = copy.deepcopy(rnd.choice(JUNK))
        else:
            _mutate(obj[i], rnd, depth + 1)


@pytest.fixture
def resume_sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[Any], None]:
    """``run(random)``: a small run's checkpoints' meta.json (and at times its config.json)
    altered at random, then ``gradflow train --resume``: the answer is a resumed run (0) or one
    ``error:`` line (2)."""
    monkeypatch.chdir(tmp_path)
    gradflow.train(build_config(sets=["run.steps=200", "run.log_every=50", "run.eval_every=0",
                                      "run.checkpoint_every=100", "model.n_hidden=3"]),
                   out="base", handle_signals=False)

    def run(rnd: Any) -> None:
        work = tmp_path / "run"
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(tmp_path / "base", work)
        files = [work / "checkpoint" / name / "meta.json"
                 for name in ("step-000000000100", "step-000000000200")]
        if rnd.random() < 0.3:
            files.append(work / "config.json")
        for path in files:
            data = json.loads(path.read_text())
            for _ in range(rnd.randint(1, 3)):
                _mutate(data, rnd)
            path.write_text(json.dumps(data))
        sys.argv = ["gradflow", "train", "--resume", "run", "--steps", "300", "-q"]
        out, err = io.StringIO(), io.StringIO()
        code: Any = 0
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main()
            except SystemExit as exc:
                code = exc.code
        text = err.getvalue()
        event(f"exit {code}")
        assert code in (0, 2) and "Traceback" not in text and "internal error" not in text, \
            text

    monkeypatch.setattr(sys, "argv", ["gradflow"])
    return run


# -- the properties, at two sizes ---------------------------------------------------------------
@_settings(DEFAULT_EXAMPLES, derandomize=True)
@given(configs())
def test_config_model_never_crashes(data: dict[str, Any]) -> None:
    config_property(data)


@_settings(DEFAULT_EXAMPLES, derandomize=True)
@given(st.lists(settings_strings(), max_size=5))
def test_set_overrides_never_crash(items: list[str]) -> None:
    sets_property(items)


@_settings(DEFAULT_EXAMPLES, derandomize=True)
@given(argv=argvs())
def test_command_line_never_crashes(cli_sandbox: Callable[[list[str]], None],
                                    argv: list[str]) -> None:
    cli_sandbox(argv)


@pytest.mark.slow
@_settings(SLOW_EXAMPLES, derandomize=False)
@given(configs())
def test_config_model_never_crashes_many(data: dict[str, Any]) -> None:
    config_property(data)


@pytest.mark.slow
@_settings(SLOW_EXAMPLES, derandomize=False)
@given(st.lists(settings_strings(), max_size=5))
def test_set_overrides_never_crash_many(items: list[str]) -> None:
    sets_property(items)


@pytest.mark.slow
@_settings(SLOW_EXAMPLES, derandomize=False)
@given(argv=argvs())
def test_command_line_never_crashes_many(cli_sandbox: Callable[[list[str]], None],
                                         argv: list[str]) -> None:
    cli_sandbox(argv)


@_settings(40, derandomize=True)
@given(st.randoms(use_true_random=False))
def test_altered_checkpoint_metadata_never_crashes(resume_sandbox: Callable[[Any], None],
                                                   rnd: Any) -> None:
    resume_sandbox(rnd)


@pytest.mark.slow
@_settings(300, derandomize=False)
@given(st.randoms(use_true_random=False))
def test_altered_checkpoint_metadata_never_crashes_many(resume_sandbox: Callable[[Any], None],
                                                        rnd: Any) -> None:
    resume_sandbox(rnd)
