"""`gradflow plot`: learning curves of several runs rendered to PNG/SVG and checked; seeds grouped
into a mean with a 95 % band, for a sweep directory by default."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

import gradflow
from gradflow import PlotError
from gradflow.tools.plot import learning_curves, run_labels, sweep_runs, trailing_mean
from tests.helpers import run_cli

pytest.importorskip("matplotlib")
from matplotlib.colors import to_rgb
from matplotlib.image import imread

cli = run_cli


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("runs")
    paths = []
    for estimator, seed in (("tbptt", 0), ("tbptt", 1), ("rtrl", 0)):
        out = root / f"{estimator}-{seed}"
        gradflow.train({"run": {"steps": 1500, "log_every": 50, "eval_every": 500,
                                "eval_steps": 50, "seed": seed},
                        "model": {"n_hidden": 8}, "estimator": {"name": estimator}}, out=out)
        paths.append(out)
    return paths


def test_png_has_one_line_per_run(runs, tmp_path, monkeypatch, capsys) -> None:
    out = tmp_path / "curves.png"
    code, stdout, stderr = cli(monkeypatch, capsys, "plot", *map(str, runs), "--out", str(out),
                               "--smooth", "3")
    assert code == 0, stderr
    assert stdout.strip() == f"3 run(s) plotted to {out}"
    image = imread(out)
    assert image.shape[:2] == (500, 800)  # 8 × 5 inches at 100 dpi
    rgb = image[..., :3]
    assert rgb.std() > 0.05 and (rgb.min(axis=-1) < 0.9).mean() > 0.01  # not blank

    figure = learning_curves(runs, smooth=3)
    lines = [line for line in figure.figure.axes[0].get_lines() if line.get_gid() == "run"]
    assert len(lines) == 3 and list(figure.lines.values()) == lines
    assert sorted(figure.lines) == ["rtrl/rnn/add seed=0", "tbptt/rnn/add seed=0",
                                    "tbptt/rnn/add seed=1"]
    for line in lines:  # every run's line is drawn in the image, in its own colour
        colour = np.array(to_rgb(line.get_color()))
        close = np.abs(rgb - colour).max(axis=-1) < 0.08
        assert close.sum() > 300, line.get_label()
    assert len({line.get_color() for line in lines}) == 3
    x, y = lines[0].get_data()
    assert list(x) == list(range(50, 1501, 50))
    loss = gradflow.load_run(runs[0]).metrics["loss"]
    np.testing.assert_allclose(y, trailing_mean(loss, 3))
    assert y[2] == pytest.approx(loss[:3].mean()) and y[0] == loss[0]
    reference = [line for line in figure.figure.axes[0].get_lines()
                 if line.get_gid() == "reference"]  # the optimum and the memoryless level
    assert [r.get_label().split()[0] for r in reference] == ["optimum", "no"]
    assert reference[0].get_ydata()[0] == pytest.approx(0.4545, abs=1e-3)
    assert reference[1].get_ydata()[0] == pytest.approx(0.6616, abs=1e-3)


def test_svg_and_other_metrics(runs, tmp_path, monkeypatch, capsys) -> None:
    out = tmp_path / "eval.svg"
    code, _, stderr = cli(monkeypatch, capsys, "plot", str(runs[0]), str(runs[2]), "--out",
                          str(out), "--metric", "eval_bits", "--smooth", "1")
    assert code == 0, stderr
    text = out.read_text()
    assert text.startswith("<?xml") and "<svg" in text
    figure = learning_curves(runs[:1], metric="eval_loss", smooth=1)
    (line,) = figure.lines.values()
    assert list(line.get_xdata()) == [500, 1000, 1500]  # only the evaluation lines
    assert run_labels([gradflow.load_run(r) for r in runs[:1]]) == ["tbptt/rnn/add"]
    grad = learning_curves(runs, metric="grad_norm", smooth=1)
    assert len(grad.lines) == 3 and not [
        ln for ln in grad.figure.axes[0].get_lines() if ln.get_gid() == "reference"]


def test_labels_tell_apart_runs_that_differ_elsewhere(tmp_path) -> None:
    runs = [gradflow.train({"run": {"steps": 100, "log_every": 50, "eval_every": 0},
                            "model": {"n_hidden": 4}, "optimizer": {"lr": lr}},
                           out=tmp_path / str(lr)) for lr in (0.01, 0.001)]
    assert run_labels(runs) == ["rtrl/rnn/add optimizer.lr=0.01",
                                "rtrl/rnn/add optimizer.lr=0.001"]


def test_errors_are_one_line(runs, tmp_path, monkeypatch, capsys) -> None:
    cases = [
        (["--out", str(tmp_path / "x.jpg")], "the output must end in .png, .svg, .pdf"),
        (["--out", str(tmp_path / "x.png"), "--metric", "nope"],
         "no run has values of 'nope'; available: bits, eval_bits, eval_loss, grad_norm"),
    ]
    for args, message in cases:
        code, _, err = cli(monkeypatch, capsys, "plot", str(runs[0]), *args)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    code, _, err = cli(monkeypatch, capsys, "plot", str(tmp_path), "--out",
                       str(tmp_path / "x.png"))
    assert code == 2 and "not a gradflow run directory (config.json is missing)" in err
    assert not (tmp_path / "x.png").exists()
    # a directory that does not exist says so (not that its config.json is missing)
    missing = tmp_path / "no-such-run"
    code, out, err = cli(monkeypatch, capsys, "plot", str(runs[0]), str(missing), "--out",
                         str(tmp_path / "x.png"))
    assert code == 2 and out == "" and "Traceback" not in err
    assert err.strip() == f"error: no such run directory: {str(missing)!r}"
    assert not (tmp_path / "x.png").exists() and not missing.exists()
    with pytest.raises(gradflow.RunDirError, match=r"^no such run directory: "):
        gradflow.load_run(missing)


def test_without_matplotlib(runs, tmp_path, monkeypatch, capsys) -> None:
    for name in [m for m in sys.modules if m.startswith("matplotlib")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    with pytest.raises(PlotError, match=r"pip install 'gradflow\[plot\]'"):
        learning_curves(runs)
    code, _, err = cli(monkeypatch, capsys, "plot", str(runs[0]), "--out",
                       str(tmp_path / "x.png"))
    assert code == 2
    assert err == "error: plotting needs matplotlib: pip install 'gradflow[plot]'\n"


def test_seeds_grouped_into_a_mean_and_a_95_percent_band(runs, tmp_path, monkeypatch,
                                                         capsys) -> None:
    """tbptt seeds 0 and 1 are one curve: their mean, and mean ± t(0.975, 1) · s/√2; rtrl's
    single seed has a line and no band. A directory with a sweep.json stands for its runs,
    grouped by default."""
    from scipy.stats import t

    figure = learning_curves(runs, smooth=3, group_seeds=True)
    ax = figure.figure.axes[0]
    assert sorted(figure.lines) == ["rtrl/rnn/add (1 seed)", "tbptt/rnn/add (2 seeds)"]
    line = figure.lines["tbptt/rnn/add (2 seeds)"]
    a, b = (trailing_mean(gradflow.load_run(r).metrics["loss"], 3) for r in runs[:2])
    np.testing.assert_allclose(line.get_ydata(), (a + b) / 2)
    bands = [c for c in ax.collections if c.get_gid() == "band"]
    assert len(bands) == 1
    half = t.ppf(0.975, 1) * np.std(np.stack([a, b]), axis=0, ddof=1) / np.sqrt(2)
    top = bands[0].get_paths()[0].vertices[:, 1].max()
    assert top == pytest.approx(float(((a + b) / 2 + half).max()))

    sweep = tmp_path / "sweep"
    sweep.mkdir()
    for run in runs:  # a sweep directory: its runs and the manifest that lists them
        (sweep / run.name).symlink_to(run, target_is_directory=True)
    (sweep / "sweep.json").write_text(json.dumps({"runs": [{"name": r.name} for r in runs]}))
    assert sweep_runs(sweep) == [sweep / r.name for r in runs]
    out = tmp_path / "sweep.png"
    code, stdout, stderr = cli(monkeypatch, capsys, "plot", str(sweep), "--out", str(out))
    assert code == 0, stderr
    assert stdout.strip() == f"2 curve(s) plotted to {out}"
    code, stdout, _ = cli(monkeypatch, capsys, "plot", str(sweep), "--out", str(out),
                          "--no-group-seeds")
    assert code == 0 and stdout.strip() == f"3 run(s) plotted to {out}"
    with pytest.raises(PlotError, match="is not a sweep directory"):
        sweep_runs(runs[0])


def test_wall_clock_on_the_x_axis(runs) -> None:
    """--x wall: each step at the wall-clock seconds timing.jsonl gives it (seeds' mean)."""
    figure = learning_curves(runs[:1], smooth=1, x="wall")
    x, _ = next(iter(figure.lines.values())).get_data()
    timing = gradflow.load_run(runs[0]).timing
    np.testing.assert_allclose(x, np.interp(range(50, 1501, 50), timing["step"], timing["wall"]))
    assert figure.figure.axes[0].get_xlabel() == "wall-clock seconds"
    grouped = learning_curves(runs[:2], smooth=1, x="wall", group_seeds=True)
    (line,) = grouped.lines.values()
    walls = [np.interp(range(50, 1501, 50), gradflow.load_run(r).timing["step"],
                       gradflow.load_run(r).timing["wall"]) for r in runs[:2]]
    np.testing.assert_allclose(line.get_xdata(), np.mean(walls, axis=0))
    with pytest.raises(PlotError, match="x must be 'step' or 'wall'"):
        learning_curves(runs, x="time")


def test_labels_given_per_run(runs) -> None:
    figure = learning_curves(runs, labels=["a", "b", "c"], group_seeds=True)
    assert sorted(figure.lines) == ["a (2 seeds)", "c (1 seed)"]  # tbptt 0 and 1, then rtrl
    with pytest.raises(PlotError, match="2 labels for 3 runs"):
        learning_curves(runs, labels=["a", "b"])
