"""The cost of a task's step: ``Task.next()`` for one stream (B = 1), NumPy, float64.

``TaskStep.time_next`` times one call of ``next()`` of each registered task with its default
options (``text`` reads the English documentation text of Python's ``pydoc_data.topics``,
465k characters, 103 distinct), in samples of ``number`` steps that cross several chunks: the
time per step includes the share of each chunk computed ahead.

Run as a script, it measures the same with the task plugins of a git revision side by side
(the table of docs/tasks.md, "Cost"), in one process, the two interleaved, medians of the
repetitions::

    taskset -c 0 python benchmarks/tasks.py --before c35aeaa

The plugins of the revision are loaded from ``git show REV:plugins/tasks/<module>.py`` (they may
use only the public ``gradflow`` API of the working tree).
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, ClassVar

import gradflow

#: the registered tasks, built-in and installed
TASKS = list(gradflow.get_registry().names("task"))
#: steps per timing sample: several chunks
SAMPLE = 4096


def _text_file(folder: str) -> str:
    """A text file for the ``text`` task: the documentation topics of the standard library."""
    import pydoc_data.topics

    path = Path(folder) / "topics.txt"
    path.write_text("".join(pydoc_data.topics.topics.values()), encoding="utf-8")
    return str(path)


def make_task(name: str, folder: str, cls: type[gradflow.Task] | None = None) -> gradflow.Task:
    """Task ``name`` with its default options, one stream, NumPy float64 (``cls``: another
    implementation of it); ``text`` reads a file written into ``folder``."""
    cls = cls or gradflow.get_registry().get("task", name).cls
    fields = cls.Options.model_fields
    options = cls.Options(**({"path": _text_file(folder)} if "path" in fields else {}))
    return cls(options, gradflow.get_backend("numpy", "float64"), 1, 0)


class TaskStep:
    params: ClassVar[list] = [TASKS]
    param_names: ClassVar[list[str]] = ["task"]
    number = SAMPLE
    repeat = (3, 10, 10.0)
    warmup_time = 0.0

    def setup(self, name: str) -> None:
        self._folder = tempfile.TemporaryDirectory()
        self.task = make_task(name, self._folder.name)
        for _ in range(SAMPLE):
            self.task.next()

    def teardown(self, name: str) -> None:
        self._folder.cleanup()

    def time_next(self, name: str) -> None:
        self.task.next()


def _revision_class(name: str, revision: str, folder: str) -> type[gradflow.Task]:
    """The class of task ``name`` as it was at git revision ``revision`` (its module written
    into ``folder`` and imported from there)."""
    cls = gradflow.get_registry().get("task", name).cls
    module = cls.__module__.rsplit(".", 1)[-1]
    path = Path(folder) / f"{module}_{revision}.py"
    path.write_text(subprocess.run(["git", "show", f"{revision}:plugins/tasks/{module}.py"],
                                   check=True, capture_output=True, text=True).stdout)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    loaded = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = loaded
    spec.loader.exec_module(loaded)
    return getattr(loaded, cls.__name__)


def _sample_us(task: gradflow.Task, steps: int) -> float:
    """µs per step of ``steps`` calls of ``task.next()``, garbage collection off."""
    gc.disable()
    try:
        start = time.perf_counter()
        for _ in range(steps):
            task.next()
        return (time.perf_counter() - start) / steps * 1e6
    finally:
        gc.enable()


def compare(revision: str | None, repeats: int, steps: int) -> dict[str, dict[str, float]]:
    """{task: {"before": µs, "after": µs}}: medians over ``repeats`` interleaved samples of
    ``steps`` steps, after a warm-up of as many steps ("before" only with a revision)."""
    with tempfile.TemporaryDirectory() as folder:
        tasks: dict[tuple[str, str], gradflow.Task] = {}
        for name in TASKS:
            tasks[name, "after"] = make_task(name, folder)
            if revision is not None:
                before = _revision_class(name, revision, folder)
                tasks[name, "before"] = make_task(name, folder, before)
        for task in tasks.values():
            _sample_us(task, steps)
        samples: dict[tuple[str, str], list[float]] = {key: [] for key in tasks}
        for _ in range(repeats):
            for key, task in tasks.items():
                samples[key].append(_sample_us(task, steps))
    result: dict[str, dict[str, float]] = {name: {} for name in TASKS}
    for (name, which), values in samples.items():
        result[name][which] = statistics.median(values)
    return result


def table(result: dict[str, dict[str, Any]]) -> list[str]:
    """The markdown table of :func:`compare`."""
    lines = ["| task | before (µs/step) | after (µs/step) | speed-up |", "|---|---:|---:|---:|"]
    for name, row in result.items():
        before, after = row.get("before"), row["after"]
        lines.append(f"| `{name}` | {'–' if before is None else f'{before:.2f}'} | "
                     f"{after:.2f} | {'–' if before is None else f'{before / after:.1f}×'} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", metavar="REV", help="also time the task plugins of this "
                        "git revision, interleaved")
    parser.add_argument("--repeats", type=int, default=25, help="samples per task (median)")
    parser.add_argument("--steps", type=int, default=SAMPLE, help="steps per sample")
    args = parser.parse_args()
    print("\n".join(table(compare(args.before, args.repeats, args.steps))))


if __name__ == "__main__":
    main()
