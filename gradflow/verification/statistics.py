"""Bias, variance and cosine of a gradient estimator against an exact reference.

On a frozen trajectory (θ fixed, random inputs and targets, one stream) the reference estimator
(RTRL by default) gives the exact per-step gradients g_t = ∂ℓ_t/∂θ; the checked estimator is run N
times with independent seeds, giving samples ĝ_t^{(i)}. For each step t, and for the sum over the
trajectory Σ_t g_t, :func:`estimator_statistics` reports

* relative bias ‖m − g‖/‖g‖ with m = (1/N) Σ_i ĝ^{(i)}, and its standard error
  sqrt(tr Ĉov(ĝ)/N)/‖g‖ — the size ‖m − g‖/‖g‖ has for an unbiased estimator;
* cos(m, g) and the mean over samples of cos(ĝ^{(i)}, g);
* relative mean square error E‖ĝ − g‖²/‖g‖² (``rel_var``: the variance when unbiased).

:func:`verdict` turns the row of the sum into one statement — exact, consistent with unbiased,
or biased — and compares it with the kind the estimator declares.

Sampling: an estimator whose streams are independent (it implements
:meth:`Estimator.stream_estimates`) is run on many copies of the stream in one batch, each copy a
sample; any other estimator — a third-party one included — is run once per sample with
:func:`~gradflow.frozen_gradients`. Either way preconditioning is off (the raw estimate is
checked). A deterministic estimator is run once.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from gradflow.contracts.errors import GradflowError
from gradflow.contracts.estimator import Estimator
from gradflow.contracts.losses import Loss, get_loss
from gradflow.contracts.model import Model
from gradflow.contracts.random import CounterRNG
from gradflow.registry.discovery import exact_reference
from gradflow.registry.factory import create_estimator
from gradflow.registry.guard import check_direction
from gradflow.verification.trajectory import (
    FrozenTrajectory,
    as_targets,
    frozen_gradients,
    preconditioning,
)

Array = Any
Progress = Callable[[int, int], None]

#: Largest number of copies of the stream run in one batch by the fast sampler.
MAX_STREAMS = 4096


@dataclass
class CheckRow:
    """Statistics of one step's estimate (``step`` = 1..T) or of the sum (``step`` = None).

    Relative quantities are ``nan`` when the reference is zero.
    """

    step: int | None
    ref_norm: float
    rel_bias: float
    rel_bias_se: float
    cos_mean: float
    mean_cos: float
    rel_var: float
    #: ‖m − g‖² and the mean of ‖ĝ − g‖² (absolute, for tests and bounds)
    bias_sq: float
    mse: float


@dataclass
class CheckResult:
    """What :func:`estimator_statistics` measured: one row per step, then the row of the sum."""

    model: str
    estimator: str
    reference: str
    samples: int
    steps: int
    seed: int
    theta_scale: float
    backend: str
    dtype: str
    loss: str
    sampler: str
    rows: list[CheckRow] = field(default_factory=list)

    @property
    def total(self) -> CheckRow:
        """The row of the sum over the trajectory."""
        return self.rows[-1]

    def to_dict(self) -> dict[str, Any]:
        """Plain data, with ``None`` in place of ``nan`` (valid JSON)."""
        out = asdict(self)
        out["rows"] = [{k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                        for k, v in row.items()} for row in out["rows"]]
        return out


class _Moments:
    """Running sums over samples, for R rows of references (T steps and the sum)."""

    def __init__(self, ref: np.ndarray) -> None:
        self.ref = np.asarray(ref, dtype=np.float64)
        self.ref_norm = np.linalg.norm(self.ref, axis=1)
        rows = self.ref.shape[0]
        self.count = np.zeros(rows, dtype=np.int64)
        self.total = np.zeros_like(self.ref)
        self.err_sq = np.zeros(rows)
        self.cos = np.zeros(rows)

    def add(self, row: int, samples: np.ndarray) -> None:
        """Add samples (S, P) of row ``row``."""
        g = np.asarray(samples, dtype=np.float64)
        ref = self.ref[row]
        self.count[row] += g.shape[0]
        self.total[row] += g.sum(axis=0)
        self.err_sq[row] += float(np.sum((g - ref) ** 2))
        self.cos[row] += float(np.sum(_cosines(g, ref)))

    def rows(self) -> list[CheckRow]:
        out = []
        steps = self.ref.shape[0] - 1
        for r in range(self.ref.shape[0]):
            n = int(self.count[r])
            ref, norm = self.ref[r], float(self.ref_norm[r])
            mean = self.total[r] / n
            bias_sq = float(np.sum((mean - ref) ** 2))
            mse = float(self.err_sq[r] / n)
            spread = max(float(self.err_sq[r]) - n * bias_sq, 0.0) / (n - 1) if n > 1 else 0.0
            scale = 1.0 / norm if norm > 0 else math.nan
            out.append(CheckRow(
                step=r + 1 if r < steps else None,
                ref_norm=norm,
                rel_bias=math.sqrt(bias_sq) * scale,
                rel_bias_se=math.sqrt(spread / n) * scale,
                cos_mean=float(_cosines(mean[None, :], ref)[0]) if norm > 0 else math.nan,
                mean_cos=float(self.cos[r] / n) if norm > 0 else math.nan,
                rel_var=mse * scale * scale,
                bias_sq=bias_sq,
                mse=mse,
            ))
        return out


def _cosines(g: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """cos(g_i, ref) for each row of g (0 where a norm is zero)."""
    norms = np.linalg.norm(g, axis=1) * np.linalg.norm(ref)
    dots = g @ ref
    out = np.zeros(g.shape[0])
    ok = norms > 0
    out[ok] = dots[ok] / norms[ok]
    return out


def _host_xp() -> Any:
    import array_api_compat.numpy as xp

    return xp


def sample_seeds(seed: int, count: int) -> list[int]:
    """``count`` estimator seeds derived from ``seed`` (kept apart from the seeds of θ and data)."""
    base = CounterRNG(_host_xp(), seed).spawn(0x5EED).seed
    return [(base + i) % (1 << 64) for i in range(count)]


def sample_statistics(model: Model, estimator: Estimator, theta: Any, inputs: Any, targets: Any,
                      reference: np.ndarray, samples: int, seed: int = 0,
                      loss: str | Loss = "mse", resets: Any = None,
                      max_streams: int | None = None,
                      progress: Progress | None = None) -> tuple[list[CheckRow], str]:
    """Draw ``samples`` estimates along one stream's trajectory and compare them with
    ``reference`` (T, P), the exact per-step gradients.

    ``inputs`` (T, 1, m) and ``targets`` (T, 1) or (T, 1, k) describe one stream; ``resets``, if
    given, is (T, 1) boolean. ``max_streams`` (default :data:`MAX_STREAMS`) caps the copies run
    in one batch. Returns the rows (T steps, then the sum) and the sampler used: ``"streams"``
    (copies of the stream in one batch) or ``"runs"`` (one run per sample).
    """
    inputs = np.asarray(model.backend.to_numpy(model.backend.asarray(inputs)))
    if inputs.ndim != 3 or inputs.shape[1] != 1:
        raise GradflowError(f"sample_statistics needs one stream: inputs (T, 1, m), got "
                            f"{inputs.shape}")
    T = inputs.shape[0]
    reference = np.asarray(reference, dtype=np.float64)
    if reference.shape != (T, model.layout.size):
        raise GradflowError(f"reference must have shape ({T}, {model.layout.size}), got "
                            f"{reference.shape}")
    if samples < 1:
        raise GradflowError(f"samples must be at least 1, got {samples}")
    moments = _Moments(np.concatenate([reference, reference.sum(axis=0, keepdims=True)]))
    with preconditioning(estimator, False):
        done = _sample_streams(model, estimator, theta, inputs, targets, loss, resets, moments,
                               samples, seed, max_streams or MAX_STREAMS, progress)
        sampler = "streams"
        if not done:
            sampler = "runs"
            seeds = sample_seeds(seed, samples)
            for i, s in enumerate(seeds):
                rows = frozen_gradients(model, estimator, theta, inputs, targets, loss=loss,
                                        seed=s, resets=resets)
                for t in range(T):
                    moments.add(t, rows[t][None, :])
                moments.add(T, rows.sum(axis=0, keepdims=True))
                if progress is not None:
                    progress(i + 1, samples)
    return moments.rows(), sampler


def _sample_streams(model: Model, estimator: Estimator, theta: Any, inputs: np.ndarray,
                    targets: Any, loss: str | Loss, resets: Any, moments: _Moments,
                    samples: int, seed: int, max_streams: int,
                    progress: Progress | None) -> bool:
    """The fast sampler: copies of the stream as streams of one batch. False if the estimator
    does not give per-stream estimates (nothing is accumulated then)."""
    backend = model.backend
    xp = backend.xp
    T = inputs.shape[0]
    n_rec, n_out = model.layout.n_rec, model.layout.n_out
    tgt = np.asarray(backend.to_numpy(as_targets(model, targets)))
    cuts = None if resets is None else np.asarray(resets, dtype=bool).reshape(T, 1)
    chunks = math.ceil(samples / max_streams)
    seeds = sample_seeds(seed, chunks)
    done = 0
    for c in range(chunks):
        B = min(max_streams, samples - done)
        traj = FrozenTrajectory.of(model, theta, np.repeat(inputs, B, axis=1),
                                   np.repeat(tgt, B, axis=1), loss,
                                   None if cuts is None else np.repeat(cuts, B, axis=1))
        estimator.start(B, seed=seeds[c])
        total = xp.zeros((B, model.layout.size), dtype=backend.dtype)
        for t, out in traj.run(estimator):
            direction = out.direction
            if direction is not None:
                check_direction(estimator, direction, model.layout.size)
            per_stream = estimator.stream_estimates()
            if direction is None or per_stream is None:
                if c == 0 and t == 0:
                    return False
                raise GradflowError(f"estimator {estimator.name!r} stopped giving per-stream "
                                    "estimates in the middle of a trajectory")
            # each copy's δ carries 1/B: B × its share is one stream's estimate; the readout part
            # is exact and the same for every copy (the sum over copies of grad_out / B)
            out_part = xp.broadcast_to(direction[n_rec:][None, :], (B, n_out))
            g = xp.concat([float(B) * per_stream, out_part], axis=1)
            total = total + g
            moments.add(t, backend.to_numpy(g))
        moments.add(T, backend.to_numpy(total))
        done += B
        if progress is not None:
            progress(done, samples)
    return True


def random_trajectory(model: Model, steps: int, seed: int = 0,
                      loss: str = "mse") -> tuple[Array, np.ndarray, np.ndarray]:
    """θ = ``model.init_params(seed)`` and one stream of ``steps`` random inputs (standard
    normal) and targets (standard normal for ``mse``, uniform class labels for ``ce``)."""
    if steps < 1:
        raise GradflowError(f"steps must be at least 1, got {steps}")
    rng = CounterRNG(_host_xp(), seed).spawn(0xDA7A)
    inputs = np.asarray(rng.normal((steps, 1, model.n_in), np.float64))
    if loss == "ce":
        labels = np.asarray(rng.bits((steps, 1))) % np.uint64(model.n_out)
        targets = labels.astype(np.int64)
    else:
        targets = np.asarray(rng.normal((steps, 1, model.n_out), np.float64))
    return model.init_params(seed), inputs, targets


def default_reference() -> str:
    """The exact per-step reference (:func:`gradflow.registry.discovery.exact_reference`: RTRL),
    with the message of the checks when there is none."""
    try:
        return exact_reference()
    except GradflowError:
        raise GradflowError("no registered estimator is exact and online: name a --reference") \
            from None


#: Relative bias ‖m − g‖/‖g‖ of the sum below which a deterministic estimate is called exact,
#: by dtype: far above the rounding differences of two exact algorithms computed in that
#: precision (~1e-13 in float64, ~1e-6 in float32 on these trajectories), far below the bias of
#: any real approximation (truncated BPTT's is of order 1e-2 to 1).
EXACT_TOLERANCE: dict[str, float] = {"float64": 1e-9, "float32": 1e-4}
#: Bias of the sum, in standard errors, above which a stochastic estimator is called biased.
Z_THRESHOLD = 4.0


@dataclass(frozen=True)
class Verdict:
    """What a check's row of the sum says about the estimator's bias (see :func:`verdict`)."""

    #: "exact", "unbiased" (consistent with it), "biased" or "undetermined" (the reference is 0)
    measured: str
    #: the kind the estimator declares ("exact", "unbiased" or "biased")
    declared: str
    #: whether the measurement contradicts the declared kind
    contradicts: bool
    #: relative bias ‖m − g‖/‖g‖ of the sum
    rel_bias: float | None
    #: that bias in standard errors (stochastic estimators; None for a deterministic one)
    z: float | None
    #: EXACT_TOLERANCE (deterministic) or Z_THRESHOLD (stochastic) the number was compared with
    threshold: float
    samples: int
    #: the statement, e.g. "consistent with unbiased (|bias| = 0.98 standard errors over 1,000
    #: samples, below 4); as declared (unbiased)"
    text: str

    def to_dict(self) -> dict[str, Any]:
        """Plain data (``None`` in place of a non-finite number: valid JSON)."""
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                for k, v in asdict(self).items()}


def verdict(result: CheckResult, kind: str) -> Verdict:
    """Judge the bias of the estimator of ``result`` from its row of the sum, and compare it with
    ``kind``, the kind the estimator declares ("exact", "unbiased" or "biased").

    The rule:

    * **deterministic** (one sample: :func:`estimator_statistics` draws one for a deterministic
      estimator; or estimates with no spread at all): *exact* when the relative bias of the sum
      ‖m − g‖/‖g‖ is below :data:`EXACT_TOLERANCE` of the result's dtype (1e-9 in float64),
      else *biased*;
    * **stochastic**: the bias in units of its standard error, z = rel_bias / rel_bias_se. For an
      unbiased estimator and many samples, m − g is nearly normal with covariance Cov(ĝ)/N, so
      z² is a weighted sum of independent χ²₁ variables with weights summing to 1 (mean 1). For
      thresholds above about 1.54 the tail of such a sum is largest when one weight carries
      everything (Székely & Bakirov 2003), so P(z ≥ 4) ≤ P(χ²₁ ≥ 16) ≈ 6·10⁻⁵: *consistent
      with unbiased* when z < :data:`Z_THRESHOLD` = 4 (a false alarm in fewer than one check in
      10,000, with room for the heavier tails of a finite N), else *biased*. A bias is detected
      once it exceeds about 4 standard errors, which shrink as 1/sqrt(N): more samples find
      smaller biases;
    * *undetermined* when the reference gradient of the sum is zero (no relative bias).

    The measurement contradicts the declaration when an estimator declared exact is not measured
    exact, or one declared unbiased is measured biased. A biased estimator may show no bias in
    a particular setting (truncated BPTT with a window longer than the trajectory): that is
    said, but is no contradiction.
    """
    total = result.total
    rel, se = total.rel_bias, total.rel_bias_se
    tolerance = EXACT_TOLERANCE.get(result.dtype, max(EXACT_TOLERANCE.values()))
    n = result.samples
    z: float | None = None
    if not math.isfinite(rel):
        measured, threshold = "undetermined", math.nan
        said = "undetermined (the reference gradient of the sum is zero)"
    elif n == 1 or se == 0:
        threshold = tolerance
        if rel < tolerance:
            measured = "exact"
            said = f"exact (relative bias of the sum {rel:.3g}, below {tolerance:g})"
        else:
            measured = "biased"
            said = f"biased (relative bias of the sum {rel:.3g})"
    else:
        threshold = Z_THRESHOLD
        z = rel / se
        if z < Z_THRESHOLD:
            measured = "unbiased"
            said = (f"consistent with unbiased (|bias| = {z:.2f} standard errors over {n:,} "
                    f"samples, below {Z_THRESHOLD:g})")
        else:
            measured = "biased"
            said = (f"biased (z = {z:.3g}: the bias of the sum is {z:.3g} standard errors over "
                    f"{n:,} samples, above {Z_THRESHOLD:g}; relative bias {rel:.3g})")
    allowed = {"exact": ("exact",), "unbiased": ("exact", "unbiased")}.get(
        kind, ("exact", "unbiased", "biased"))
    contradicts = measured != "undetermined" and measured not in allowed
    if contradicts:
        why = " (its estimates vary from sample to sample)" if measured == "unbiased" else ""
        said += f"; this contradicts its declared kind {kind!r}{why}"
    elif measured == "undetermined":
        said += f"; declared {kind}"
    elif kind == "biased" and measured != "biased":
        said += "; declared biased: no bias is measurable in this setting"
    else:
        said += f"; as declared ({kind})"
    return Verdict(measured=measured, declared=kind, contradicts=contradicts,
                   rel_bias=rel if math.isfinite(rel) else None, z=z, threshold=threshold,
                   samples=n, text=said)


def estimator_statistics(model: Model, estimator: str | Estimator,
                         reference: str | Estimator | None = None, samples: int = 1000,
                         steps: int = 20, seed: int = 0, loss: str = "mse",
                         theta_scale: float = 1.0,
                         estimator_options: dict[str, Any] | None = None,
                         reference_options: dict[str, Any] | None = None,
                         progress: Progress | None = None) -> CheckResult:
    """Bias, variance and cosines of ``estimator`` against ``reference`` on a frozen random
    trajectory of ``steps`` steps (see the module docstring).

    ``estimator`` and ``reference`` are registered names (with ``*_options``) or instances; the
    reference must be deterministic (default: :func:`default_reference`, RTRL). Per-step rows are
    meaningful against a per-step reference; the row of the sum against any exact one.
    ``theta_scale`` multiplies θ (values above 1 drive tanh units into saturation).
    """
    if samples < 1:
        raise GradflowError(f"samples must be at least 1, got {samples}")
    get_loss(loss)
    est = estimator if isinstance(estimator, Estimator) else create_estimator(
        estimator, model, **(estimator_options or {}))
    ref_est = reference if isinstance(reference, Estimator) else create_estimator(
        default_reference() if reference is None else reference, model,
        **(reference_options or {}))
    if ref_est.stochastic:
        raise GradflowError(f"reference {ref_est.name!r} is a random estimator; use an exact one "
                            f"({default_reference()})")
    theta, inputs, targets = random_trajectory(model, steps, seed, loss)
    if theta_scale != 1.0:
        theta = theta * float(theta_scale)
    ref_rows = frozen_gradients(model, ref_est, theta, inputs, targets, loss=loss)
    drawn = samples if est.stochastic else 1
    rows, sampler = sample_statistics(model, est, theta, inputs, targets, ref_rows, drawn,
                                      seed=seed, loss=loss, progress=progress)
    backend = model.backend
    return CheckResult(model=model.name, estimator=est.name, reference=ref_est.name,
                       samples=drawn, steps=steps, seed=seed, theta_scale=float(theta_scale),
                       backend=backend.name,
                       dtype=backend.dtype_name, loss=loss, sampler=sampler, rows=rows)
