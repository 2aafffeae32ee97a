"""Every registered task computes its steps in chunks (``gradflow.ChunkedStream``): the stream is
bit for bit the one-step-at-a-time stream of its definition, a state taken in the middle of a chunk
resumes it exactly, and array-api-strict gives the numbers of NumPy.

The one-step-at-a-time streams are the references below, written here from each task's definition
(docs/tasks.md) with the draws of its generator: one :class:`gradflow.CounterRNG` call per draw
and plain Python per stream, one step at a time, with no chunk.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import array_api_compat.numpy as hxp
import numpy as np
import pytest

import gradflow
from benchmarks import tasks as task_benchmarks
from gradflow.contracts.task import CHUNK_STEPS, HELD_OUT_KEY
from tests.helpers import registered

TEXT = ("It was the best of times, it was the worst of times, it was the age of wisdom, it "
        "was the age of foolishness, it was the epoch of belief, it was the epoch of "
        "incredulity.\nÇa c'est la vie — naïve façade.\n")


# -- the one-step-at-a-time references -------------------------------------------------------------
class Reference:
    """A task's stream one step at a time: ``step()`` gives (x_t, y_t, reset_t or None) as
    NumPy arrays; ``observe(loss)`` and ``length`` (copy's curriculum)."""

    def __init__(self, options: dict[str, Any], batch: int, seed: int) -> None:
        self.options, self.batch = options, batch
        self.rng = gradflow.CounterRNG(hxp, seed)

    def step(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        raise NotImplementedError

    def observe(self, loss: float) -> None:
        """Curricula only."""

    def metrics(self) -> dict[str, float]:
        return {}

    def draw(self, *shape: int) -> list:
        """One draw of the generator, as nested lists of Python integers."""
        return np.asarray(self.rng.bits((self.batch, *shape))).tolist()


def one_hot(codes: list[int], width: int) -> np.ndarray:
    return np.eye(width)[np.array(codes, dtype=np.int64)]


class AddReference(Reference):
    """Draw 0: max(t1, t2) bits of history per stream; step t: the bits of draw t, then (sampled
    targets) the uniforms of draw t + 1; y_t = ½ + ½x_{t−t1} − ¼x_{t−t2}."""

    def __init__(self, options: dict[str, Any], batch: int, seed: int) -> None:
        super().__init__(options, batch, seed)
        self.lag1, self.lag2 = options.get("lag1", 5), options.get("lag2", 9)
        past = max(self.lag1, self.lag2)
        # self.past[b][j] = x_{t−j} of stream b once x_t is in front (j ≥ 1: number j − 1 of
        # the draw)
        self.past = [[0] + [v >> 63 for v in row] for row in self.draw(past)]

    def step(self) -> tuple[np.ndarray, np.ndarray, None]:
        bits = [row[0] >> 63 for row in self.draw(1)]
        for b, bit in enumerate(bits):
            self.past[b] = [bit, *self.past[b][:-1]]
        y = np.array([0.5 + 0.5 * p[self.lag1] - 0.25 * p[self.lag2] for p in self.past])
        if self.options.get("targets", "soft") == "sampled":
            target = (np.asarray(self.rng.uniform((self.batch,), hxp.float64)) < y).astype(
                np.int64)
        else:
            target = np.stack([1.0 - y, y], axis=1)
        return one_hot(bits, 2), target, None


class SegmentsReference(Reference):
    """Streams of segments (lists of codes), each stream starting one; at a step where some
    stream's segment ends, every stream draws a new one (``new_segments``) and those whose
    segment ended take theirs. x_t = c_t, y_t = c_{t+1}, no resets."""

    width = 0

    def __init__(self, options: dict[str, Any], batch: int, seed: int) -> None:
        super().__init__(options, batch, seed)
        self.segments = self.new_segments()
        self.pos = [0] * batch

    def new_segments(self) -> list[list[int]]:
        raise NotImplementedError

    def step(self) -> tuple[np.ndarray, np.ndarray, None]:
        x = [seg[p] for seg, p in zip(self.segments, self.pos, strict=True)]
        ended = [p + 1 == len(seg) for seg, p in zip(self.segments, self.pos, strict=True)]
        drawn = self.new_segments() if any(ended) else self.segments
        for b, end in enumerate(ended):
            if end:
                self.segments[b], self.pos[b] = drawn[b], 0
            else:
                self.pos[b] += 1
        y = [seg[p] for seg, p in zip(self.segments, self.pos, strict=True)]
        return one_hot(x, self.width), np.array(y, dtype=np.int64), None


class AnbnReference(SegmentsReference):
    """Blocks [S] a^n b^n [E or ⏎], n = n_min + (draw mod (n_max − n_min + 1))."""

    def __init__(self, options: dict[str, Any], batch: int, seed: int) -> None:
        self.n_min, self.n_max = options.get("n_min", 1), options.get("n_max", 32)
        self.delimiters = options.get("delimiters", "start-end")
        self.width = {"start-end": 4, "newline": 3, "none": 2}[self.delimiters]
        super().__init__(options, batch, seed)

    def new_segments(self) -> list[list[int]]:
        span = self.n_max - self.n_min + 1
        head, tail = {"start-end": ([2], [3]), "newline": ([], [2]), "none": ([], [])}[
            self.delimiters]
        return [head + [0] * n + [1] * n + tail
                for n in (self.n_min + v % span for v in self.draw())]


class BracketsReference(SegmentsReference):
    """Lines ( u ) v ( u ) ⏎: one draw of s + r_max symbols (mod n) per stream, then, when r
    varies, one draw of r = r_min + (draw mod (r_max − r_min + 1)); v is the first r symbols
    after u."""

    def __init__(self, options: dict[str, Any], batch: int, seed: int) -> None:
        self.save, self.alphabet = options.get("save", 1), options.get("alphabet", 10)
        self.r_min = options.get("range", 5)
        self.r_max = options.get("range_max") or self.r_min
        self.width = self.alphabet + 3
        super().__init__(options, batch, seed)

    def new_segments(self) -> list[list[int]]:
        s, n = self.save, self.alphabet
        symbols = [[v % n for v in row] for row in self.draw(s + self.r_max)]
        r = [self.r_min + v % (self.r_max - self.r_min + 1) for v in self.draw()] \
            if self.r_max > self.r_min else [self.r_min] * self.batch
        return [[n, *row[:s], n + 1, *row[s:s + rb], n, *row[:s], n + 1, n + 2]
                for row, rb in zip(symbols, r, strict=True)]


class CopyReference(Reference):
    """Episodes of 2L + 1 steps: L bits (the top bits of one draw of L numbers per stream, at
    the episode's first step), the marker, L blanks; targets blank, then the bits. The
    curriculum as in :meth:`CopyTask.observe`: the observed recall losses of an episode, counted
    when its last step is observed, lengthen L after ``window`` episodes whose mean is below
    ``threshold`` bits."""

    def __init__(self, options: dict[str, Any], batch: int, seed: int) -> None:
        super().__init__(options, batch, seed)
        self.length = options.get("length", 1)
        self.window = options.get("window", 10)
        self.phase, self.steps, self.bits = 0, 0, [[0] * self.length] * batch
        self.last = -1  # the phase of the last step, until it is observed
        self.recall: list[float] = []  # the observed recall losses of the episode
        self.recent: list[float] = []
        self.episodes = 0

    def step(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        length, phase = self.length, self.phase
        if phase == 0:
            self.bits = [[v >> 63 for v in row] for row in self.draw(length)]
        x = [bits[phase] if phase < length else 2 if phase == length else 3
             for bits in self.bits]
        y = [bits[phase - length - 1] if phase > length else 2 for bits in self.bits]
        reset = np.ones(self.batch, dtype=bool) if phase == 0 and self.steps > 0 and \
            self.options.get("reset", True) else None
        self.last, self.phase = phase, (phase + 1) % (2 * length + 1)
        self.steps += 1
        return one_hot(x, 4), np.array(y, dtype=np.int64), reset

    def observe(self, loss: float) -> None:
        phase, self.last = self.last, -1
        if phase < 0 or not self.options.get("curriculum", True):
            return
        if phase > self.length:
            self.recall.append(loss)
        if phase < 2 * self.length:
            return
        if self.recall:
            self.recent = [*self.recent, sum(self.recall) / len(self.recall) / math.log(2)]
            self.recent = self.recent[-self.window:]
            self.episodes += 1
        self.recall = []
        if self.episodes >= self.window and \
                self.length < self.options.get("max_length", 1000) and \
                sum(self.recent) / len(self.recent) < self.options.get("threshold", 0.15):
            self.length += 1
            self.recent, self.episodes = [], 0

    def metrics(self) -> dict[str, float]:
        return {"copy_length": self.length}


class TextReference(Reference):
    """Stream b starts at character ⌊b·L/B⌋ (mod L − 1) of the L training characters (or of
    the held-out part, ``held = True``); after reading the pair (c_p, c_{p+1}) it moves on to
    p + 1, or back to 0 (a new sequence) when p + 1 is the last character."""

    def __init__(self, options: dict[str, Any], batch: int, seed: int,
                 held: bool = False) -> None:
        super().__init__(options, batch, seed)
        text = Path(options["path"]).read_text(encoding="utf-8")
        self.vocab = sorted(set(text))
        codes = [self.vocab.index(c) for c in text]
        cut = len(codes) - int(len(codes) * options.get("held_out", 0.0))
        self.codes = codes[cut:] if held else codes[:cut]
        self.pos = [b * len(self.codes) // batch % (len(self.codes) - 1) for b in range(batch)]
        self.wrapped = [False] * batch

    def step(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        x = [self.codes[p] for p in self.pos]
        y = [self.codes[p + 1] for p in self.pos]
        reset = np.array(self.wrapped) if any(self.wrapped) else None
        self.wrapped = [p + 2 == len(self.codes) for p in self.pos]
        self.pos = [0 if w else p + 1 for p, w in zip(self.pos, self.wrapped, strict=True)]
        return one_hot(x, len(self.vocab)), np.array(y, dtype=np.int64), reset


class InfluenceReference(Reference):
    """No input, the target 1."""

    def step(self) -> tuple[np.ndarray, np.ndarray, None]:
        return np.zeros((self.batch, 0)), np.ones((self.batch, 1)), None


REFERENCES: dict[str, type[Reference]] = {
    "add": AddReference, "anbn": AnbnReference, "distant-brackets": BracketsReference,
    "copy": CopyReference, "text": TextReference, "influence": InfluenceReference,
}
#: option sets per task (``text`` also gets the path of its file)
OPTIONS: dict[str, list[dict[str, Any]]] = {
    "add": [{}, {"targets": "sampled"}, {"lag1": 0, "lag2": 3}],
    "anbn": [{}, {"delimiters": "none"}, {"n_min": 3, "n_max": 5, "delimiters": "newline"}],
    "distant-brackets": [{}, {"save": 2, "range_max": 9},
                         {"save": 3, "range": 0, "range_max": 3, "alphabet": 3}],
    "copy": [{"window": 2}, {"window": 1, "length": 3, "max_length": 40, "reset": False},
             {"curriculum": False, "length": 4}],
    "text": [{}, {"held_out": 0.3}],
    "influence": [{}],
}
TASKS = registered("task")
CASES = [pytest.param(name, batch, i, id=f"{name}-B{batch}-options{i}")
         for name in TASKS for batch in (1, 3) for i in range(len(OPTIONS.get(name, [{}])))]


@pytest.fixture
def text_path(tmp_path) -> str:
    path = tmp_path / "text.txt"
    path.write_text(TEXT, encoding="utf-8")
    return str(path)


def _options(name: str, index: int, text_path: str) -> dict[str, Any]:
    options = dict(OPTIONS.get(name, [{}])[index])
    return {**options, "path": text_path} if name == "text" else options


# -- driving a stream ------------------------------------------------------------------------------
def loss_at(t: int) -> float | None:
    """The loss fed back after step t (nats; low enough on average for copy's curriculum to
    lengthen), or None: step t is not observed (one step in eleven)."""
    return None if t % 11 == 10 else (t * 2654435761 % 1000) / 1000 * 0.16


Record = tuple[np.ndarray, np.ndarray, np.ndarray | None, dict[str, float]]


def run(task: gradflow.Task | Reference, first: int, last: int, *,
        observe: bool = True) -> list[Record]:
    """Steps ``first`` … ``last − 1``: (x, y, reset, metrics after the step), each step observed
    with :func:`loss_at` (``observe = False``: not the last one)."""
    records = []
    for t in range(first, last):
        if isinstance(task, Reference):
            x, y, reset = task.step()
        else:
            batch = task.next()
            be = task.backend
            x, y = be.to_numpy(batch.inputs), be.to_numpy(batch.targets)
            reset = None if batch.reset is None else be.to_numpy(batch.reset)
        loss = loss_at(t)
        if loss is not None and (observe or t < last - 1):
            task.observe(loss)
        records.append((x, y, reset, task.metrics()))
    return records


def assert_same(got: list[Record], want: list[Record]) -> None:
    """The same steps, bit for bit, with the same dtypes and the same resets."""
    assert len(got) == len(want)
    for name, i in (("inputs", 0), ("targets", 1)):
        a, b = np.stack([r[i] for r in got]), np.stack([r[i] for r in want])
        assert a.dtype == b.dtype and a.shape == b.shape, name
        mismatch = np.flatnonzero((a != b).reshape(len(got), -1).any(axis=1))
        assert mismatch.size == 0, f"{name} differ from step {mismatch[:1]} on"
    resets = [(t, r[2] is None) for t, r in enumerate(got)]
    assert resets == [(t, r[2] is None) for t, r in enumerate(want)]
    for g, w in zip(got, want, strict=True):
        if w[2] is not None:
            assert g[2].dtype == bool and np.array_equal(g[2], w[2])
    assert [r[3] for r in got] == [r[3] for r in want]


def roundtrip(state: dict[str, Any]) -> dict[str, Any]:
    """A state as a checkpoint stores it: JSON scalars, NumPy arrays."""
    scalars = json.loads(json.dumps({k: v for k, v in state.items()
                                     if not isinstance(v, np.ndarray)}))
    return {**scalars, **{k: np.array(v) for k, v in state.items() if isinstance(v, np.ndarray)}}


def make(name: str, batch: int, options: dict[str, Any], chunk: int | None = None,
         backend: str = "numpy", seed: int = 5) -> gradflow.Task:
    """Task ``name``; ``chunk``: chunks of that many steps instead of the default."""
    task = gradflow.create_task(name, backend=backend, batch=batch, seed=seed, **options)
    if chunk is not None:
        task.stream.steps = chunk
    return task


# -- (a) the chunks give the one-step-at-a-time stream ---------------------------------------------
def test_every_task_has_a_reference_and_chunks() -> None:
    assert set(TASKS) <= set(REFERENCES), "write a one-step reference for each new task"
    for name in TASKS:
        options = {"path": __file__} if name == "text" else {}
        assert isinstance(gradflow.create_task(name, **options).stream, gradflow.ChunkedStream)


@pytest.mark.parametrize(("name", "batch", "index"), CASES)
@pytest.mark.parametrize("chunk", [None, 7])
def test_chunks_are_the_one_step_stream(name: str, batch: int, index: int, chunk: int | None,
                                        text_path: str) -> None:
    """Over three chunks and more (of the default size, and of 7 steps: boundaries inside
    blocks, lines and episodes), the training stream, observed as a trainer does, and the
    held-out stream."""
    options = _options(name, index, text_path)
    task = make(name, batch, options, chunk)
    steps = 3 * task.stream.steps + 5
    want = run(REFERENCES[name](options, batch, 5), 0, steps)
    assert_same(run(task, 0, steps), want)
    if name == "copy" and options.get("curriculum", True):
        assert want[-1][3]["copy_length"] > options.get("length", 1)  # it did change
    held = task.held_out()
    if held is None:
        return
    if chunk is not None:
        held.stream.steps = chunk
    if name == "text":  # the held-out part of the file, from spread offsets
        reference: Reference = TextReference(options, batch, 0, held=True)
    else:
        seed = gradflow.CounterRNG(hxp, 5).spawn(HELD_OUT_KEY).seed
        held_options = options
        if name == "copy":
            held_options = {**options, "length": task.metrics()["copy_length"],
                            "curriculum": False}
        reference = REFERENCES[name](held_options, batch, seed)
    steps = held.stream.steps + 3
    assert_same(run(held, 0, steps, observe=False), run(reference, 0, steps, observe=False))


@pytest.mark.parametrize("name", TASKS)
def test_many_streams_take_shorter_chunks(name: str, text_path: str, monkeypatch) -> None:
    """A chunk holds at most CHUNK_NUMBERS numbers of inputs and targets: fewer steps for many
    streams (here 40 streams, and a limit of 5000 numbers), the same stream."""
    monkeypatch.setattr("gradflow.contracts.task.CHUNK_NUMBERS", 5000)
    options = _options(name, 0, text_path)
    task = make(name, 40, options)
    assert task.stream.width >= max(1, task.n_in)
    assert task.stream.steps == min(CHUNK_STEPS, max(1, 5000 // (40 * task.stream.width)))
    steps = 3 * task.stream.steps + 3
    assert_same(run(task, 0, steps), run(REFERENCES[name](options, 40, 5), 0, steps))


def test_text_with_more_streams_than_characters(tmp_path) -> None:
    """Streams that would start at the last character (no target) start at the first."""
    path = tmp_path / "short.txt"
    path.write_text("abc", encoding="utf-8")
    task = make("text", 4, {"path": str(path)})
    np.testing.assert_array_equal(task.positions, [0, 0, 1, 0])
    assert_same(run(task, 0, 9), run(TextReference({"path": str(path)}, 4, 0), 0, 9))


# -- (b) a state taken in the middle of a chunk resumes the stream ---------------------------------
def _change_steps(records: list[Record]) -> list[int]:
    """The steps whose observation changed copy's length."""
    lengths = [r[3].get("copy_length") for r in records]
    return [t for t in range(1, len(lengths)) if lengths[t] != lengths[t - 1]]


@pytest.mark.parametrize(("name", "batch", "index"), CASES)
def test_state_mid_chunk_resumes(name: str, batch: int, index: int, text_path: str) -> None:
    """States after 1, 12, chunk/2 + 1 and chunk + 3 steps (chunks of 10 steps and of the
    default size), and — copy — states taken between ``next`` and ``observe`` at steps that
    lengthen the episodes, loaded into a task of another seed, continue the reference stream
    (across a chunk boundary of the resumed task)."""
    options = _options(name, index, text_path)
    for chunk in (10, None):
        size = make(name, batch, options, chunk).stream.steps
        steps = 2 * size + 25
        want = run(REFERENCES[name](options, batch, 5), 0, steps)
        cuts = [(1, True), (12, True), (size // 2 + 1, True), (size + 3, True)]
        changes = _change_steps(want)
        if name == "copy" and options.get("curriculum", True):
            assert changes, "the curriculum must act in this test"
            cuts += [(changes[0] + 1, False), (changes[-1] + 1, False)]
        for cut, observed in cuts:
            task = make(name, batch, options, chunk)
            run(task, 0, cut, observe=observed)
            state = roundtrip(task.state_dict())
            assert state["step"] == cut
            resumed = make(name, batch, options, chunk, seed=99)
            resumed.load_state_dict(state)
            if not observed and loss_at(cut - 1) is not None:
                resumed.observe(loss_at(cut - 1))  # the observation the state was taken before
            assert_same(run(resumed, cut, steps), want[cut:])


def test_copy_curriculum_change_drops_the_steps_drawn_ahead() -> None:
    """The length changes at the end of an episode, in the middle of a chunk: the next episode
    has the new length and the bits of the next draw, as one step at a time."""
    options = {"window": 1, "length": 2}
    task, reference = make("copy", 1, options), CopyReference(options, 1, 5)
    for t in range(5):  # one episode of 2·2 + 1 steps, observed with a low loss
        assert_same(run(task, t, t + 1), run(reference, t, t + 1))
    assert task.metrics() == {"copy_length": 3}
    counter, phase, bits = task.stream.position  # one episode drawn; none at the new length
    assert (counter, phase, bits.shape, task.stream.offset) == (1, 0, (1, 3), 0)
    assert_same(run(task, 5, 40), run(reference, 5, 40))


def test_bad_states_are_refused() -> None:
    task = make("copy", 2, {"length": 3})
    run(task, 0, 4, observe=False)
    state = roundtrip(task.state_dict())
    assert state["pending"] == 3 and state["phase"] == 4
    with pytest.raises(gradflow.GradflowError, match="last step at phase 5, the next at phase 4"):
        make("copy", 2, {"length": 3}).load_state_dict({**state, "pending": 5})
    text = gradflow.create_task("text", batch=2, path=__file__)
    state = text.state_dict()
    with pytest.raises(gradflow.GradflowError, match="do not fit"):
        text.load_state_dict({**state, "pending_reset": np.zeros(3, dtype=bool)})


# -- (c) array-api-strict gives the numbers of NumPy -----------------------------------------------
@pytest.mark.parametrize(("name", "batch", "index"),
                         [case for case in CASES if case.values[2] == 0])
def test_array_api_strict_gives_the_numpy_stream(name: str, batch: int, index: int,
                                                 text_path: str) -> None:
    options = _options(name, index, text_path)
    for chunk in (7, None):
        numpy_task = make(name, batch, options, chunk)
        strict = make(name, batch, options, chunk, backend="array_api_strict")
        steps = 40
        got = run(strict, 0, steps)
        assert_same(got, run(numpy_task, 0, steps))
        batch_ = strict.next()
        assert type(batch_.inputs).__module__.startswith("array_api_strict")
        assert type(batch_.targets).__module__.startswith("array_api_strict")


# -- the benchmark ---------------------------------------------------------------------------------
def test_task_step_benchmark_runs_for_every_task() -> None:
    """The asv benchmark (benchmarks/tasks.py) covers every registered task and runs; nothing
    here asserts a timing."""
    assert sorted(task_benchmarks.TaskStep.params[0]) == sorted(TASKS)
    bench = task_benchmarks.TaskStep()
    for name in TASKS:
        bench.setup(name)
        try:
            step = bench.task.state_dict()["step"]
            bench.time_next(name)
            assert bench.task.state_dict()["step"] == step + 1
        finally:
            bench.teardown(name)
    result = task_benchmarks.compare(None, repeats=1, steps=3)
    assert set(result) == set(TASKS) and all(row["after"] > 0 for row in result.values())
    assert len(task_benchmarks.table(result)) == len(TASKS) + 2


def test_chunked_stream_positions_and_seek() -> None:
    """ChunkedStream on its own: a stream of counters, chunks of 4, handed out one at a time;
    its position and step count are those of the steps handed out, and seek drops the chunk."""
    drawn: list[tuple[int, int]] = []

    def draw(position: int, step: int, steps: int) -> gradflow.Chunk:
        drawn.append((position, step))
        values = np.arange(position, position + steps, dtype=np.float64)
        return gradflow.Chunk(values[:, None, None], values[:, None].astype(np.int64),
                              lambda k: position + k,
                              np.array([[v % 3 == 0] for v in values]))

    be = gradflow.get_backend()
    stream = gradflow.ChunkedStream(be, 1, 1, draw, 100, step=7)
    assert stream.steps == CHUNK_STEPS
    stream.steps = 4
    assert (stream.position, stream.step) == (100, 7)
    seen = [stream.next() for _ in range(6)]
    assert [float(b.inputs[0, 0]) for b in seen] == [100, 101, 102, 103, 104, 105]
    assert [b.reset is not None for b in seen] == [v % 3 == 0 for v in range(100, 106)]
    assert (stream.position, stream.step, drawn) == (106, 13, [(100, 7), (104, 11)])
    stream.seek(50, 0)
    assert (stream.position, stream.step) == (50, 0)
    assert float(stream.next().inputs[0, 0]) == 50 and drawn[-1] == (50, 0)
