"""The built-in tasks `add` and `text`: definitions, statistics, resumable state, errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from gradflow_plugins.tasks.add import reference_losses
from gradflow_plugins.tasks.text import TextError, unigram_entropy

import gradflow


def _np(backend: gradflow.Backend, x) -> np.ndarray:
    return backend.to_numpy(x)


# -- add ---------------------------------------------------------------------------------------
def test_add_reference_levels() -> None:
    levels = reference_losses(5, 9)
    assert levels["optimum"] == pytest.approx(0.4545, abs=1e-4)
    assert levels["first lag only"] == pytest.approx(0.5192, abs=1e-4)
    assert levels["no memory"] == pytest.approx(0.6616, abs=1e-4)
    task = gradflow.create_task("add")
    assert task.optimum == levels["optimum"]
    assert task.reference_losses() == levels
    # equal lags: y = ½ + ¼x, knowing "the first lag" is knowing everything
    same = reference_losses(3, 3)
    assert same["first lag only"] == pytest.approx(same["optimum"], abs=1e-12)


@pytest.mark.parametrize("targets", ["soft", "sampled"])
def test_add_shapes_and_dtypes(backend64: gradflow.Backend, targets: str) -> None:
    task = gradflow.create_task("add", backend=backend64, batch=3, targets=targets)
    xp = backend64.xp
    batch = task.next()
    assert (task.n_in, task.n_out, task.loss) == (2, 2, "ce")
    assert tuple(batch.inputs.shape) == (3, 2) and batch.inputs.dtype == xp.float64
    assert batch.reset is None
    if targets == "soft":
        assert tuple(batch.targets.shape) == (3, 2) and batch.targets.dtype == xp.float64
        np.testing.assert_allclose(_np(backend64, batch.targets).sum(axis=1), 1.0)
    else:
        assert tuple(batch.targets.shape) == (3,) and batch.targets.dtype == xp.int64
    f32 = gradflow.get_backend(backend64.name, "float32")
    assert gradflow.create_task("add", backend=f32).next().inputs.dtype == f32.xp.float32


def _collect(task, steps: int) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for _ in range(steps):
        b = task.next()
        xs.append(np.asarray(b.inputs)[:, 1])
        ys.append(np.asarray(b.targets))
    return np.stack(xs), np.stack(ys)  # (T, B), (T, B, 2) or (T, B)


def test_add_targets_follow_the_definition() -> None:
    task = gradflow.create_task("add", batch=16, seed=4)
    x, y = _collect(task, 400)
    assert set(np.unique(x)) == {0.0, 1.0}
    assert abs(x.mean() - 0.5) < 0.02  # 6400 fair bits: σ ≈ 0.006
    expected = 0.5 + 0.5 * x[4:-5] - 0.25 * x[:-9]  # y_t from x_{t−5}, x_{t−9}
    np.testing.assert_array_equal(y[9:, :, 1], expected)
    np.testing.assert_array_equal(y[..., 0], 1.0 - y[..., 1])
    # the loss of the exact predictor is the mean entropy of y: close to the optimum
    p = y[9:, :, 1]
    ent = -(p * np.log(p) + np.where(p < 1, (1 - p) * np.log(np.where(p < 1, 1 - p, 1)), 0))
    assert abs(ent.mean() - task.optimum) < 0.01


def test_add_other_lags_and_sampled_statistics() -> None:
    task = gradflow.create_task("add", batch=64, seed=1, lag1=2, lag2=3, targets="sampled")
    x, labels = _collect(task, 500)
    y = 0.5 + 0.5 * x[1:-2] - 0.25 * x[:-3]
    lab = labels[3:]
    for value in (0.25, 0.5, 0.75, 1.0):
        freq = lab[y == value].mean()
        n = (y == value).sum()
        assert abs(freq - value) < 5 * math.sqrt(value * (1 - value) / n) + 1e-12, value


def test_add_state_resumes_the_same_stream() -> None:
    a = gradflow.create_task("add", batch=4, seed=7, targets="sampled")
    for _ in range(25):
        a.next()
    state = a.state_dict()
    # the state survives JSON (scalars) and NumPy (arrays)
    scalars = json.loads(json.dumps({k: v for k, v in state.items()
                                     if not isinstance(v, np.ndarray)}))
    arrays = {k: np.array(v) for k, v in state.items() if isinstance(v, np.ndarray)}
    b = gradflow.create_task("add", batch=4, seed=99, targets="sampled")
    b.load_state_dict({**scalars, **arrays})
    xa, ya = _collect(a, 30)
    xb, yb = _collect(b, 30)
    np.testing.assert_array_equal(xa, xb)
    np.testing.assert_array_equal(ya, yb)


def test_add_seeds_and_held_out() -> None:
    x1, _ = _collect(gradflow.create_task("add", batch=2, seed=3), 50)
    x2, _ = _collect(gradflow.create_task("add", batch=2, seed=3), 50)
    x3, _ = _collect(gradflow.create_task("add", batch=2, seed=4), 50)
    np.testing.assert_array_equal(x1, x2)
    assert not np.array_equal(x1, x3)
    task = gradflow.create_task("add", batch=2, seed=3)
    h1, _ = _collect(task.held_out(), 50)
    h2, _ = _collect(task.held_out(), 50)
    np.testing.assert_array_equal(h1, h2)  # the same evaluation stream each time
    assert not np.array_equal(h1, x1)  # and not the training stream


def test_add_bad_options_name_option_and_plugin() -> None:
    with pytest.raises(gradflow.PluginError, match=r"task 'add'.*lag1"):
        gradflow.create_task("add", lag1=-1)
    with pytest.raises(gradflow.PluginError, match=r"task 'add'.*lags: unknown option"):
        gradflow.create_task("add", lags=3)


# -- text --------------------------------------------------------------------------------------
@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("abcab\ncé", encoding="utf-8")
    return path


def test_text_vocabulary_targets_and_wraparound(text_file, backend64) -> None:
    task = gradflow.create_task("text", backend=backend64, path=str(text_file))
    assert task.characters == "\nabcé"
    assert task.n_in == task.n_out == 5
    codes = [task.characters.index(c) for c in "abcab\ncé"]
    seen_x, seen_y, resets = [], [], []
    for _ in range(9):
        b = task.next()
        assert b.targets.dtype == backend64.xp.int64
        seen_x.append(int(np.argmax(_np(backend64, b.inputs)[0])))
        seen_y.append(int(_np(backend64, b.targets)[0]))
        resets.append(None if b.reset is None else bool(_np(backend64, b.reset)[0]))
    # 7 transitions in 8 characters, then back to the start, which is a new sequence
    assert seen_x[:7] == codes[:7] and seen_y[:7] == codes[1:8]
    assert seen_x[7:] == codes[:2] and seen_y[7:] == codes[1:3]
    assert resets == [None] * 7 + [True, None]


def test_text_streams_spread_and_state(text_file) -> None:
    task = gradflow.create_task("text", batch=4, path=str(text_file))
    np.testing.assert_array_equal(task.positions, [0, 2, 4, 6])
    for _ in range(5):
        task.next()
    state = task.state_dict()
    other = gradflow.create_task("text", batch=4, path=str(text_file))
    other.load_state_dict(json.loads(json.dumps({k: v for k, v in state.items()
                                                 if not isinstance(v, np.ndarray)}))
                          | {k: v for k, v in state.items() if isinstance(v, np.ndarray)})
    for _ in range(6):
        a, b = task.next(), other.next()
        np.testing.assert_array_equal(np.asarray(a.targets), np.asarray(b.targets))
    text_file.write_text("changed text", encoding="utf-8")
    changed = gradflow.create_task("text", batch=4, path=str(text_file))
    with pytest.raises(TextError, match="has changed"):
        changed.load_state_dict(state)


def test_text_held_out_and_unigram(tmp_path) -> None:
    path = tmp_path / "h.txt"
    path.write_text("aaaa" * 20 + "bbbb" * 5, encoding="utf-8")
    task = gradflow.create_task("text", path=str(path), held_out=0.2)
    assert len(task.codes) == 80 and set(task.codes.tolist()) == {0}
    held = task.held_out()
    assert held is not None and held.n_in == 2 and set(held.codes.tolist()) == {1}
    assert task.reference_losses()["unigram"] == 0.0
    assert gradflow.create_task("text", path=str(path)).held_out() is None
    codes = np.array([0, 0, 1, 2])
    assert unigram_entropy(codes, 3) == pytest.approx(-(0.5 * math.log(0.5)
                                                        + 2 * 0.25 * math.log(0.25)))


@pytest.mark.parametrize(("content", "message"), [
    (None, "no such file"),
    (b"", "is empty"),
    (b"x", "at least two"),
    (b"caf\xe9 latin-1", r"not UTF-8 text \(byte 0xe9 at offset 3\)"),
])
def test_text_file_errors(tmp_path, content, message) -> None:
    path = tmp_path / "f.txt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(TextError, match=message):
        gradflow.create_task("text", path=str(path))
    with pytest.raises(TextError, match="is a directory"):
        gradflow.create_task("text", path=str(tmp_path))
    with pytest.raises(gradflow.PluginError, match=r"task 'text'.*path: Field required"):
        gradflow.create_task("text")


def test_text_utf8_bom_is_dropped(tmp_path) -> None:
    path = tmp_path / "bom.txt"
    path.write_bytes("\ufeffhello".encode())
    assert gradflow.create_task("text", path=str(path)).characters == "ehlo"
