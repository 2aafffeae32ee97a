"""The conformance check of a model plugin (public as :mod:`gradflow.testing`).

    from gradflow.testing import check_model

    check_model(my_model)        # every primitive the model implements vs finite differences

It raises :class:`AssertionError` with a message naming the primitive, the batch size and the
measured error, and returns the measured errors when everything passes. It runs in float64: a
float32 model is rebuilt in float64 on the same backend for the check.

At a generic point (θ from ``init_params``, a state reached by a
few forward steps plus noise, random inputs) the exact Jacobians J_t = ∂f/∂h (B, n, n),
F_t = ∂f/∂θ_rec (B, n, P_rec) and ∂ŷ/∂h are computed by central differences,
(f(z + εe_j) − f(z − εe_j)) / 2ε column by column, and every primitive is compared with them:

    readout_vjp    (∂ŷ/∂h)ᵀu and Σ_b (∂ŷ_b/∂θ_out)ᵀu_b
    jvp_state      J V for V (B, n) and (B, n, K)
    vjp            Uᵀ J and Uᵀ F per stream
    vjp_accumulate acc += Uᵀ F per stream and summed over streams; Uᵀ J (derived, has a default)
    vjp_param_sqnorms  ‖Uᵀ F‖² per stream
    param_jacobian F
    state_jacobian J
    param_jacobian_accumulate  acc += F, into the first n rows of a (B, n + 1, P_rec) buffer
                   (a view, as RTRL passes it); the last row must stay as it was
    param_row_sqnorms  Σ_j F[k, j]² and Σ_j F[k, j]² m_j for a random inverse metric m > 0

and the structured primitives (docs/architecture.md §4) against the same F and J:

    units          a partition of the state and of θ_rec; F zero outside each parameter's unit
    jacobian_pattern   covers every non-zero of J
    param_jacobian_units_accumulate  acc += F on the units' coordinates (derived or the model's)
    state_jacobian_blocks  J on each unit's coordinates (derived or the model's)
    param_kron_factors + kron_index  D ⊗ x̂ placed by kron_index equals F; kron_index a
                   permutation of θ_rec
    internal_jacobian_blocks, leak   their shapes only: they separate the paths of J through
                   the recurrent weights from the rest, which J alone does not show (each
                   built-in model's own tests check their values)

with relative error ‖a − b‖ / ‖b‖ < ``rtol`` (1e-6), for each batch size (B = 1 and B = 3). It
also checks shapes, that the forward step ignores θ_out and the readout ignores θ_rec
(θ = [θ_rec | θ_out] is the contract every estimator relies on), and that the cache is a flat dict
of arrays. Cost: 2(n + P) forward steps per batch size — check small models.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from gradflow.contracts.backend import get_backend
from gradflow.contracts.model import (
    INTERNAL_JACOBIAN_BLOCKS,
    JVP_STATE,
    LEAK,
    PARAM_JACOBIAN,
    PARAM_JACOBIAN_ACCUMULATE,
    PARAM_JACOBIAN_UNITS_ACCUMULATE,
    PARAM_KRON_FACTORS,
    PARAM_ROW_SQNORMS,
    STATE_JACOBIAN,
    STATE_JACOBIAN_BLOCKS,
    VJP,
    VJP_PARAM_SQNORMS,
    Model,
    runs_replicated,
)

__all__ = ["as_float64", "check_model", "relative_error"]

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
    """Verify every primitive ``model`` implements against central finite differences in float64.

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
    if runs_replicated(model):
        _check_replicas(probe, theta_np, max(int(b) for b in batch_sizes), rng, n_tangents)
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
    _check_dense_jacobians(probe, theta, cache, J, F, rng)
    _check_structured(probe, theta, cache, J, F)
    if model.has(PARAM_ROW_SQNORMS):
        rows = model.param_row_sqnorms(theta, cache)
        probe.shape("param_row_sqnorms", rows, (B, n))
        probe.compare("param_row_sqnorms", B, rows, np.sum(F * F, axis=2))
        inv_metric = rng.uniform(0.1, 2.0, size=p_rec)
        rows = model.param_row_sqnorms(theta, cache, arr(inv_metric))
        probe.shape("param_row_sqnorms (inv_metric)", rows, (B, n))
        probe.compare("param_row_sqnorms (inv_metric)", B, rows, (F * F) @ inv_metric)


def _check_dense_jacobians(probe: _ModelProbe, theta: Array, cache: dict[str, Array],
                           J: np.ndarray, F: np.ndarray, rng: np.random.Generator) -> None:
    """``state_jacobian`` against J and ``param_jacobian_accumulate`` against F (when the model
    provides them). The accumulator is the view ``buf[:, :n, :]`` of a random (B, n + 1, P_rec)
    buffer, as RTRL passes it: F must be added to it, and nothing else of ``buf`` may change."""
    model, arr, name = probe.model, probe.arr, f"model {probe.model.name!r}"
    B, n, p_rec = F.shape
    if model.has(STATE_JACOBIAN):
        dense = model.state_jacobian(theta, cache)
        probe.shape("state_jacobian", dense, (B, n, n))
        probe.compare("state_jacobian", B, dense, J)
    if model.has(PARAM_JACOBIAN_ACCUMULATE):
        start = rng.standard_normal((B, n + 1, p_rec))
        buf = arr(start.copy())
        if model.param_jacobian_accumulate(theta, cache, buf[:, :n, :]) is not None:
            raise _fail(f"{name}: param_jacobian_accumulate", "returned a value; it adds F_t "
                        "into acc in place and returns None")
        got = probe.np(buf)
        if not np.array_equal(got[:, n, :], start[:, n, :]):
            raise _fail(f"{name}: param_jacobian_accumulate", "wrote outside acc (the row of "
                        "the buffer after the view acc = buf[:, :n, :] changed)")
        probe.compare("param_jacobian_accumulate", B, got[:, :n, :] - start[:, :n, :], F)


def _check_structured(probe: _ModelProbe, theta: Array, cache: dict[str, Array],
                      J: np.ndarray, F: np.ndarray) -> None:
    """The unit structure, the unit and block primitives and the Kronecker factors against the
    finite-difference F and J (see the module docstring)."""
    model, name = probe.model, f"model {probe.model.name!r}"
    B, n, p_rec = F.shape
    units = model.units()
    problems = units.problems(n, p_rec)
    if problems:
        raise _fail(f"{name}: units", "; ".join(problems))
    unit_of = units.param_unit()
    inside = np.zeros((n, p_rec), dtype=bool)
    for c in range(units.size):
        inside[units.coords[unit_of, c], np.arange(p_rec)] = True
    scale = max(float(np.max(np.abs(F))), 1.0) if F.size else 1.0
    outside = float(np.max(np.abs(F[:, ~inside]))) if (~inside).any() else 0.0
    if outside > probe.rtol * scale:
        raise _fail(f"{name}: units", f"a parameter moves a coordinate outside its unit "
                    f"(|F| = {outside:.3e} there)")
    pattern = np.asarray(model.jacobian_pattern(), dtype=bool)
    if pattern.shape != (n, n):
        raise _fail(f"{name}: jacobian_pattern", f"shape {pattern.shape}, expected {(n, n)}")
    missed = float(np.max(np.abs(J[:, ~pattern]))) if (~pattern).any() else 0.0
    if missed > probe.rtol * max(float(np.max(np.abs(J))), 1.0):
        raise _fail(f"{name}: jacobian_pattern", f"J has an entry of {missed:.3e} outside "
                    "the declared pattern")
    if model.has(PARAM_JACOBIAN_UNITS_ACCUMULATE):
        want = np.stack([F[:, units.coords[unit_of, c], np.arange(p_rec)]
                         for c in range(units.size)], axis=1)
        start = np.random.default_rng(1).standard_normal((B, units.size, p_rec))
        acc = probe.arr(start.copy())
        model.param_jacobian_units_accumulate(theta, cache, acc)
        probe.shape("param_jacobian_units_accumulate", acc, (B, units.size, p_rec))
        probe.compare("param_jacobian_units_accumulate", B, probe.np(acc) - start, want)
    if model.has(STATE_JACOBIAN_BLOCKS):
        blocks = model.state_jacobian_blocks(theta, cache)
        probe.shape("state_jacobian_blocks", blocks, (B, units.n_units, units.size, units.size))
        probe.compare("state_jacobian_blocks", B, blocks,
                      J[:, units.coords[:, :, None], units.coords[:, None, :]])
    if model.has(INTERNAL_JACOBIAN_BLOCKS):
        probe.shape("internal_jacobian_blocks", model.internal_jacobian_blocks(theta, cache),
                    (B, units.n_units, units.size, units.size))
    if model.has(LEAK):
        probe.shape("leak", model.leak(theta), (n,))
    if model.has(PARAM_KRON_FACTORS):
        index = np.asarray(model.kron_index())
        if index.ndim != 2 or not np.array_equal(np.sort(index.reshape(-1)), np.arange(p_rec)):
            raise _fail(f"{name}: kron_index", "must be an int array (n_rows, n_cols) holding "
                        f"every recurrent parameter 0..{p_rec - 1} once")
        D, xhat = model.param_kron_factors(theta, cache)
        probe.shape("param_kron_factors (D)", D, (B, n, index.shape[0]))
        probe.shape("param_kron_factors (x̂)", xhat, (B, index.shape[1]))
        dense = np.zeros((B, n, p_rec))
        dense[:, :, index.reshape(-1)] = np.einsum("bki,bj->bkij", probe.np(D),
                                                   probe.np(xhat)).reshape(B, n, -1)
        probe.compare("param_kron_factors", B, probe.arr(dense), F)


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
    scale = rng.uniform(0.5, 2.0, size=(B, 1))  # acc ← acc · scale + Uᵀ F_t, in one pass
    acc = arr(start.copy())
    model.vjp_accumulate(theta, cache, arr(u), acc, state=False, scale=arr(scale))
    probe.compare("vjp_accumulate (scale)", B, probe.np(acc), start * scale + want)
    if model.has(VJP_PARAM_SQNORMS):
        sq = model.vjp_param_sqnorms(theta, cache, arr(u))
        probe.shape("vjp_param_sqnorms", sq, (B,))
        probe.compare("vjp_param_sqnorms", B, sq, np.sum(want * want, axis=1))


#: replicas of the replicated-θ check, and its tolerance (the arithmetic of a replica is that of
#: the run alone: the built-in models match bit for bit)
REPLICAS = 3
REPLICA_RTOL = 1e-12


def _check_replicas(probe: _ModelProbe, theta_np: np.ndarray, B: int, rng: np.random.Generator,
                    n_tangents: int) -> None:
    """A model that declares ``replicas``: every primitive it implements, called with θ (R, P)
    and (R, B, …) arrays, equals replica by replica the call on that replica's θ and rows."""
    model, arr = probe.model, probe.arr
    name = f"model {model.name!r}"
    lay, n, m = model.layout, model.n_state, model.n_in
    thetas = [theta_np * (1.0 + 0.2 * r) for r in range(REPLICAS)]
    hs = [rng.standard_normal((B, n)) for _ in range(REPLICAS)]
    xs = [rng.standard_normal((B, m)) for _ in range(REPLICAS)]

    def stack(parts: list[np.ndarray]) -> Array:
        return arr(np.stack(parts))

    def same(primitive: str, together: Any, alone: list[Any]) -> None:
        got = probe.np(together)
        for r, want in enumerate(alone):
            err = relative_error(got[r], probe.np(want))
            probe.errors[f"{primitive} (replicas)"] = max(
                probe.errors.get(f"{primitive} (replicas)", 0.0), err)
            if err > REPLICA_RTOL:
                raise _fail(f"{name}: {primitive} with a replicated θ",
                            f"replica {r} differs from the call on its own θ by {err:.3e} "
                            f"(tolerance {REPLICA_RTOL:g})")

    theta = stack(thetas)
    h1, cache = model.forward(theta, stack(hs), stack(xs))
    alone = [model.forward(arr(t), arr(hh), arr(x)) for t, hh, x in zip(thetas, hs, xs,
                                                                          strict=True)]
    same("forward", h1, [a[0] for a in alone])
    for key in cache:
        same(f"forward (cache {key!r})", cache[key], [a[1][key] for a in alone])
    same("readout", model.readout(theta, h1),
         [model.readout(arr(t), a[0]) for t, a in zip(thetas, alone, strict=True)])
    u_y = [rng.standard_normal((B, model.n_out)) for _ in range(REPLICAS)]
    gh, g_out = model.readout_vjp(theta, h1, stack(u_y))
    singles = [model.readout_vjp(arr(t), a[0], arr(u)) for t, a, u in zip(thetas, alone, u_y,
                                                                           strict=True)]
    same("readout_vjp (state part)", gh, [s[0] for s in singles])
    same("readout_vjp (θ_out part)", g_out, [s[1] for s in singles])
    caches = [a[1] for a in alone]
    u = [rng.standard_normal((B, n)) for _ in range(REPLICAS)]

    def each(primitive: str, *args: np.ndarray | None) -> None:
        call = getattr(model, primitive)
        together = call(theta, cache, *(None if a is None else stack(a) for a in args))
        alone_out = [call(arr(t), c, *(None if a is None else arr(a[r]) for a in args))
                     for r, (t, c) in enumerate(zip(thetas, caches, strict=True))]
        if isinstance(together, tuple):
            for i, part in enumerate(together):
                same(f"{primitive} (part {i})", part, [o[i] for o in alone_out])
        else:
            same(primitive, together, alone_out)

    if model.has(JVP_STATE):
        each("jvp_state", u)
        each("jvp_state", [rng.standard_normal((B, n, n_tangents)) for _ in range(REPLICAS)])
    if model.has(VJP):
        each("vjp", u)
        start = [rng.standard_normal((B, lay.n_rec)) for _ in range(REPLICAS)]
        scale = [rng.uniform(0.5, 2.0, size=(B, 1)) for _ in range(REPLICAS)]
        acc = stack(start)
        model.vjp_accumulate(theta, cache, stack(u), acc, state=False, scale=stack(scale))
        accs = [arr(a.copy()) for a in start]
        for r in range(REPLICAS):
            model.vjp_accumulate(arr(thetas[r]), caches[r], arr(u[r]), accs[r], state=False,
                                 scale=arr(scale[r]))
        same("vjp_accumulate (per stream)", acc, accs)
        total = stack([s[0] for s in start])
        model.vjp_accumulate(theta, cache, stack(u), total, state=False)
        totals = [arr(s[0].copy()) for s in start]
        for r in range(REPLICAS):
            model.vjp_accumulate(arr(thetas[r]), caches[r], arr(u[r]), totals[r], state=False)
        same("vjp_accumulate (summed)", total, totals)
    if model.has(VJP_PARAM_SQNORMS):
        each("vjp_param_sqnorms", u)
    if model.has(PARAM_ROW_SQNORMS):
        each("param_row_sqnorms")
        each("param_row_sqnorms", [rng.uniform(0.1, 2.0, size=lay.n_rec)
                                   for _ in range(REPLICAS)])
    if model.has(PARAM_JACOBIAN):
        each("param_jacobian")
    if model.has(STATE_JACOBIAN):
        each("state_jacobian")
    if model.has(PARAM_JACOBIAN_ACCUMULATE):
        start = [rng.standard_normal((B, n, lay.n_rec)) for _ in range(REPLICAS)]
        acc = stack(start)
        model.param_jacobian_accumulate(theta, cache, acc)
        accs = [arr(a.copy()) for a in start]
        for r in range(REPLICAS):
            model.param_jacobian_accumulate(arr(thetas[r]), caches[r], accs[r])
        same("param_jacobian_accumulate", acc, accs)
