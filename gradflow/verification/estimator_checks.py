"""The conformance checks of an estimator plugin, by name (public as :mod:`gradflow.testing`).

    from gradflow.testing import check_estimator, estimator_checks

    check_estimator("uoro", my_model)            # every check; AssertionError naming the failure
    for check in estimator_checks("uoro", my_model):
        check.run()                              # one at a time (e.g. one pytest case each)

The checks, in the order :func:`check_estimator` runs them (the cheap structural ones first). Each
runs the estimator along a frozen random trajectory (θ fixed, B streams, standard normal inputs;
standard normal targets for ``mse``, uniform labels for ``ce``; stream 0 starts a new sequence at
step T // 2) through the one online step, in float64:

``directions``
    every direction has shape (P,) and the run's dtype, and some step or :meth:`flush` returns one.
``same_seed_same_numbers``
    two fresh runs with the same seed return the same directions, bit for bit; for a stochastic
    estimator, a run with another seed returns other numbers (the seed is used).
``reset_restores_fresh_state``
    after :meth:`~gradflow.Estimator.reset` with a mask, the masked streams' rows of every
    per-stream field declared ``reset=True`` equal a freshly started estimator's, and the other
    streams' rows are unchanged. (That nothing of the past flows across a boundary is checked by
    ``matches_reference``, whose trajectory has one.)
``direction_not_kept``
    overwriting every returned direction in place with NaN (as a caller may: the trainer clips
    it in place) leaves every later direction unchanged: the estimator keeps no reference to
    what it returned.
``snapshot_continues``
    a :meth:`~gradflow.Estimator.state_dict` taken in the middle of the trajectory, loaded into a
    fresh estimator (started with another seed), continues bit for bit as the original does, and
    so does :meth:`~gradflow.Estimator.copy`; the snapshot is not changed by the original going
    on. An estimator with state outside its declared fields, or a ``state_dict`` that misses
    some, fails here.
``replicas_match_alone`` (an estimator and a model that declare ``replicas``)
    R = 3 runs advanced together — θ (R, P), a different θ and seed per replica — return, replica
    by replica, the directions of each run made alone, and
    :meth:`~gradflow.Estimator.replica_state_dict` equals each run's
    :meth:`~gradflow.Estimator.state_dict` (relative difference ≤ 1e-12; the built-ins match bit
    for bit).
``matches_reference``
    by the estimator's declared :attr:`~gradflow.Estimator.kind` (or ``kind=`` given here):

    * ``exact``: each returned direction equals the sum of the exact gradients ∂ℓ_t/∂θ of the
      steps it accounts for (:func:`gradflow.bptt_gradients`, which cuts the backward pass at the
      sequence boundary), relative error < ``rtol``. A direction returned at step t accounts for
      the steps since the previous one, up to t (or up to t − 1 for an estimator that returns at
      the start of a step what it owed before, like BPTT at a boundary); :meth:`flush` closes the
      trajectory, and every step must be accounted for.
    * ``unbiased``: N runs with seeds seed+1, ..., seed+N. For an unbiased estimator the mean m_t
      of the N estimates satisfies E‖m_t − g_t‖² = E‖ĝ_t − g_t‖² / N, so with
      D_t = (1/N) Σ_i ‖ĝ_t,i − g_t‖² the ratios

          R   = N Σ_t ‖m_t − g_t‖² / Σ_t D_t        (the whole trajectory)
          R_t = N ‖m_t − g_t‖² / D_t                (each returned step)

      have mean ≈ 1. ‖m_t − g_t‖² is counted only beyond the rounding allowance (``rtol`` ‖g_t‖)²,
      so an estimator that is in fact exact passes. The check requires R ≤ ``bound`` (5) and every
      R_t ≤ ``step_bound`` (20): for a single Gaussian direction R_t ~ χ²₁, P(χ²₁ > 20) ≈ 8e-6 per
      step, and R averages many such terms. A bias b_t is detected once ‖b_t‖² exceeds about
      ``step_bound`` · E‖ĝ_t − g_t‖² / N at one step, or ``bound`` times that on average. Since
      R_t ≤ N always (Jensen), N must be well above the bounds (at least 5 · step_bound).
    * ``biased``: equal to its own defining formula, when the caller gives it (``expect``: a
      function of the :class:`~gradflow.verification.trajectory.FrozenTrajectory` returning the
      expected direction at each returning step); without it, not checked here (a biased
      estimator's own tests compare it with its definition).

Estimators with a preconditioner (``precondition``) are checked with it off: the raw gradient
estimate is what the references describe.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from itertools import islice
from typing import Any

import numpy as np

from gradflow.contracts.estimator import KINDS, Estimator, Kind
from gradflow.contracts.estimator import runs_replicated as estimator_replicated
from gradflow.contracts.model import Model
from gradflow.contracts.model import runs_replicated as model_replicated
from gradflow.contracts.state import PerStream
from gradflow.contracts.task import Batch
from gradflow.registry.discovery import get_registry, validate_options
from gradflow.registry.factory import check_capabilities
from gradflow.registry.guard import shape_of
from gradflow.training.step import online_step
from gradflow.verification.model_checks import as_float64, relative_error
from gradflow.verification.reference import bptt_gradients
from gradflow.verification.trajectory import FrozenTrajectory

Array = Any
#: what one run of an estimator along a trajectory returned: [(step, direction)], flush folded
#: into the last step's entry
Returned = list[tuple[int, np.ndarray]]
Expect = Callable[[FrozenTrajectory], dict[int, np.ndarray]]


@dataclass(frozen=True)
class EstimatorCheck:
    """One named check: ``run()`` returns the measured numbers or raises AssertionError."""

    name: str
    run: Callable[[], dict[str, Any]]


class _Subject:
    """What the checks share: a factory of fresh estimators and the frozen trajectory."""

    def __init__(self, make: Callable[[], Estimator], traj: FrozenTrajectory, seed: int,
                 kind: Kind) -> None:
        self.make, self.traj, self.seed, self.kind = make, traj, seed, kind
        sample = make()
        self.name = f"estimator {sample.name!r} on model {traj.model.name!r}"
        self.stochastic = bool(sample.stochastic)

    def fail(self, check: str, message: str) -> AssertionError:
        return AssertionError(f"{self.name}: check {check!r}: {message}")

    def fresh(self, seed: int | None = None) -> Estimator:
        est = self.make()
        est.precondition = False  # the raw estimate is what the references describe
        est.start(self.traj.batch, seed=self.seed if seed is None else seed)
        return est

    def drive(self, est: Estimator, first: int = 0, h: Array = None,
              mutate: bool = False) -> Returned:
        """Run the started ``est`` from step ``first`` (state ``h``; h_0 at 0) to the end:
        [(step, direction copy)], what flush returns folded into the last step. ``mutate``
        overwrites each returned direction in place with NaN after copying it."""
        traj = self.traj
        out: Returned = []
        for t, step in traj.run(est, first, h):
            if step.direction is not None:
                out.append((t, self.host(step.direction)))
                if mutate:
                    step.direction[...] = float("nan")
        pending = est.flush(traj.theta)
        if pending is not None:
            last = self.host(pending)
            if out and out[-1][0] == traj.steps - 1:
                out[-1] = (out[-1][0], out[-1][1] + last)
            else:
                out.append((traj.steps - 1, last))
        return out

    def advance(self, est: Estimator, steps: int) -> Array:
        """Run the started ``est`` over the first ``steps`` steps; return h after them."""
        h = self.traj.model.initial_state(self.traj.batch)
        for _, out in islice(self.traj.run(est), steps):
            h = out.h
        return h

    def host(self, x: Array) -> np.ndarray:
        return np.array(self.traj.model.backend.to_numpy(x), dtype=np.float64)

    def run(self, seed: int | None = None, mutate: bool = False) -> Returned:
        return self.drive(self.fresh(seed), mutate=mutate)


def _identical(a: Returned, b: Returned) -> tuple[bool, str]:
    """Whether two runs returned the same directions at the same steps, bit for bit."""
    if [t for t, _ in a] != [t for t, _ in b]:
        return False, f"directions at steps {[t for t, _ in a]} vs {[t for t, _ in b]}"
    for (t, x), (_, y) in zip(a, b, strict=True):
        if not np.array_equal(x, y, equal_nan=True):
            return False, f"step {t}: relative difference {relative_error(y, x):.3e}"
    return True, ""


# -- the checks ----------------------------------------------------------------------------------
def _directions(s: _Subject) -> dict[str, Any]:
    est = s.fresh()
    size, dtype, traj = s.traj.model.layout.size, est.dtype, s.traj
    steps: list[int] = []

    def check(what: str, d: Array) -> None:
        if shape_of(d) != (size,) or getattr(d, "dtype", None) != dtype:
            raise s.fail("directions", f"{what} returned shape {shape_of(d)}, dtype "
                         f"{getattr(d, 'dtype', None)}; the model has P = {size} parameters in "
                         f"{dtype}")

    for t, out in traj.run(est):
        if out.direction is not None:
            check(f"step {t}", out.direction)
            steps.append(t)
    pending = est.flush(traj.theta)
    if pending is not None:
        check("flush", pending)
    if not steps and pending is None:
        raise s.fail("directions", "returned nothing over the whole trajectory")
    return {"returned_steps": steps, "flushed": pending is not None}


def _segments(s: _Subject, steps: list[int], values: list[np.ndarray], cum: np.ndarray,
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
        raise s.fail("matches_reference", f"the losses of steps {covered + 1}..{T - 1} were "
                     "never returned (neither by step() nor by flush())")
    return segments


def _exact(s: _Subject, cum: np.ndarray, rtol: float) -> dict[str, Any]:
    returned = s.run()
    if not returned:
        raise s.fail("matches_reference", "returned nothing over the whole trajectory")
    steps, values = [t for t, _ in returned], [v for _, v in returned]
    worst, worst_step = 0.0, steps[0]
    for (t, first, last), value in zip(_segments(s, steps, values, cum, rtol), values,
                                       strict=True):
        want = cum[last] - (cum[first - 1] if first > 0 else 0.0)
        err = relative_error(value, want)
        if err >= worst:
            worst, worst_step = err, t
        if not err < rtol:
            raise s.fail("matches_reference", f"step {t} (accounting for steps {first}..{last}): "
                         f"relative error {err:.3e} against per-step BPTT (tolerance {rtol:g})")
    return {"kind": "exact", "max_rel_error": worst, "worst_step": worst_step,
            "returned_steps": steps}


def _unbiased(s: _Subject, cum: np.ndarray, rtol: float, n_samples: int, bound: float,
              step_bound: float) -> dict[str, Any]:
    if n_samples < 5 * step_bound:
        raise ValueError(f"n_samples ({n_samples}) must be at least 5 × step_bound "
                         f"({5 * step_bound:g}) for the test to detect a bias")
    runs = [s.run(s.seed + 1 + i) for i in range(n_samples)]
    steps = [t for t, _ in runs[0]]
    if not steps:
        raise s.fail("matches_reference", "returned nothing over the whole trajectory")
    for i, run in enumerate(runs):
        if [t for t, _ in run] != steps:
            raise s.fail("matches_reference", f"sample {i} returned directions at other steps "
                         "than sample 0")
    samples = np.stack([np.stack([v for _, v in run]) for run in runs])  # (N, S, P)
    mean = samples.mean(axis=0)
    segments = _segments(s, steps, list(mean), cum, None)
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
    report = {"kind": "unbiased", "ratio": total, "max_step_ratio": float(step_ratio[worst]),
              "worst_step": steps[worst], "n_samples": n_samples,
              "mean_rel_error": relative_error(mean, want)}
    if not step_ratio[worst] <= step_bound:
        raise s.fail("matches_reference", f"step {steps[worst]}: biased: N‖mean − exact‖² / "
                     f"mean‖estimate − exact‖² = {step_ratio[worst]:.3g} > {step_bound:g} with "
                     f"N = {n_samples} (relative error of the mean "
                     f"{relative_error(mean[worst], want[worst]):.3e})")
    if not total <= bound:
        raise s.fail("matches_reference", f"biased over the trajectory: N Σ_t‖mean_t − exact_t‖² "
                     f"/ Σ_t mean‖estimate_t − exact_t‖² = {total:.3g} > {bound:g} with "
                     f"N = {n_samples} (worst step {steps[worst]}, ratio "
                     f"{step_ratio[worst]:.3g})")
    return report


def _defined(s: _Subject, expect: Expect | None, rtol: float) -> dict[str, Any]:
    if expect is None:
        return {"kind": "biased", "checked": False}
    want = expect(s.traj)
    returned = s.run()
    if [t for t, _ in returned] != sorted(want):
        raise s.fail("matches_reference", f"returned directions at steps "
                     f"{[t for t, _ in returned]}, its definition at {sorted(want)}")
    worst = 0.0
    for t, value in returned:
        err = relative_error(value, want[t])
        worst = max(worst, err)
        if not err < rtol:
            raise s.fail("matches_reference", f"step {t}: relative error {err:.3e} against its "
                         f"defining formula (tolerance {rtol:g})")
    return {"kind": "biased", "checked": True, "max_rel_error": worst,
            "returned_steps": [t for t, _ in returned]}


def _same_seed(s: _Subject) -> dict[str, Any]:
    same, why = _identical(s.run(), s.run())
    if not same:
        raise s.fail("same_seed_same_numbers", f"two runs with seed {s.seed} differ ({why})")
    if s.stochastic and _identical(s.run(), s.run(s.seed + 7919))[0]:
        raise s.fail("same_seed_same_numbers", f"declares stochastic = True, but seeds {s.seed} "
                     f"and {s.seed + 7919} give the same numbers (its generator is not used)")
    return {"stochastic": s.stochastic}


def _reset_state(s: _Subject) -> dict[str, Any]:
    est = s.fresh()
    s.advance(est, max(1, s.traj.steps // 2))
    fields = [f for f in est.state_spec if isinstance(f, PerStream) and f.reset]
    if not fields:
        return {"per_stream_fields": []}

    def rows(e: Estimator) -> dict[str, np.ndarray]:
        return {f.name: s.host(getattr(e.state, f.name)) for f in fields}

    before, fresh = rows(est), rows(s.fresh())
    mask = np.arange(s.traj.batch) % 2 == 0  # streams 0, 2, ...
    est.reset(s.traj.model.backend.asarray(mask))
    after = rows(est)
    for name, got in after.items():
        if not np.array_equal(got[mask], fresh[name][mask]):
            raise s.fail("reset_restores_fresh_state", f"after reset, the masked streams' rows "
                         f"of {name!r} are not their initial values")
        if not np.array_equal(got[~mask], before[name][~mask], equal_nan=True):
            raise s.fail("reset_restores_fresh_state", f"reset changed the rows of {name!r} of "
                         "streams it did not mask")
    return {"per_stream_fields": [f.name for f in fields]}


def _snapshot(s: _Subject) -> dict[str, Any]:
    middle = max(1, s.traj.steps // 2 - 1)
    est = s.fresh()
    h = s.advance(est, middle)
    snap = est.state_dict()
    kept = {k: (s.host(v) if hasattr(v, "shape") else v) for k, v in snap.items()}

    def restored(what: str, make: Callable[[], Estimator]) -> Estimator:
        try:
            return make()
        except Exception as exc:
            raise s.fail("snapshot_continues", f"{what} raised {type(exc).__name__}: "
                         f"{exc}") from None

    twin = restored("copy()", est.copy)
    want = s.drive(est, middle, h)
    for k, v in snap.items():  # the original went on: the snapshot must not have moved
        if hasattr(v, "shape") and not np.array_equal(s.host(v), kept[k], equal_nan=True):
            raise s.fail("snapshot_continues", f"state_dict()[{k!r}] changed when the estimator "
                         "went on: a snapshot must hold copies")

    def load() -> Estimator:
        other = s.fresh(s.seed + 104729)
        other.load_state_dict(snap)
        return other

    loaded = restored("load_state_dict(state_dict())", load)
    for label, other in (("a fresh estimator loaded with a snapshot", loaded),
                         ("copy()", twin)):
        same, why = _identical(want, s.drive(other, middle, h))
        if not same:
            raise s.fail("snapshot_continues", f"{label} of step {middle} does not continue as "
                         f"the original ({why}): its state is not all in state_dict()")
    return {"snapshot_step": middle, "keys": sorted(snap)}


def _not_kept(s: _Subject) -> dict[str, Any]:
    same, why = _identical(s.run(), s.run(mutate=True))
    if not same:
        raise s.fail("direction_not_kept", f"overwriting the returned directions in place "
                     f"changed later ones ({why}): the estimator keeps a reference to what it "
                     "returns")
    return {}


# -- the suite -----------------------------------------------------------------------------------
#: replicas of the replicas_match_alone check, and the largest relative difference it allows
#: (the arithmetic of a replica is the run alone's, so the built-ins match bit for bit)
REPLICAS = 3
REPLICA_RTOL = 1e-12


def _replicas_match(s: _Subject) -> dict[str, Any]:
    """R runs advanced together (θ (R, P) with a different θ per replica, the estimator's
    replicated state, a seed per replica) return, replica by replica, the directions and the
    state of each run made alone."""
    traj, model = s.traj, s.traj.model
    xp = model.xp
    thetas = [traj.theta * (1.0 + 0.25 * r) for r in range(REPLICAS)]
    seeds = [s.seed + 101 * r for r in range(REPLICAS)]
    singles = []
    for seed in seeds:
        est = s.make()
        est.precondition = False
        est.start(traj.batch, seed=seed)
        singles.append(est)
    together = s.make()
    together.precondition = False
    together.start(traj.batch, replica_seeds=seeds)
    h0 = model.initial_state(traj.batch)
    hs = [h0] * REPLICAS
    theta, h0s = xp.stack(thetas), xp.stack([h0] * REPLICAS)
    h, worst = h0s, 0.0

    def compare(what: str, mine: Array, theirs: Array) -> None:
        nonlocal worst
        err = relative_error(s.host(mine), s.host(theirs))
        worst = max(worst, err)
        if err > REPLICA_RTOL:
            raise s.fail("replicas_match_alone", f"{what} differs from the run alone's by "
                         f"{err:.3e} (tolerance {REPLICA_RTOL:g})")

    for t in range(traj.steps):
        step = traj.batch_at(t)
        copies = [REPLICAS * [x] for x in (step.inputs, step.targets)]
        batch = Batch(xp.stack(copies[0]), xp.stack(copies[1]),
                      None if step.reset is None else xp.stack([step.reset] * REPLICAS))
        out = online_step(model, traj.loss, theta, h, batch, h0s, together)
        h = out.h
        for r, est in enumerate(singles):
            one = online_step(model, traj.loss, thetas[r], hs[r], step, h0, est)
            hs[r] = one.h
            if (one.direction is None) != (out.direction is None):
                raise s.fail("replicas_match_alone", f"step {t}: the replicas returned "
                             f"{'nothing' if out.direction is None else 'a direction'}, "
                             f"replica {r} alone did not")
            if one.direction is not None:
                compare(f"step {t}, replica {r}: the direction", out.direction[r, ...],
                        one.direction)
    for r, est in enumerate(singles):
        mine, theirs = together.replica_state_dict(r), est.state_dict()
        if sorted(mine) != sorted(theirs):
            raise s.fail("replicas_match_alone", f"replica {r}'s state has the entries "
                         f"{sorted(mine)}, the run alone's {sorted(theirs)}")
        for key, value in theirs.items():
            if hasattr(value, "shape"):
                compare(f"replica {r}: state {key!r}", mine[key], value)
            elif mine[key] != value:
                raise s.fail("replicas_match_alone", f"replica {r}: state {key!r} is "
                             f"{mine[key]!r}, the run alone's {value!r}")
    return {"replicas": REPLICAS, "max_rel_difference": worst}


def _factory(estimator: str | type[Estimator] | Estimator, model: Model | None,
             options: dict[str, Any] | None) -> tuple[Callable[[], Estimator], Model]:
    """A factory of fresh estimators of the same class and options, and the float64 model."""
    if isinstance(estimator, Estimator):
        if options:
            raise ValueError("options are only used when the estimator is given by name or class")
        if model is not None and model is not estimator.model:
            raise ValueError("the estimator is bound to another model than the one given")
        if estimator.backend.dtype_name != "float64":
            raise ValueError("check_estimator runs in float64: build the estimator on a float64 "
                             "model, or pass its name or class")
        cls, opts, model = type(estimator), estimator.options, estimator.model
    elif model is None:
        raise ValueError("check_estimator needs a model when the estimator is a name or a class")
    elif isinstance(estimator, str):
        info = get_registry().get("estimator", estimator)
        cls, opts = info.cls, validate_options(info, dict(options or {}))
    elif isinstance(estimator, type) and issubclass(estimator, Estimator):
        cls, opts = estimator, estimator.Options.model_validate(dict(options or {}))
    else:
        raise TypeError(f"expected an estimator name, class or instance, got {estimator!r}")
    model = as_float64(model)
    check_capabilities(cls, model)
    return (lambda: cls(model, opts)), model


def random_trajectory(model: Model, theta: Any, steps: int, batch: int, loss: str,
                      seed: int) -> FrozenTrajectory:
    """The checks' trajectory: random inputs and targets, stream 0 restarting at step T // 2."""
    rng = np.random.default_rng(seed)
    inputs = rng.standard_normal((steps, batch, model.n_in))
    if loss == "ce":
        targets: np.ndarray = rng.integers(0, max(model.n_out, 1), size=(steps, batch))
    else:
        targets = rng.standard_normal((steps, batch, model.n_out))
    resets = np.zeros((steps, batch), dtype=bool)
    if steps >= 2:
        resets[steps // 2, 0] = True
    theta = model.init_params(seed) if theta is None else theta
    return FrozenTrajectory.of(model, theta, inputs, targets, loss, resets)


def estimator_checks(estimator: str | type[Estimator] | Estimator, model: Model | None = None,
                     *, options: dict[str, Any] | None = None, theta: Any = None,
                     steps: int = 12, batch: int = 2, loss: str = "mse", seed: int = 0,
                     kind: Kind | None = None, expect: Expect | None = None,
                     rtol: float = 1e-9, n_samples: int = 500, bound: float = 5.0,
                     step_bound: float = 20.0) -> list[EstimatorCheck]:
    """The named checks of the module docstring, for ``estimator`` on ``model`` (see
    :func:`check_estimator` for the parameters)."""
    make, model = _factory(estimator, model, options)
    kind = make().kind if kind is None else kind
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    traj = random_trajectory(model, theta, steps, batch, loss, seed)
    s = _Subject(make, traj, seed, kind)
    cum: list[np.ndarray] = []

    def reference() -> dict[str, Any]:
        if kind == "biased":
            return _defined(s, expect, rtol)
        if not cum:
            exact = bptt_gradients(model, traj.theta, traj.inputs, traj.targets, traj.loss,
                                   resets=traj.resets)
            cum.append(np.cumsum(exact, axis=0))
        if kind == "exact":
            return _exact(s, cum[0], rtol)
        return _unbiased(s, cum[0], rtol, n_samples, bound, step_bound)

    checks = [  # the cheap structural checks first, the reference (N runs) last
        EstimatorCheck("directions", lambda: _directions(s)),
        EstimatorCheck("same_seed_same_numbers", lambda: _same_seed(s)),
        EstimatorCheck("reset_restores_fresh_state", lambda: _reset_state(s)),
        EstimatorCheck("direction_not_kept", lambda: _not_kept(s)),
        EstimatorCheck("snapshot_continues", lambda: _snapshot(s)),
    ]
    if estimator_replicated(make()) and model_replicated(model):
        checks.append(EstimatorCheck("replicas_match_alone", lambda: _replicas_match(s)))
    return [*checks, EstimatorCheck("matches_reference", reference)]


def check_estimator(estimator: str | type[Estimator] | Estimator, model: Model | None = None,
                    *, options: dict[str, Any] | None = None, theta: Any = None,
                    steps: int = 12, batch: int = 2, loss: str = "mse", seed: int = 0,
                    kind: Kind | None = None, expect: Expect | None = None,
                    rtol: float = 1e-9, n_samples: int = 500, bound: float = 5.0,
                    step_bound: float = 20.0) -> dict[str, Any]:
    """Run every check of the module docstring; raise the first failure's AssertionError (it
    names the estimator, the model and the check).

    Parameters
    ----------
    estimator: a registered name, an :class:`~gradflow.Estimator` subclass, or an instance
        (bound to a float64 model).
    model: the model to run on (rebuilt in float64 if needed); optional for an instance.
    options: the estimator's options (name or class only), e.g. ``{"truncation": 20}``.
    theta: parameters (default ``model.init_params(seed)``).
    steps, batch: trajectory length T and number of streams B.
    kind: check against this reference instead of the estimator's declared ``kind`` (TBPTT is
        ``exact`` when its truncation covers the trajectory).
    expect: the defining formula of a ``biased`` estimator (see the module docstring).
    rtol: tolerance of an exact estimator (relative error of each returned direction).
    n_samples, bound, step_bound: the unbiasedness test (see the module docstring).

    Returns the numbers of ``matches_reference`` (for an exact estimator ``{"kind": "exact",
    "max_rel_error", "worst_step", "returned_steps"}``, for an unbiased one ``{"kind":
    "unbiased", "ratio", "max_step_ratio", "worst_step", "n_samples", "mean_rel_error"}``) with
    ``"checks"``: each check's name and measured numbers.
    """
    checks = estimator_checks(estimator, model, options=options, theta=theta, steps=steps,
                              batch=batch, loss=loss, seed=seed, kind=kind, expect=expect,
                              rtol=rtol, n_samples=n_samples, bound=bound,
                              step_bound=step_bound)
    results = {check.name: check.run() for check in checks}
    return {**results["matches_reference"], "checks": results}

