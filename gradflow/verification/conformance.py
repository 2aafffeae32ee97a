"""The public conformance suite: check a model or an estimator plugin in a few lines.

    from gradflow.testing import check_model, check_estimator

    check_model(my_model)                       # every declared primitive vs finite differences
    check_estimator("rtrl", my_model)           # an exact estimator vs per-step BPTT
    check_estimator("uoro", my_model)           # a stochastic one: unbiased vs the exact gradient

Both raise :class:`AssertionError` with a message naming the primitive (or the step) and the
measured error, and return a dict of the measured numbers when everything passes. They run in
float64: a float32 model is rebuilt in float64 on the same backend for the check.

**Models** (:func:`check_model`). At a generic point (θ from ``init_params``, a state reached by a
few forward steps plus noise, random inputs) the exact Jacobians J_t = ∂f/∂h (B, n, n),
F_t = ∂f/∂θ_rec (B, n, P_rec) and ∂ŷ/∂h are computed by central differences,
(f(z + εe_j) − f(z − εe_j)) / 2ε column by column, and every primitive is compared with them:

    readout_vjp    (∂ŷ/∂h)ᵀu and Σ_b (∂ŷ_b/∂θ_out)ᵀu_b
    jvp_state      J V for V (B, n) and (B, n, K)
    vjp            Uᵀ J and Uᵀ F per stream
    vjp_accumulate acc += Uᵀ F per stream and summed over streams; Uᵀ J (derived, has a default)
    vjp_param_sqnorms  ‖Uᵀ F‖² per stream, where the model provides it (derived)
    param_jacobian F
    param_row_sqnorms  Σ_j F[k, j]² and Σ_j F[k, j]² m_j for a random inverse metric m > 0

with relative error ‖a − b‖ / ‖b‖ < ``rtol`` (1e-6), for each batch size (B = 1 and B = 3). It
also checks shapes, that the forward step ignores θ_out and the readout ignores θ_rec
(θ = [θ_rec | θ_out] is the contract every estimator relies on), and that the cache is a flat dict
of arrays. Cost: 2(n + P) forward steps per batch size — check small models.

**Estimators** (:func:`check_estimator`). Along a fixed random trajectory with θ frozen, the
estimator's outputs are compared with the exact per-step gradients ∂ℓ_t/∂θ
(:func:`gradflow.bptt_gradients`; RTRL computes the same numbers forward). An estimator may return
``None`` on some steps (TBPTT): a direction returned at step t is compared with the sum of the
exact gradients of the steps it accounts for — those since its previous direction, up to t (or up
to t − 1 for an estimator that returns at the start of a step, like BPTT at a boundary) — and what
:meth:`~gradflow.Estimator.flush` returns closes the trajectory; every step must be accounted for.

* exact estimators (``stochastic = False``): relative error < ``rtol`` (1e-9) at every returned
  step. TBPTT is exact when its truncation covers the trajectory (``truncation ≥ steps``).
* stochastic estimators (``stochastic = True``): N runs with seeds seed+1, ..., seed+N. For an
  unbiased estimator the mean m_t of the N estimates ĝ_t,i satisfies
  E‖m_t − g_t‖² = E‖ĝ_t − g_t‖² / N (g_t the exact gradient), so with
  D_t = (1/N) Σ_i ‖ĝ_t,i − g_t‖² the ratios

      R   = N Σ_t ‖m_t − g_t‖² / Σ_t D_t        (the whole trajectory)
      R_t = N ‖m_t − g_t‖² / D_t                (each returned step)

  have mean ≈ 1. ‖m_t − g_t‖² is counted only beyond the rounding allowance (``rtol`` ‖g_t‖)²,
  so an estimator that is in fact exact passes. The check requires R ≤ ``bound`` (5) and every
  R_t ≤ ``step_bound`` (20): for a single Gaussian direction R_t ~ χ²₁, P(χ²₁ > 20) ≈ 8e-6 per
  step, and R averages many such terms; the ratios normalise themselves when a few heavy-tailed
  samples dominate (they appear in both numerator and denominator). A bias b_t is detected once
  ‖b_t‖² exceeds about ``step_bound`` · E‖ĝ_t − g_t‖² / N at one step, or ``bound`` times that on
  average over the trajectory. Since R_t ≤ N always (Jensen), N must be well above the bounds
  (at least 5 · step_bound).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from gradflow.contracts.backend import get_backend
from gradflow.contracts.estimator import Estimator, StepRecord
from gradflow.contracts.losses import Loss, get_loss
from gradflow.contracts.model import (
    JVP_STATE,
    PARAM_JACOBIAN,
    PARAM_ROW_SQNORMS,
    VJP,
    Model,
)
from gradflow.registry.discovery import get_registry, validate_options
from gradflow.registry.factory import check_capabilities
from gradflow.verification.reference import bptt_gradients
from gradflow.verification.trajectory import frozen_step, preconditioning

__all__ = ["as_float64", "check_estimator", "check_model", "relative_error"]

Array = Any


# -- helpers -------------------------------------------------------------------------------------
def relative_error(a: Any, b: Any) -> float:
    """‖a − b‖ / ‖b‖ (Frobenius norms, float64); 0 when both are empty or zero."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    diff = float(np.linalg.norm(a - b))
    scale = float(np.linalg.norm(b))
    if diff == 0.0:
        return 0.0
    return diff / scale if scale > 0.0 else float("inf")


def as_float64(model: Model) -> Model:
    """``model`` itself if it runs in float64, else the same model rebuilt on a float64 backend."""
    if model.backend.dtype_name == "float64":
        return model
    backend = get_backend(model.backend.name, "float64", model.backend.seed)
    return type(model)(model.options, backend)


def _fail(what: str, message: str) -> AssertionError:
    return AssertionError(f"{what}: {message}")


# -- models --------------------------------------------------------------------------------------
class _ModelProbe:
    """Evaluates a float64 model at NumPy points and compares arrays with a tolerance."""

    def __init__(self, model: Model, rtol: float) -> None:
        self.model = model
        self.backend = model.backend
        self.rtol = rtol
        self.errors: dict[str, float] = {}

    def np(self, value: Array) -> np.ndarray:
        return np.array(self.backend.to_numpy(value), dtype=np.float64)

    def arr(self, value: np.ndarray) -> Array:
        return self.backend.asarray(np.ascontiguousarray(value))

    def shape(self, primitive: str, value: Array, expected: tuple[int, ...]) -> None:
        got = tuple(int(s) for s in value.shape)
        if got != expected:
            raise _fail(f"model {self.model.name!r}: {primitive}",
                        f"returned shape {got}, expected {expected}")

    def compare(self, primitive: str, batch: int, got: Array, want: np.ndarray) -> None:
        got_np = self.np(got)
        err = relative_error(got_np, want)
        key = primitive
        self.errors[key] = max(self.errors.get(key, 0.0), err)
        if not err < self.rtol:
            raise _fail(
                f"model {self.model.name!r}: {primitive} (B={batch})",
                f"relative error {err:.3e} against central finite differences "
                f"(tolerance {self.rtol:g}; ‖reference‖ = {np.linalg.norm(want):.3e})",
            )


def _central(fun: Callable[[np.ndarray], np.ndarray], x: np.ndarray, eps: float,
             perturb: Callable[[np.ndarray, int, float], np.ndarray], count: int) -> list:
    """Central differences of ``fun`` along ``count`` coordinates perturbed by ``perturb``."""
    cols = []
    for j in range(count):
        plus = fun(perturb(x, j, eps))
        minus = fun(perturb(x, j, -eps))
        cols.append((plus - minus) / (2.0 * eps))
    return cols


def _perturb_flat(x: np.ndarray, j: int, step: float) -> np.ndarray:
    y = x.copy()
    y[j] += step
    return y


def _perturb_column(x: np.ndarray, j: int, step: float) -> np.ndarray:
    y = x.copy()
    y[:, j] += step
    return y


def check_model(model: Model, *, theta: Any = None, batch_sizes: tuple[int, ...] = (1, 3),
                seed: int = 0, eps: float = 1e-6, rtol: float = 1e-6, n_tangents: int = 3,
                warmup: int = 3, state_noise: float = 0.1) -> dict[str, float]:
    """Verify every primitive ``model`` declares against central finite differences in float64.

    Parameters
    ----------
    model: the model to check (rebuilt in float64 if it is float32).
    theta: the parameters to check at (default ``model.init_params(seed)``).
    batch_sizes: the numbers of streams B to check with.
    seed: seeds θ (when not given), the inputs, the state noise and the random probes.
    eps: finite-difference step. rtol: the relative-error tolerance.
    n_tangents: K for the (B, n, K) tangent of ``jvp_state``.
    warmup: forward steps from ``initial_state`` (random inputs) before the check;
    state_noise: standard deviation of the Gaussian noise then added to that state.

    Returns ``{primitive: largest relative error over the batch sizes}``; raises
    :class:`AssertionError` naming the primitive, the batch size and the error otherwise.
    """
    model = as_float64(model)
    probe = _ModelProbe(model, rtol)
    rng = np.random.default_rng(seed)
    theta_np = probe.np(model.init_params(seed) if theta is None else model.backend.asarray(theta))
    if theta_np.shape != (model.layout.size,):
        raise _fail(f"model {model.name!r}: init_params",
                    f"θ has shape {theta_np.shape}, the layout needs ({model.layout.size},)")
    for batch in batch_sizes:
        _check_model_at(probe, theta_np, int(batch), rng, eps, n_tangents, warmup, state_noise)
    return probe.errors


def _check_model_at(probe: _ModelProbe, theta_np: np.ndarray, B: int, rng: np.random.Generator,
                    eps: float, n_tangents: int, warmup: int, state_noise: float) -> None:
    model, arr, to_np = probe.model, probe.arr, probe.np
    name = f"model {model.name!r}"
    lay = model.layout
    n, m, k, p_rec, p_out = model.n_state, model.n_in, model.n_out, lay.n_rec, lay.n_out
    theta = arr(theta_np)

    # a generic point: a reachable state, moved off any symmetry by noise
    h = model.initial_state(B)
    probe.shape("initial_state", h, (B, n))
    for _ in range(warmup):
        h, _ = model.forward(theta, h, arr(rng.standard_normal((B, m))))
    h_np = to_np(h) + state_noise * rng.standard_normal((B, n))
    x_np = rng.standard_normal((B, m))
    h, x = arr(h_np), arr(x_np)

    h1, cache = model.forward(theta, h, x)
    probe.shape("forward", h1, (B, n))
    if not isinstance(cache, dict) or not all(hasattr(v, "shape") for v in cache.values()):
        raise _fail(f"{name}: forward", "the cache must be a flat dict of arrays")
    yhat = model.readout(theta, h1)
    probe.shape("readout", yhat, (B, k))

    # the θ = [θ_rec | θ_out] split: f ignores θ_out, g ignores θ_rec
    if p_out:
        moved = theta_np.copy()
        moved[lay.out] += rng.standard_normal(p_out)
        err = relative_error(to_np(model.forward(arr(moved), h, x)[0]), to_np(h1))
        if err > 0.0:
            raise _fail(f"{name}: forward", f"depends on θ_out (relative change {err:.3e}); "
                        "the recurrent step may only use θ_rec = θ[:P_rec]")
    if p_rec:
        moved = theta_np.copy()
        moved[lay.rec] += rng.standard_normal(p_rec)
        err = relative_error(to_np(model.readout(arr(moved), h1)), to_np(yhat))
        if err > 0.0:
            raise _fail(f"{name}: readout", f"depends on θ_rec (relative change {err:.3e}); "
                        "the readout may only use θ_out = θ[P_rec:]")

    # finite-difference Jacobians
    def step_h(hh: np.ndarray) -> np.ndarray:
        return to_np(model.forward(theta, arr(hh), x)[0])

    def step_theta(tt: np.ndarray) -> np.ndarray:
        return to_np(model.forward(arr(tt), h, x)[0])

    J = np.stack(_central(step_h, h_np, eps, _perturb_column, n), axis=2)  # (B, n, n)
    F = np.zeros((B, n, p_rec))
    if p_rec:
        F = np.stack(_central(step_theta, theta_np, eps, _perturb_flat, p_rec), axis=2)
    h1_np = to_np(h1)

    def read_h(hh: np.ndarray) -> np.ndarray:
        return to_np(model.readout(theta, arr(hh)))

    Jy = np.stack(_central(read_h, h1_np, eps, _perturb_column, n), axis=2)  # (B, k, n)
    u_y = rng.standard_normal((B, k))

    def read_theta(tt: np.ndarray) -> np.ndarray:
        return np.asarray(np.sum(u_y * to_np(model.readout(arr(tt), h1))))

    g_out_fd = np.zeros(p_out)
    if p_out:
        cols = _central(read_theta, theta_np, eps, _perturb_flat, lay.size)
        g_out_fd = np.asarray(cols[p_rec:], dtype=np.float64).reshape(p_out)

    # readout VJP
    gh, g_out = model.readout_vjp(theta, h1, arr(u_y))
    probe.shape("readout_vjp (state part)", gh, (B, n))
    probe.shape("readout_vjp (θ_out part)", g_out, (p_out,))
    probe.compare("readout_vjp (state part)", B, gh, np.einsum("bk,bkn->bn", u_y, Jy))
    if p_out:
        probe.compare("readout_vjp (θ_out part)", B, g_out, g_out_fd)

    if model.has(JVP_STATE):
        v = rng.standard_normal((B, n))
        out = model.jvp_state(theta, cache, arr(v))
        probe.shape("jvp_state (B, n)", out, (B, n))
        probe.compare("jvp_state (B, n)", B, out, np.einsum("bij,bj->bi", J, v))
        vk = rng.standard_normal((B, n, n_tangents))
        out = model.jvp_state(theta, cache, arr(vk))
        probe.shape("jvp_state (B, n, K)", out, (B, n, n_tangents))
        probe.compare("jvp_state (B, n, K)", B, out, J @ vk)
    if model.has(VJP):
        u = rng.standard_normal((B, n))
        u_h, g_theta = model.vjp(theta, cache, arr(u))
        probe.shape("vjp (state part)", u_h, (B, n))
        probe.shape("vjp (θ_rec part)", g_theta, (B, p_rec))
        probe.compare("vjp (state part)", B, u_h, np.einsum("bi,bij->bj", u, J))
        probe.compare("vjp (θ_rec part)", B, g_theta, np.einsum("bi,bij->bj", u, F))
        _check_derived_vjps(probe, theta, cache, u, J, F, rng)
    if model.has(PARAM_JACOBIAN):
        dense = model.param_jacobian(theta, cache)
        probe.shape("param_jacobian", dense, (B, n, p_rec))
        probe.compare("param_jacobian", B, dense, F)
    if model.has(PARAM_ROW_SQNORMS):
        rows = model.param_row_sqnorms(theta, cache)
        probe.shape("param_row_sqnorms", rows, (B, n))
        probe.compare("param_row_sqnorms", B, rows, np.sum(F * F, axis=2))
        inv_metric = rng.uniform(0.1, 2.0, size=p_rec)
        rows = model.param_row_sqnorms(theta, cache, arr(inv_metric))
        probe.shape("param_row_sqnorms (inv_metric)", rows, (B, n))
        probe.compare("param_row_sqnorms (inv_metric)", B, rows, (F * F) @ inv_metric)


def _check_derived_vjps(probe: _ModelProbe, theta: Array, cache: dict[str, Array],
                        u: np.ndarray, J: np.ndarray, F: np.ndarray,
                        rng: np.random.Generator) -> None:
    """``vjp_accumulate`` (per stream and summed, with and without the state part) and
    ``vjp_param_sqnorms`` (when the model provides it) against the same Jacobians."""
    model, arr = probe.model, probe.arr
    B, p_rec = F.shape[0], F.shape[2]
    want = np.einsum("bi,bij->bj", u, F)
    start = rng.standard_normal((B, p_rec))
    acc = arr(start.copy())  # accumulated in place
    u_h = model.vjp_accumulate(theta, cache, arr(u), acc)
    probe.shape("vjp_accumulate (state part)", u_h, (B, F.shape[1]))
    probe.compare("vjp_accumulate (state part)", B, u_h, np.einsum("bi,bij->bj", u, J))
    probe.shape("vjp_accumulate (B, P_rec)", acc, (B, p_rec))
    probe.compare("vjp_accumulate (B, P_rec)", B, probe.np(acc) - start, want)
    total = arr(start[0].copy())
    if model.vjp_accumulate(theta, cache, arr(u), total, state=False) is not None:
        raise _fail(f"model {model.name!r}: vjp_accumulate",
                    "returned a state part although state=False")
    probe.shape("vjp_accumulate (P_rec,)", total, (p_rec,))
    probe.compare("vjp_accumulate (P_rec,)", B, probe.np(total) - start[0], want.sum(axis=0))
    sq = model.vjp_param_sqnorms(theta, cache, arr(u))
    if sq is not None:
        probe.shape("vjp_param_sqnorms", sq, (B,))
        probe.compare("vjp_param_sqnorms", B, sq, np.sum(want * want, axis=1))


# -- estimators ----------------------------------------------------------------------------------
def _make_estimator(estimator: str | type[Estimator] | Estimator, model: Model | None,
                    options: dict[str, Any] | None) -> Estimator:
    if isinstance(estimator, Estimator):
        if options:
            raise ValueError("options are only used when the estimator is given by name or class")
        if model is not None and model is not estimator.model:
            raise ValueError("the estimator is bound to another model than the one given")
        if estimator.backend.dtype_name != "float64":
            raise ValueError("check_estimator runs in float64: build the estimator on a float64 "
                             "model, or pass its name or class")
        return estimator
    if model is None:
        raise ValueError("check_estimator needs a model when the estimator is a name or a class")
    model = as_float64(model)
    if isinstance(estimator, str):
        info = get_registry().get("estimator", estimator)
        cls, opts = info.cls, validate_options(info, dict(options or {}))
    elif isinstance(estimator, type) and issubclass(estimator, Estimator):
        cls, opts = estimator, estimator.Options.model_validate(dict(options or {}))
    else:
        raise TypeError(f"expected an estimator name, class or instance, got {estimator!r}")
    check_capabilities(cls, model)
    return cls(model, opts)


def _trajectory(model: Model, steps: int, batch: int, loss: Loss,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    inputs = rng.standard_normal((steps, batch, model.n_in))
    if loss.name == "ce":
        targets = rng.integers(0, max(model.n_out, 1), size=(steps, batch))
    else:
        targets = rng.standard_normal((steps, batch, model.n_out))
    return inputs, targets


def _records(model: Model, theta: Array, inputs: np.ndarray, targets: np.ndarray,
             loss: Loss) -> list[StepRecord]:
    """The step records of the frozen trajectory (forward, loss and readout VJP, once)."""
    backend = model.backend
    x = backend.asarray(inputs)
    y = backend.asarray(targets) if targets.dtype.kind == "f" else backend.asarray(
        targets.astype(np.int64))
    h = model.initial_state(int(inputs.shape[1]))
    records = []
    for t in range(inputs.shape[0]):
        h, record = frozen_step(model, theta, h, x[t, ...], y[t, ...], loss)
        records.append(record)
    return records


def _run(estimator: Estimator, records: list[StepRecord], batch: int,
         seed: int) -> list[tuple[int, np.ndarray]]:
    """[(step, direction)] for the steps where the estimator returned something (flush last).

    An estimator with a preconditioner (attribute ``precondition``, see
    :class:`~gradflow.Estimator`) runs with it off: the raw gradient estimate is what is checked.
    """
    backend = estimator.backend
    with preconditioning(estimator, False):  # check the raw estimate, not a preconditioned step
        estimator.start(batch, seed=seed)
        out: list[tuple[int, np.ndarray]] = []
        for t, record in enumerate(records):
            direction = estimator.step(record)
            if direction is not None:
                out.append((t, np.array(backend.to_numpy(direction), dtype=np.float64)))
        pending = estimator.flush(records[-1].theta)
    if pending is not None:
        last = np.array(backend.to_numpy(pending), dtype=np.float64)
        if out and out[-1][0] == len(records) - 1:
            out[-1] = (out[-1][0], out[-1][1] + last)
        else:
            out.append((len(records) - 1, last))
    return out


def _segments(steps: list[int], values: list[np.ndarray], cum: np.ndarray, what: str,
              lag_rtol: float | None) -> list[tuple[int, int, int]]:
    """For each direction returned at step t: (t, first, last), the steps it accounts for.

    ``last`` is t, or t − 1 when ``lag_rtol`` is given and the running sum of the returned
    directions matches the exact running sum up to t − 1 within ``lag_rtol`` but not up to t
    (an estimator that returns at the start of step t what it owes for the steps before, like
    BPTT at a sequence boundary). ``cum[s]`` is the exact Σ_{r ≤ s} ∂ℓ_r/∂θ.
    """
    segments = []
    covered = -1
    running = np.zeros(cum.shape[1])
    for t, value in zip(steps, values, strict=True):
        running = running + value
        last = t
        if lag_rtol is not None and t - 1 > covered:
            if (relative_error(running, cum[t]) >= lag_rtol
                    and relative_error(running, cum[t - 1]) < lag_rtol):
                last = t - 1
        segments.append((t, covered + 1, last))
        covered = last
    T = cum.shape[0]
    if covered != T - 1:
        raise _fail(what, f"the losses of steps {covered + 1}..{T - 1} were never returned "
                    "(neither by step() nor by flush())")
    return segments


def check_estimator(estimator: str | type[Estimator] | Estimator, model: Model | None = None,
                    *, options: dict[str, Any] | None = None, theta: Any = None,
                    steps: int = 12, batch: int = 2, loss: str = "mse", seed: int = 0,
                    rtol: float = 1e-9, n_samples: int = 500, bound: float = 5.0,
                    step_bound: float = 20.0) -> dict[str, Any]:
    """Verify an estimator against the exact per-step gradients on a frozen random trajectory.

    Parameters
    ----------
    estimator: a registered name, an :class:`~gradflow.Estimator` subclass, or an instance
        (bound to a float64 model).
    model: the model to run on (rebuilt in float64 if needed); optional for an instance.
    options: the estimator's options (name or class only), e.g. ``{"truncation": 20}``.
    theta: parameters (default ``model.init_params(seed)``).
    steps, batch: trajectory length T and number of streams B (random Gaussian inputs and, for
        ``mse``, targets; random labels for ``ce``).
    rtol: tolerance of an exact estimator (relative error of each returned direction).
    n_samples, bound, step_bound: the unbiasedness test of a stochastic estimator (see the
        module docstring).

    Returns the measured numbers: for an exact estimator ``{"kind": "exact", "max_rel_error",
    "worst_step", "returned_steps"}``; for a stochastic one ``{"kind": "stochastic", "ratio",
    "max_step_ratio", "worst_step", "n_samples", "mean_rel_error"}``. Raises
    :class:`AssertionError` naming the estimator, the model, the step and the error otherwise.
    """
    est = _make_estimator(estimator, model, options)
    model = est.model
    what = f"estimator {est.name!r} on model {model.name!r}"
    loss_fn = get_loss(loss)
    rng = np.random.default_rng(seed)
    backend = model.backend
    theta_arr = backend.asarray(model.init_params(seed) if theta is None else theta)
    inputs, targets = _trajectory(model, steps, batch, loss_fn, rng)
    exact = bptt_gradients(model, theta_arr, inputs, targets, loss_fn)
    cum = np.cumsum(exact, axis=0)
    records = _records(model, theta_arr, inputs, targets, loss_fn)

    if not getattr(est, "stochastic", False):
        returned = _run(est, records, batch, seed)
        if not returned:
            raise _fail(what, "returned nothing over the whole trajectory")
        t_list = [t for t, _ in returned]
        values = [v for _, v in returned]
        worst, worst_step = 0.0, t_list[0]
        for (t, first, last), value in zip(_segments(t_list, values, cum, what, rtol), values,
                                           strict=True):
            want = cum[last] - (cum[first - 1] if first > 0 else 0.0)
            err = relative_error(value, want)
            if err >= worst:
                worst, worst_step = err, t
            if not err < rtol:
                raise _fail(what, f"step {t} (accounting for steps {first}..{last}): relative "
                            f"error {err:.3e} against per-step BPTT (tolerance {rtol:g})")
        return {"kind": "exact", "max_rel_error": worst, "worst_step": worst_step,
                "returned_steps": t_list}

    if n_samples < 5 * step_bound:
        raise ValueError(f"n_samples ({n_samples}) must be at least 5 × step_bound "
                         f"({5 * step_bound:g}) for the test to detect a bias")
    runs = [_run(est, records, batch, seed + 1 + i) for i in range(n_samples)]
    t_list = [t for t, _ in runs[0]]
    if not t_list:
        raise _fail(what, "returned nothing over the whole trajectory")
    for i, run in enumerate(runs):
        if [t for t, _ in run] != t_list:
            raise _fail(what, f"sample {i} returned directions at other steps than sample 0")
    samples = np.stack([np.stack([v for _, v in run]) for run in runs])  # (N, S, P)
    mean = samples.mean(axis=0)
    segments = _segments(t_list, list(mean), cum, what, None)
    want = np.stack([cum[last] - (cum[first - 1] if first > 0 else 0.0)
                     for _, first, last in segments])  # (S, P)
    # ‖m_t − g_t‖² beyond rounding (what an exact estimator would be allowed), and D_t / N
    floor = (rtol * np.linalg.norm(want, axis=1)) ** 2
    num = np.maximum(np.sum((mean - want) ** 2, axis=1) - floor, 0.0)
    den = np.mean(np.sum((samples - want[None]) ** 2, axis=2), axis=0) / n_samples
    with np.errstate(divide="ignore", invalid="ignore"):
        step_ratio = np.where(den > 0, num / np.where(den > 0, den, 1.0),
                              np.where(num > 0, np.inf, 0.0))
    total = float(num.sum() / den.sum()) if den.sum() > 0 else (0.0 if num.sum() == 0 else
                                                                float("inf"))
    worst = int(np.argmax(step_ratio))
    report = {"kind": "stochastic", "ratio": total, "max_step_ratio": float(step_ratio[worst]),
              "worst_step": t_list[worst], "n_samples": n_samples,
              "mean_rel_error": relative_error(mean, want)}
    if not step_ratio[worst] <= step_bound:
        raise _fail(what, f"step {t_list[worst]}: biased: N‖mean − exact‖² / "
                    f"mean‖estimate − exact‖² = {step_ratio[worst]:.3g} > {step_bound:g} with "
                    f"N = {n_samples} (relative error of the mean "
                    f"{relative_error(mean[worst], want[worst]):.3e})")
    if not total <= bound:
        raise _fail(what, f"biased over the trajectory: N Σ_t‖mean_t − exact_t‖² / "
                    f"Σ_t mean‖estimate_t − exact_t‖² = {total:.3g} > {bound:g} with "
                    f"N = {n_samples} (worst step {t_list[worst]}, ratio "
                    f"{step_ratio[worst]:.3g})")
    return report
