"""Numerical helpers for the tests: central finite differences in float64."""

from __future__ import annotations

import contextlib
import types
from collections.abc import Callable, Iterator, Sequence

import numpy as np


def central_jacobian(f: Callable[[np.ndarray], np.ndarray], x: np.ndarray,
                     eps: float = 1e-6) -> np.ndarray:
    """J[i, j] = ∂f_i/∂x_j by central differences (f maps a flat vector to a flat vector)."""
    x = np.asarray(x, dtype=np.float64)
    f0 = np.asarray(f(x)).ravel()
    jac = np.zeros((f0.size, x.size))
    for j in range(x.size):
        e = np.zeros_like(x)
        e[j] = eps
        jac[:, j] = (np.asarray(f(x + e)).ravel() - np.asarray(f(x - e)).ravel()) / (2 * eps)
    return jac


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    """‖a − b‖ / max(‖b‖, tiny)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """Run the ``gradflow`` console script in this process: (exit code, stdout, stderr)."""
    import sys

    from gradflow_cli.app import main

    monkeypatch.setattr(sys, "argv", ["gradflow", *args])
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


#: a script for ``python -c``: ``gradflow train ...`` (``sys.argv[2:]``) that stands still after
#: step ``sys.argv[1]`` (holding its run directory); with NOFLOCK
#: set it also behaves as if the filesystem had no flock (ENOLCK).
PAUSED_TRAIN = r"""
import errno, fcntl, os, sys, time
from gradflow.training.trainer import Trainer
from gradflow_cli.app import main
pause, args = int(sys.argv[1]), sys.argv[2:]
if os.environ.get("NOFLOCK"):
    def flock(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")
    fcntl.flock = flock
advance = Trainer.advance
def advance_then_pause(self):
    out = advance(self)
    while self.step >= pause:
        time.sleep(60)
    return out
Trainer.advance = advance_then_pause
sys.argv = ["gradflow", *args]
main()
"""


def without(model, *primitives: str):
    """``model`` as a model that lacks ``primitives``: a fresh subclass of ``gradflow.Model``
    that does what ``model`` does by delegation and implements every optional primitive of
    ``model`` but those (capabilities are derived from the methods a class implements)."""
    import gradflow

    keep = [p for p in gradflow.OPTIONAL_PRIMITIVES if model.has(p) and p not in primitives]
    required = ("init_params", "initial_state", "forward", "readout", "readout_vjp", "units",
                "jacobian_pattern")
    if gradflow.PARAM_KRON_FACTORS in keep:
        keep.append("kron_index")

    def delegate(name: str):
        return lambda self, *args, **kwargs: getattr(self.inner, name)(*args, **kwargs)

    def init(self, options, backend) -> None:
        gradflow.Model.__init__(self, options, backend)
        self.inner = model
        self.layout, self.n_state = model.layout, model.n_state

    cls = type(f"{type(model).__name__}Without", (gradflow.Model,), {
        "name": f"{model.name}-without-{'-'.join(primitives)}", "Options": model.Options,
        "__init__": init, **{name: delegate(name) for name in (*required, *keep)}})
    return cls(model.options, model.backend)


# -- the registry, for tests that cover every estimator or every model --------------------------
#: the sizes the tests build models at (each model takes those of its options it has)
TEST_SIZES = {"n_in": 3, "n_hidden": 5, "n_out": 2}


def registered(plugin_kind: str, /, **where) -> list[str]:
    """The names of the registered plugins of ``plugin_kind`` ("estimator", "model", "task"), in
    registration order, whose classes
    have every attribute of ``where`` equal to the given value (``kind="exact"``,
    ``online=True``, ``stochastic=True``...): a new plugin is covered without editing a test."""
    import gradflow

    return [info.name for info in gradflow.get_registry().entries[plugin_kind].values()
            if all(getattr(info.cls, key) == value for key, value in where.items())]


def small_model(name: str, backend="numpy", dtype: str | None = None, **options):
    """The registered model ``name`` at the test sizes, with ``options`` on top; a size (a key
    of :data:`TEST_SIZES`) that the model's options do not have is left out."""
    import gradflow

    fields = gradflow.get_registry().get("model", name).options.model_fields
    sized = {k: v for k, v in TEST_SIZES.items() if k in fields}
    options = {k: v for k, v in options.items() if k not in TEST_SIZES or k in fields}
    try:
        return gradflow.create_model(name, backend, dtype, **{**sized, **options})
    except gradflow.PluginError:  # sizes this model does not allow (influence: n_out = 1)
        return gradflow.create_model(name, backend, dtype, **options)


def fits(estimator: str, model: str) -> bool:
    """Whether the model provides every primitive the estimator requires."""
    import gradflow

    registry = gradflow.get_registry()
    return registry.get("estimator", estimator).cls.requires <= \
        registry.get("model", model).cls.capabilities


def pairs(**where) -> list[tuple[str, str]]:
    """Every registered (estimator, model) pair that fits, estimators filtered by ``where``."""
    return [(e, m) for e in registered("estimator", **where) for m in registered("model")
            if fits(e, m)]


@contextlib.contextmanager
def plugin_registered(name: str, **classes: Sequence[type]) -> Iterator[None]:
    """Register the classes given by kind (``estimators=[...]``, ``models``, ``tasks``,
    ``loggers``) as the in-process plugin ``name`` for the duration of a ``with`` block."""
    import gradflow

    hooks = {}
    for kind, registered_classes in classes.items():
        def hook(register, _classes=tuple(registered_classes)):
            for cls in _classes:
                register(cls)
        hook.__name__ = f"gradflow_register_{kind}"
        hooks[hook.__name__] = gradflow.hookimpl(hook)
    gradflow.register_plugin(types.SimpleNamespace(**hooks), name)
    try:
        yield
    finally:
        gradflow.unregister_plugin(name)
