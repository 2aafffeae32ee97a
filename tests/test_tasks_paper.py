"""The tasks of the papers' experiments: `anbn`, `distant-brackets`, `copy`, `influence`.

The generators are checked against their definitions (docs/tasks.md): the statistics of the
streams, and the entropy rate measured on a generated stream by a reference predictor written
here from the definition alone (it never looks at the generator's state) against the stated best
loss. Then each task runs a few hundred steps in the trainer.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from gradflow_plugins.tasks.anbn import optimum as anbn_optimum
from gradflow_plugins.tasks.anbn import unigram as anbn_unigram
from gradflow_plugins.tasks.distant_brackets import reference_losses as brackets_levels

import gradflow
from gradflow.runfiles.config import build_config
from gradflow.training.trainer import Trainer

LN2 = math.log(2.0)


def _stream(task: gradflow.Task, steps: int) -> np.ndarray:
    """(steps + 1, B) codes c_1 … c_{steps+1}: x_1 … x_steps and the last target, checking that
    every target is the next input (y_t = c_{t+1})."""
    be = task.backend
    xs, ys = [], []
    for _ in range(steps):
        batch = task.next()
        assert batch.reset is None
        xs.append(np.argmax(be.to_numpy(batch.inputs), axis=1))
        ys.append(be.to_numpy(batch.targets))
    x, y = np.stack(xs), np.stack(ys)
    np.testing.assert_array_equal(y[:-1], x[1:])
    return np.concatenate([x, y[-1:]])


def _text(task: gradflow.Task, codes: np.ndarray) -> list[str]:
    """Each stream of ``codes`` as a string of the task's characters."""
    chars = np.array(list(task.characters))
    return ["".join(chars[codes[:, b]]) for b in range(codes.shape[1])]


def _roundtrip(state: dict) -> dict:
    """A state as a checkpoint stores it: JSON scalars, NumPy arrays."""
    scalars = json.loads(json.dumps({k: v for k, v in state.items()
                                     if not isinstance(v, np.ndarray)}))
    return {**scalars, **{k: np.array(v) for k, v in state.items() if isinstance(v, np.ndarray)}}


def _chi2_ok(counts: np.ndarray) -> bool:
    """Counts consistent with a uniform distribution: chi-square below mean + 6 sd."""
    counts = np.asarray(counts, dtype=np.float64)
    expected = counts.sum() / len(counts)
    stat = ((counts - expected) ** 2 / expected).sum()
    dof = len(counts) - 1
    return bool(stat < dof + 6 * math.sqrt(2 * dof))


def _run_length(codes: np.ndarray, symbol: int) -> np.ndarray:
    """Length of the run of ``symbol`` ending at each position (0 where the code differs)."""
    idx = np.arange(codes.shape[0])[:, None]
    last_other = np.maximum.accumulate(np.where(codes != symbol, idx, -1), axis=0)
    return idx - last_other


# -- anbn --------------------------------------------------------------------------------------
ANBN_FORMATS = ("start-end", "newline", "none")
#: codes of (the start marker, the end marker) per format; -1: none (a = 0, b = 1)
ANBN_MARKERS = {"start-end": (2, 3), "newline": (-1, 2), "none": (-1, -1)}
#: one complete block, as a regular expression on the task's characters
ANBN_BLOCK = {"start-end": r"S(a+)(b+)E", "newline": r"(a+)(b+)\n", "none": r"(a+)(b+)"}


def anbn_surprisal(codes: np.ndarray, n_min: int, n_max: int,
                   delimiters: str = "start-end") -> np.ndarray:
    """−log2 p(c_{t+1} | c_1 … c_t) (bits) of the exact predictor of the definition, for every
    t of (T + 1, B) codes whose streams start at a block (a = 0, b = 1; start-end: S = 2,
    E = 3; newline: ⏎ = 2). A character the definition forbids gets +inf."""
    start, end = ANBN_MARKERS[delimiters]
    a_run, b_run = _run_length(codes, 0), _run_length(codes, 1)
    now, nxt = codes[:-1], codes[1:]
    a_now, b_now = a_run[:-1], b_run[:-1]
    t = np.arange(now.shape[0])[:, None]
    # n of the block whose b's are being read: the a-run that ends just before them
    block_n = np.take_along_axis(a_run, np.maximum(t - b_now, 0), axis=0)
    after_b = end if end >= 0 else 0  # after the last b: the end marker, else the next a
    after_end = start if start >= 0 else 0  # after the end marker: the next block's S or a
    expected = np.select([now == 1, now == end], [np.where(b_now < block_n, 1, after_b),
                                                  after_end], 0)  # after S or an a: an a
    bits = np.where(nxt == expected, 0.0, np.inf)
    free = (now == 0) & (a_now >= n_min)  # after the k-th a, k ≥ n_min: a or b
    p_b = 1.0 / np.maximum(n_max - a_now + 1, 1)
    with np.errstate(divide="ignore"):
        chosen = np.where(nxt == 1, p_b, np.where(nxt == 0, 1.0 - p_b, 0.0))
        return np.where(free, -np.log2(chosen), bits)


def _anbn_blocks(text: str, delimiters: str, n_max: int) -> list[int]:
    """The n of every complete block of one stream, checking that the stream is a sequence of
    blocks of the format (a^n b^n, same n) and that only its last block may be cut."""
    blocks = list(re.finditer(ANBN_BLOCK[delimiters], text))
    assert blocks and blocks[0].start() == 0
    assert all(m.start() == prev.end() for prev, m in itertools.pairwise(blocks))
    if delimiters == "none" and blocks[-1].end() == len(text):  # it may be cut: drop it
        blocks = blocks[:-1]
    rest = text[blocks[-1].end():]
    assert len(rest) < 2 * n_max + 2
    assert re.fullmatch({"start-end": r"(S(a*|a+b+))?", "newline": r"a*|a+b+",
                         "none": r"a+b*"}[delimiters], rest), rest
    for m in blocks:
        assert len(m[1]) == len(m[2]), m[0]
    return [len(m[1]) for m in blocks]


def test_anbn_shapes_and_dtypes(backend64: gradflow.Backend) -> None:
    task = gradflow.create_task("anbn", backend=backend64, batch=3)
    xp = backend64.xp
    assert (task.n_in, task.n_out, task.loss, task.characters) == (4, 4, "ce", "abSE")
    assert task.options.delimiters == "start-end"
    batch = task.next()
    assert tuple(batch.inputs.shape) == (3, 4) and batch.inputs.dtype == xp.float64
    assert tuple(batch.targets.shape) == (3,) and batch.targets.dtype == xp.int64
    assert batch.reset is None
    f32 = gradflow.get_backend(backend64.name, "float32")
    assert gradflow.create_task("anbn", backend=f32).next().inputs.dtype == f32.xp.float32
    for delimiters, n, chars in (("newline", 3, "ab\n"), ("none", 2, "ab")):
        other = gradflow.create_task("anbn", delimiters=delimiters)
        assert (other.n_in, other.n_out, other.characters) == (n, n, chars)


@pytest.mark.parametrize("delimiters", ANBN_FORMATS)
def test_anbn_block_structure(delimiters: str) -> None:
    """Every stream starts at a block and is a sequence of blocks of the format."""
    task = gradflow.create_task("anbn", batch=8, seed=2, delimiters=delimiters)
    codes = _stream(task, 2000)
    for text in _text(task, codes):
        assert text[0] == ("S" if delimiters == "start-end" else "a")
        ns = _anbn_blocks(text, delimiters, 32)
        assert len(ns) > 40 and set(ns) <= set(range(1, 33))
    # other bounds
    other = gradflow.create_task("anbn", batch=8, seed=2, n_min=3, n_max=5,
                                 delimiters=delimiters)
    ns = [n for text in _text(other, _stream(other, 500))
          for n in _anbn_blocks(text, delimiters, 5)]
    assert set(ns) == {3, 4, 5}


def test_anbn_length_distribution() -> None:
    """n is uniform on 1..32: chi-square and mean over ~3,700 blocks of the default format."""
    task = gradflow.create_task("anbn", batch=32, seed=1)
    ns = [n for text in _text(task, _stream(task, 4000))
          for n in _anbn_blocks(text, "start-end", 32)]
    assert len(ns) > 3500
    counts = Counter(ns)
    assert set(counts) == set(range(1, 33))
    assert _chi2_ok([counts[n] for n in range(1, 33)])
    assert abs(np.mean(ns) - 16.5) < 5 * math.sqrt((32**2 - 1) / 12 / len(ns))


def test_anbn_optimum_formula() -> None:
    assert anbn_optimum(1, 32) / LN2 == pytest.approx(1 / 7, rel=1e-12)  # 5 bits / 35 chars
    assert anbn_optimum(1, 32, "start-end") / LN2 == pytest.approx(0.142857, abs=1e-6)
    assert anbn_optimum(1, 32, "newline") / LN2 == pytest.approx(5 / 34, rel=1e-12)
    assert anbn_optimum(1, 32, "none") / LN2 == pytest.approx(5 / 33, rel=1e-12)
    assert anbn_optimum(2, 9, "none") == pytest.approx(math.log(8) / 11, rel=1e-12)
    assert anbn_optimum(4, 4) == 0.0  # a single block shape: nothing to predict
    # memoryless: a and b 16.5/35 each, S and E 1/35 each
    p = np.array([16.5, 16.5, 1, 1]) / 35
    assert anbn_unigram(1, 32) == pytest.approx(-(p * np.log(p)).sum(), rel=1e-12)
    assert anbn_unigram(1, 32, "none") == pytest.approx(LN2, rel=1e-12)
    with pytest.raises(ValueError, match="delimiters must be one of"):
        anbn_optimum(1, 32, "newlines")
    for delimiters in ANBN_FORMATS:
        task = gradflow.create_task("anbn", delimiters=delimiters)
        assert task.optimum == anbn_optimum(1, 32, delimiters)
        levels = task.reference_losses()
        assert levels["optimum"] == task.optimum < levels["unigram"]


@pytest.mark.parametrize(("n_min", "n_max", "delimiters"), [
    (1, 32, "start-end"), (1, 32, "newline"), (1, 32, "none"), (2, 9, "start-end")])
def test_anbn_entropy_rate_of_the_stream(n_min: int, n_max: int, delimiters: str) -> None:
    """The exact predictor's mean loss on 2.56M characters (256 streams of 10,000) is within 1%
    of the optimum (the sampling error is 0.2%); 1/7 bits/char for the default format."""
    task = gradflow.create_task("anbn", batch=256, seed=3, n_min=n_min, n_max=n_max,
                                delimiters=delimiters)
    codes = _stream(task, 10_000)
    bits = anbn_surprisal(codes, n_min, n_max, delimiters)
    assert np.isfinite(bits).all()  # every character is allowed by the definition
    rate = bits.mean()
    assert bits.size == 2_560_000
    assert rate == pytest.approx(task.optimum / LN2, rel=0.01)
    if (n_min, n_max, delimiters) == (1, 32, "start-end"):
        assert rate == pytest.approx(0.142857, rel=0.01)
        # every complete block costs exactly log2 32 = 5 bits: the cost up to each E
        ends = codes[1:] == 3
        blocks = np.cumsum(ends, axis=0)[ends]
        np.testing.assert_allclose(np.cumsum(bits, axis=0)[ends], 5.0 * blocks, rtol=1e-9)


def test_anbn_reference_predictor_rejects_a_wrong_stream() -> None:
    good = np.array([2, 0, 0, 1, 1, 3, 2, 0, 1, 3, 2, 0])[:, None]
    assert np.isfinite(anbn_surprisal(good, 1, 32)).all()
    for bad in ([2, 0, 0, 1, 3, 2], [2, 0, 1, 1, 3, 2], [2, 0, 1, 3, 0], [2, 1, 1, 3],
                [2, 0, 1, 2, 0]):
        assert np.isinf(anbn_surprisal(np.array(bad)[:, None], 1, 32)).any(), bad
    newline = np.array([0, 0, 1, 1, 2, 0, 1, 2, 0])[:, None]
    assert np.isfinite(anbn_surprisal(newline, 1, 32, "newline")).all()
    assert np.isinf(anbn_surprisal(newline, 1, 32, "none")).any()
    assert np.isfinite(anbn_surprisal(np.array([0, 0, 1, 1, 0, 1, 0])[:, None], 1, 32,
                                      "none")).all()
    for bad in ([0, 0, 1, 2, 0], [0, 1, 1, 2, 0], [0, 1, 2, 1, 0]):
        assert np.isinf(anbn_surprisal(np.array(bad)[:, None], 1, 32, "newline")).any(), bad


@pytest.mark.parametrize("delimiters", ANBN_FORMATS)
def test_anbn_resume_continues_exactly(delimiters: str) -> None:
    """A state saved at any position of a block (the markers included) resumes the stream."""
    starts, last = set(), False
    for stop in (0, 1, 19, 37, 70):
        a = gradflow.create_task("anbn", batch=32, seed=11, delimiters=delimiters)
        for _ in range(stop):
            a.next()
        state = _roundtrip(a.state_dict())
        length = 2 * state["n"] + (2, 1, 0)[ANBN_FORMATS.index(delimiters)]
        starts.update(state["pos"].tolist())
        last |= bool((state["pos"] == length - 1).any())
        b = gradflow.create_task("anbn", batch=32, seed=12, delimiters=delimiters)
        b.load_state_dict(state)
        np.testing.assert_array_equal(_stream(a, 150), _stream(b, 150))
        assert b.state_dict()["step"] == stop + 150
    assert {0, 1} <= starts and last  # stopped before a block's first, second, last character
    # a state whose position lies beyond the block of another format does not fit
    end_of_block = {"rng.seed": 1, "rng.counter": 0, "step": 3, "n": np.array([1]),
                    "pos": np.array([3])}  # S a b E: the E
    gradflow.create_task("anbn").load_state_dict(end_of_block)
    with pytest.raises(gradflow.GradflowError, match=r"do not fit.*delimiters='newline'"):
        gradflow.create_task("anbn", delimiters="newline").load_state_dict(end_of_block)


def test_anbn_bad_options() -> None:
    with pytest.raises(gradflow.PluginError,
                       match=r"task 'anbn'.*delimiters: Input should be 'start-end', "
                             r"'newline' or 'none'"):
        gradflow.create_task("anbn", delimiters="newlines")
    with pytest.raises(gradflow.PluginError,
                       match=r"task 'anbn'.*'newline' was replaced by 'delimiters'"):
        gradflow.create_task("anbn", newline=False)
    with pytest.raises(gradflow.PluginError, match=r"task 'anbn'.*n_min \(5\) must not exceed"):
        gradflow.create_task("anbn", n_min=5, n_max=4)


# -- distant brackets --------------------------------------------------------------------------
class BracketsPredictor:
    """The exact predictor of distant-brackets(s, r_min, r_max, n) from the definition: reads
    one character at a time, gives −log2 p of the next one (+inf if the definition forbids it)."""

    def __init__(self, save: int, r_min: int, r_max: int, alphabet: int) -> None:
        self.s, self.r_min, self.r_max, self.n = save, r_min, r_max, alphabet
        self.symbols = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"[:alphabet]
        self.state, self.u, self.count = "line", "", 0  # the stream starts with a line's "("

    def surprisal(self, nxt: str) -> float:
        state, count, sym = self.state, self.count, nxt in self.symbols
        if state == "line":
            return 0.0 if nxt == "(" else math.inf
        if state == "u":
            if count < self.s:
                return math.log2(self.n) if sym else math.inf
            return 0.0 if nxt == ")" else math.inf
        if state == "v":
            if count < self.r_min:
                return math.log2(self.n) if sym else math.inf
            p_end = 1.0 / (self.r_max - count + 1)
            if nxt == "(":
                return -math.log2(p_end)
            return -math.log2((1.0 - p_end) / self.n) if sym and p_end < 1 else math.inf
        if state == "recall":
            if count < self.s:
                return 0.0 if nxt == self.u[count] else math.inf
            return 0.0 if nxt == ")" else math.inf
        return 0.0 if nxt == "\n" else math.inf  # state "end": after the second ")"

    def read(self, char: str) -> None:
        state = self.state
        if state == "line":
            self.state, self.u, self.count = "u", "", 0
        elif state == "u":
            if self.count < self.s:
                self.u += char
                self.count += 1
            else:
                self.state, self.count = "v", 0
        elif state == "v":
            if char == "(":
                self.state, self.count = "recall", 0
            else:
                self.count += 1
        elif state == "recall":
            if self.count < self.s:
                self.count += 1
            else:
                self.state = "end"
        else:
            self.state = "line"


def brackets_rate(task: gradflow.Task, steps: int) -> tuple[float, int]:
    """Mean surprisal (bits/char) of the exact predictor over ``steps`` steps of every stream,
    and the number of characters predicted."""
    opts = task.options
    r_max = opts.range if opts.range_max is None else opts.range_max
    total, count = 0.0, 0
    for text in _text(task, _stream(task, steps)):
        predictor = BracketsPredictor(opts.save, opts.range, r_max, opts.alphabet)
        predictor.read(text[0])
        for char in text[1:]:
            total += predictor.surprisal(char)
            predictor.read(char)
            count += 1
    return total / count, count


def test_brackets_shapes_and_vocabulary(backend64: gradflow.Backend) -> None:
    task = gradflow.create_task("distant-brackets", backend=backend64, batch=2)
    xp = backend64.xp
    assert (task.n_in, task.n_out, task.loss) == (13, 13, "ce")
    assert task.characters == "0123456789()\n"
    batch = task.next()
    assert tuple(batch.inputs.shape) == (2, 13) and batch.inputs.dtype == xp.float64
    assert tuple(batch.targets.shape) == (2,) and batch.targets.dtype == xp.int64
    assert batch.reset is None


def test_brackets_lines_follow_the_definition() -> None:
    task = gradflow.create_task("distant-brackets", batch=16, seed=5)
    lines = [line for text in _text(task, _stream(task, 1200))
             for line in text.split("\n")[:-1]]  # the last line of a stream is cut
    assert len(lines) == 16 * 100
    assert all(len(line) == 11 for line in lines)  # 12 characters with the newline
    symbols = Counter()
    for line in lines:
        match = re.fullmatch(r"\((\d)\)(\d{5})\((\d)\)", line)
        assert match and match[1] == match[3], line
        symbols.update(match[1] + match[2])
    assert _chi2_ok([symbols[c] for c in "0123456789"])
    # several saved symbols, a distance drawn in a range, a larger alphabet
    task = gradflow.create_task("distant-brackets", batch=16, seed=6, save=3, range=2,
                                range_max=7, alphabet=20)
    distances = Counter()
    for text in _text(task, _stream(task, 2000)):
        for line in text.split("\n")[:-1]:
            match = re.fullmatch(r"\(([0-9a-j]{3})\)([0-9a-j]*)\(([0-9a-j]{3})\)", line)
            assert match and match[1] == match[3], line
            distances[len(match[2])] += 1
    assert set(distances) == set(range(2, 8))
    assert _chi2_ok([distances[r] for r in range(2, 8)])


def test_brackets_optimum_is_the_stated_figure() -> None:
    task = gradflow.create_task("distant-brackets")
    assert task.optimum / LN2 == pytest.approx(1.661, abs=5e-4)
    assert task.optimum / LN2 == pytest.approx(math.log2(10) / 2, rel=1e-12)
    levels = task.reference_losses()
    assert levels["optimum"] < levels["forgets u"] < levels["unigram"]
    assert levels["forgets u"] / LN2 == pytest.approx(7 * math.log2(10) / 12, rel=1e-12)
    # a variable distance adds ln R per line: (s + E r) ln n + ln R over 2s + E r + 5
    other = brackets_levels(2, 3, 6, 7)["optimum"]
    assert other == pytest.approx((6.5 * math.log(7) + math.log(4)) / 13.5, rel=1e-12)


def test_brackets_entropy_rate_of_the_stream() -> None:
    """Defaults (1, 5, 5, 10): every line costs exactly 6 log2 10 bits over 12 characters."""
    task = gradflow.create_task("distant-brackets", batch=8, seed=7)
    rate, count = brackets_rate(task, 1200)
    assert count == 8 * 1200
    assert rate == pytest.approx(1.661, rel=0.01)
    assert rate == pytest.approx(task.optimum / LN2, rel=1e-3)  # partial lines at the ends


def test_brackets_entropy_rate_with_a_variable_distance() -> None:
    """A random distance: the exact predictor's mean loss on 96k characters is within 1% of the
    formula (the sampling error is below 0.3%)."""
    task = gradflow.create_task("distant-brackets", batch=16, seed=8, save=2, range=2,
                                range_max=8, alphabet=4)
    rate, _ = brackets_rate(task, 6000)
    assert math.isfinite(rate)
    assert rate == pytest.approx(task.optimum / LN2, rel=0.01)


def test_brackets_predictor_rejects_a_wrong_recall() -> None:
    predictor = BracketsPredictor(1, 2, 2, 10)
    stream = "(3)45(4)\n"
    predictor.read(stream[0])
    costs = []
    for char in stream[1:]:
        costs.append(predictor.surprisal(char))
        predictor.read(char)
    assert costs[5] == math.inf  # recalled 4 instead of 3
    assert sum(c for c in costs if math.isfinite(c)) == pytest.approx(3 * math.log2(10))


# -- copy --------------------------------------------------------------------------------------
def _episode(task: gradflow.Task, length: int) -> list[gradflow.Batch]:
    return [task.next() for _ in range(2 * length + 1)]


def test_copy_episode_layout(backend64: gradflow.Backend) -> None:
    task = gradflow.create_task("copy", backend=backend64, batch=4, seed=1, length=3)
    xp = backend64.xp
    assert (task.n_in, task.n_out, task.loss) == (4, 3, "ce")
    steps = _episode(task, 3)
    inputs = np.stack([np.argmax(backend64.to_numpy(b.inputs), axis=1) for b in steps])
    targets = np.stack([backend64.to_numpy(b.targets) for b in steps])
    assert steps[0].inputs.dtype == xp.float64 and steps[0].targets.dtype == xp.int64
    assert all(b.reset is None for b in steps)  # the first episode starts the stream
    bits = inputs[:3]
    assert set(np.unique(bits)) <= {0, 1}
    np.testing.assert_array_equal(inputs[3], 2)  # the marker
    np.testing.assert_array_equal(inputs[4:], 3)  # blanks while recalling
    np.testing.assert_array_equal(targets[:4], 2)  # blank targets until the recall
    np.testing.assert_array_equal(targets[4:], bits)  # then the bits, in order
    nxt = _episode(task, 3)
    np.testing.assert_array_equal(backend64.to_numpy(nxt[0].reset), True)
    assert all(b.reset is None for b in nxt[1:])
    quiet = gradflow.create_task("copy", batch=2, length=2, reset=False)
    assert all(b.reset is None for b in _episode(quiet, 2) + _episode(quiet, 2))


def test_copy_bits_are_fair_and_fresh() -> None:
    task = gradflow.create_task("copy", batch=64, seed=2, length=5)
    firsts = []
    for _ in range(40):
        steps = _episode(task, 5)
        firsts.append(np.stack([np.argmax(np.asarray(b.inputs), axis=1) for b in steps[:5]]))
    bits = np.stack(firsts)  # (episodes, 5, B)
    assert abs(bits.mean() - 0.5) < 5 * math.sqrt(0.25 / bits.size)
    assert not np.array_equal(bits[0], bits[1])


def test_copy_optimum_and_no_memory_level() -> None:
    """A causal predictor (bits since the episode began; steps since the marker) is right on
    every target, so the optimum 0 is reachable; guessing the bits costs L ln 2 / (2L + 1)."""
    length = 4
    task = gradflow.create_task("copy", batch=3, seed=3, length=length)
    assert task.optimum == 0.0
    ce = gradflow.get_loss("ce")
    seen: list[np.ndarray] = []
    since_marker = -1
    guess_total, steps = 0.0, 3 * (2 * length + 1)
    for t in range(steps):
        batch = task.next()
        x = np.argmax(np.asarray(batch.inputs), axis=1)
        if batch.reset is not None or t == 0:
            seen, since_marker = [], -1
        if x[0] == 2:
            since_marker = 0
        elif since_marker >= 0:
            since_marker += 1
        else:
            seen.append(x)
        predicted = seen[since_marker - 1] if since_marker > 0 else np.full(3, 2)
        np.testing.assert_array_equal(predicted, np.asarray(batch.targets))
        # the no-memory predictor: ½/½ on the bits when recalling, blank otherwise
        blank = np.arange(3)[None, :] == 2
        logits = np.where(blank, 0.0, -1e3) if since_marker <= 0 else np.where(blank, -1e3, 0.0)
        loss, _ = ce(np.broadcast_to(logits, (3, 3)), np.asarray(batch.targets))
        guess_total += float(loss)
    no_memory = task.reference_losses()["no bit memory"]
    assert guess_total / steps == pytest.approx(no_memory, rel=1e-12)
    assert no_memory == pytest.approx(4 * LN2 / 9)


def _drive(task: gradflow.Task, recall_bits: float, episodes: int) -> list[int]:
    """Feed the task a fake loss: ``recall_bits`` on the recall steps, a large loss elsewhere
    (which must not count). Returns the length of each episode."""
    lengths = []
    for _ in range(episodes):
        length = task.metrics()["copy_length"]
        lengths.append(length)
        for _ in range(2 * length + 1):
            batch = task.next()
            recall = np.asarray(batch.targets)[0] != 2
            task.observe(np.float64(recall_bits * LN2) if recall else np.float64(5.0))
    return lengths


def test_copy_curriculum_lengthens_when_the_recall_loss_is_low() -> None:
    task = gradflow.create_task("copy", batch=2, seed=4, window=3, threshold=0.15)
    assert task.metrics() == {"copy_length": 1}
    lengths = _drive(task, 0.1, 12)
    assert lengths == [1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4]
    assert task.metrics() == {"copy_length": 5}
    assert task.reference_losses()["no bit memory"] == pytest.approx(5 * LN2 / 11)
    # a loss above the threshold keeps the length
    stuck = gradflow.create_task("copy", batch=2, seed=4, window=3, threshold=0.15)
    assert set(_drive(stuck, 0.2, 12)) == {1}
    # without curriculum, without feedback, or at max_length: no growth
    fixed = gradflow.create_task("copy", batch=2, window=3, curriculum=False)
    assert set(_drive(fixed, 0.0, 8)) == {1}
    unobserved = gradflow.create_task("copy", batch=2, window=1)
    for _ in range(30):
        unobserved.next()
    assert unobserved.metrics() == {"copy_length": 1}
    capped = gradflow.create_task("copy", batch=2, window=1, length=2, max_length=3)
    assert _drive(capped, 0.0, 5) == [2, 3, 3, 3, 3]


def test_copy_curriculum_averages_over_the_window() -> None:
    # episodes alternating 0.1 and 0.25 bits: the mean of the last two, 0.175, is above 0.15
    task = gradflow.create_task("copy", batch=1, window=2, threshold=0.15)
    for bits in (0.1, 0.25, 0.1, 0.25, 0.1):
        _drive(task, bits, 1)
    assert task.metrics()["copy_length"] == 1
    # two good episodes in a row bring it below
    _drive(task, 0.1, 1)
    assert task.metrics()["copy_length"] == 2


def test_copy_state_resumes_stream_and_curriculum() -> None:
    a = gradflow.create_task("copy", batch=3, seed=5, window=2)
    _drive(a, 0.05, 5)
    for _ in range(3):  # stop inside an episode
        a.next()
        a.observe(0.0)
    state = _roundtrip(a.state_dict())
    b = gradflow.create_task("copy", batch=3, seed=99, window=2)
    b.load_state_dict(state)
    assert b.metrics() == a.metrics()
    for _ in range(40):
        ba, bb = a.next(), b.next()
        np.testing.assert_array_equal(np.asarray(ba.inputs), np.asarray(bb.inputs))
        np.testing.assert_array_equal(np.asarray(ba.targets), np.asarray(bb.targets))
        assert (ba.reset is None) == (bb.reset is None)
        loss = 0.0 if np.asarray(ba.targets)[0] != 2 else 3.0
        a.observe(loss)
        b.observe(loss)
        assert a.metrics() == b.metrics()
    assert a.metrics()["copy_length"] > 3
    with pytest.raises(gradflow.GradflowError, match="does not fit"):
        gradflow.create_task("copy", batch=2, seed=5, window=2).load_state_dict(state)


def test_copy_held_out_is_fixed_at_the_current_length() -> None:
    task = gradflow.create_task("copy", batch=2, seed=6, window=1)
    _drive(task, 0.0, 3)
    length = task.metrics()["copy_length"]
    assert length == 4
    held = task.held_out()
    assert held.metrics()["copy_length"] == length and not held.options.curriculum
    first = [np.asarray(b.inputs) for b in _episode(held, length)]
    again = [np.asarray(b.inputs) for b in _episode(task.held_out(), length)]
    np.testing.assert_array_equal(first, again)
    train = [np.asarray(b.inputs) for b in _episode(task, length)]
    assert not np.array_equal(first, train)


def test_copy_bad_options() -> None:
    with pytest.raises(gradflow.PluginError, match=r"task 'copy'.*max_length"):
        gradflow.create_task("copy", length=5, max_length=4)
    with pytest.raises(gradflow.PluginError, match=r"task 'copy'.*threshold"):
        gradflow.create_task("copy", threshold=0)


# -- influence ---------------------------------------------------------------------------------
def test_influence_task_shapes(backend64: gradflow.Backend) -> None:
    task = gradflow.create_task("influence", backend=backend64, batch=3)
    xp = backend64.xp
    assert (task.n_in, task.n_out, task.loss, task.optimum) == (0, 1, "mse", 0.0)
    for _ in range(3):
        batch = task.next()
        assert tuple(batch.inputs.shape) == (3, 0) and batch.inputs.dtype == xp.float64
        assert tuple(batch.targets.shape) == (3, 1) and batch.targets.dtype == xp.float64
        np.testing.assert_array_equal(backend64.to_numpy(batch.targets), 1.0)
        assert batch.reset is None
    other = gradflow.create_task("influence", batch=3)
    other.load_state_dict(_roundtrip(task.state_dict()))
    assert other.state_dict() == task.state_dict() == {"step": 3}
    # the influence model takes the task's (empty) input; at θ* = −1/6 its fixed point is 1
    model = gradflow.create_model("influence", backend=backend64, n_in=task.n_in)
    theta = backend64.asarray(np.array([-1.0 / 6.0]))
    np.testing.assert_allclose(backend64.to_numpy(model.fixed_point(theta))[0], 1.0)
    with pytest.raises(gradflow.PluginError, match=r"task 'influence'.*target"):
        gradflow.create_task("influence", target=2.0)


def test_state_round_trips_anbn_and_brackets() -> None:
    for name, opts in (("anbn", {}), ("distant-brackets", {"range_max": 9, "save": 2})):
        a = gradflow.create_task(name, batch=4, seed=11, **opts)
        for _ in range(37):  # inside a block
            a.next()
        b = gradflow.create_task(name, batch=4, seed=12, **opts)
        b.load_state_dict(_roundtrip(a.state_dict()))
        np.testing.assert_array_equal(_stream(a, 300), _stream(b, 300))
        with pytest.raises(gradflow.GradflowError, match=f"task '{name}'"):
            gradflow.create_task(name, batch=3, **opts).load_state_dict(a.state_dict())
        # seeds and the held-out stream
        c = gradflow.create_task(name, batch=4, seed=11, **opts)
        d = gradflow.create_task(name, batch=4, seed=13, **opts)
        assert not np.array_equal(_stream(c, 200), _stream(d, 200))
        h1, h2 = _stream(c.held_out(), 200), _stream(c.held_out(), 200)
        np.testing.assert_array_equal(h1, h2)
        fresh = gradflow.create_task(name, batch=4, seed=11, **opts)
        assert not np.array_equal(h1, _stream(fresh, 200))


# -- in the trainer ----------------------------------------------------------------------------
def _config(*sets: str, steps: int = 300) -> gradflow.TrainConfig:
    return build_config(sets=[f"run.steps={steps}", "run.log_every=100", "run.eval_every=300",
                              "run.eval_steps=50", "run.checkpoint_every=0",
                              "run.final_window=100", *sets])


@pytest.mark.parametrize(("task", "n_in", "n_out"), [
    ("copy", 4, 3), ("anbn", 4, 4), ("distant-brackets", 13, 13)])
def test_tasks_train(tmp_path: Path, task: str, n_in: int, n_out: int) -> None:
    config = _config(f"task.name={task}", "model.name=gru", "model.n_hidden=8",
                     "estimator.name=tbptt", "estimator.truncation=5")
    trainer = Trainer(config)
    summary = trainer.run(tmp_path / task)
    assert summary["status"] == "completed" and summary["steps"] == 300
    assert (trainer.config.model.n_in, trainer.config.model.n_out) == (n_in, n_out)
    assert summary["optimum"] == trainer.parts.task.optimum
    assert math.isfinite(summary["final_loss"]) and math.isfinite(summary["eval_loss"])
    assert summary["final_loss"] > summary["optimum"]


def test_copy_curriculum_with_a_learner(tmp_path: Path) -> None:
    """A trainer that feeds each step's loss back (Task.observe) drives the curriculum: a GRU
    trained by RTRL learns to copy one bit and the task moves on to longer sequences."""
    trainer = Trainer(_config("task.name=copy", "task.window=5", "model.name=gru",
                              "model.n_hidden=8", "estimator.name=rtrl",
                              "optimizer.lr=0.03", "run.seed=1", steps=3000))
    task = trainer.parts.task
    lengths = []
    for _ in range(3000):
        loss, _ = trainer.advance()
        task.observe(loss)
        lengths.append(task.metrics()["copy_length"])
    assert lengths[0] == 1 and lengths[-1] >= 3


def test_influence_rtrl_moves_theta_to_the_optimum(tmp_path: Path) -> None:
    """θ starts at 0.5; exact gradients (RTRL) bring it to θ* = −1/6, where the loss vanishes;
    a truncation of 10 steps pushes it the wrong way."""
    sets = ("task.name=influence", "model.name=influence", "optimizer.name=sgd",
            "optimizer.lr=1e-4", "optimizer.schedule=constant")
    rtrl = Trainer(_config(*sets, "estimator.name=rtrl", steps=1000))
    summary = rtrl.run(tmp_path / "rtrl")
    assert (rtrl.config.model.n_in, rtrl.config.model.n_out) == (0, 1)
    theta = float(rtrl.theta[0])
    assert abs(theta + 1 / 6) < 0.01
    assert summary["final_loss"] < 1e-3
    tbptt = Trainer(_config(*sets, "estimator.name=tbptt", "estimator.truncation=10",
                            steps=1000))
    tbptt.run(tmp_path / "tbptt")
    assert abs(float(tbptt.theta[0]) + 1 / 6) > abs(0.5 + 1 / 6)
