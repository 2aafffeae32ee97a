"""Scaling exponents of a cost t (per step) against a size P, from a few measured points.

Two fits of the same points (P_i, t_i), both least squares:

* the **log–log slope** s: ln t_i ≈ a + s ln P_i (ordinary least squares on the logarithms).
  Simple, but a per-step cost that does not depend on P (Python dispatch, the task, small
  kernels) flattens it: a cost t = t₀ + c·P measured where t₀ is not negligible gives s < 1.
* the **exponent k of t = t₀ + c·P^k** (t₀ ≥ 0, c ≥ 0), fitted in relative error,
  min Σ_i ((t₀ + c·P_i^k) / t_i − 1)². For a fixed k the model is linear in (t₀, c), so the fit
  profiles k over a grid (step 10⁻³ on [0.1, 4]), solves the 2 × 2 least-squares problem at
  each k (t₀ clamped at 0 when the free solution is negative) and refines around the best k on a
  grid ten times finer. k is the growth of the part of the cost that grows with P: ≈ 1 for an
  O(P) algorithm whatever its fixed overhead, ≈ 2 for RTRL's O(P²) (n²·P with P ≈ n²).
  It needs at least three distinct sizes (three parameters). When the best k is an end of the
  range, or when c·P^k is under 1 % of the time at the largest size, the points do not determine
  it (a cost that does not grow over the sizes measured: all overhead): :func:`fit_scaling` then
  reports ``exponent = None``.

Relative error weighs every size equally (a 5 % error at the smallest size counts as much as at
the largest), like the log–log fit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from gradflow.contracts.errors import ScalingError

K_RANGE = (0.1, 4.0)
_STEP = 1e-3
#: below this share of the time at the largest size, the P-dependent part c·P^k is not measured
_MIN_SHARE = 0.01


@dataclass(frozen=True)
class ScalingFit:
    """Both fits of one set of points.

    slope: log–log least-squares slope s; intercept: its a (ln t at P = 1).
    exponent: k of t = t₀ + c·P^k (``None`` with fewer than three distinct sizes, or when the
    points do not determine it);
    overhead: t₀ (same unit as t); coefficient: c. points: number of points;
    p_min, p_max: the range of P.
    """

    slope: float
    intercept: float
    exponent: float | None
    overhead: float | None
    coefficient: float | None
    points: int
    p_min: float
    p_max: float

    def to_dict(self) -> dict[str, float | int | None]:
        return asdict(self)


def _check(sizes: Sequence[float], times: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(sizes, dtype=np.float64)
    t = np.asarray(times, dtype=np.float64)
    if p.ndim != 1 or p.shape != t.shape:
        raise ScalingError(f"sizes and times must be two lists of the same length, got "
                           f"{p.shape} and {t.shape}")
    if not (np.all(np.isfinite(p)) and np.all(np.isfinite(t))):
        raise ScalingError("sizes and times must be finite")
    if np.any(p <= 0) or np.any(t <= 0):
        raise ScalingError("sizes and times must be positive to fit on a log scale")
    if np.unique(p).size < 2:
        raise ScalingError(f"a scaling exponent needs at least two different sizes, got "
                           f"{np.unique(p).size}")
    return p, t


def loglog_slope(sizes: Sequence[float], times: Sequence[float]) -> tuple[float, float]:
    """(slope, intercept) of the least-squares line through (ln P_i, ln t_i)."""
    p, t = _check(sizes, times)
    x, y = np.log(p), np.log(t)
    x0 = x - x.mean()
    slope = float(np.dot(x0, y - y.mean()) / np.dot(x0, x0))
    return slope, float(y.mean() - slope * x.mean())


def _profile(x: np.ndarray, t: np.ndarray, ks: np.ndarray) -> tuple[np.ndarray, ...]:
    """For each k: the best (t₀ ≥ 0, c ≥ 0) of t ≈ t₀ + c x^k in relative error, and the
    residual sum of squares. x = P / max P (scaled for conditioning)."""
    a = 1.0 / t  # the column of t₀ after dividing by t
    b = x[None, :] ** ks[:, None] / t[None, :]  # (K, N): the column of c
    saa = float(np.dot(a, a))
    sab, sbb = b @ a, np.sum(b * b, axis=1)
    sa1, sb1 = float(np.sum(a)), np.sum(b, axis=1)
    det = saa * sbb - sab * sab
    with np.errstate(divide="ignore", invalid="ignore"):
        t0 = (sa1 * sbb - sb1 * sab) / det
        c = (saa * sb1 - sab * sa1) / det
    # t₀ < 0 (or a singular system): the best with t₀ = 0 is c = Σb / Σb²
    bad = ~np.isfinite(t0) | ~np.isfinite(c) | (t0 < 0.0) | (c < 0.0)
    t0 = np.where(bad, 0.0, t0)
    c = np.where(bad, sb1 / sbb, c)
    resid = t0[:, None] * a[None, :] + c[:, None] * b - 1.0
    return t0, c, np.sum(resid * resid, axis=1)


def power_offset_fit(sizes: Sequence[float],
                     times: Sequence[float]) -> tuple[float, float, float]:
    """(t₀, c, k) of t = t₀ + c·P^k fitted in relative error (see the module docstring)."""
    p, t = _check(sizes, times)
    if np.unique(p).size < 3:
        raise ScalingError("the exponent of t = t0 + c·P^k needs at least three different "
                           f"sizes, got {np.unique(p).size}")
    scale = float(p.max())
    x = p / scale
    ks = np.arange(K_RANGE[0], K_RANGE[1] + _STEP / 2, _STEP)
    _, _, rss = _profile(x, t, ks)
    best = float(ks[int(np.argmin(rss))])
    fine = np.arange(max(K_RANGE[0], best - _STEP), min(K_RANGE[1], best + _STEP) + 1e-12,
                     _STEP / 10)
    t0, c, rss = _profile(x, t, fine)
    i = int(np.argmin(rss))
    k = float(fine[i])
    return float(t0[i]), float(c[i]) / scale ** k, k


def fit_scaling(sizes: Sequence[float], times: Sequence[float]) -> ScalingFit:
    """Both fits; the power-with-offset one only when there are three or more sizes."""
    slope, intercept = loglog_slope(sizes, times)
    p = np.asarray(sizes, dtype=np.float64)
    exponent = overhead = coefficient = None
    if np.unique(p).size >= 3:
        overhead, coefficient, exponent = power_offset_fit(sizes, times)
        t_max = float(np.asarray(times, dtype=np.float64)[int(np.argmax(p))])
        grows = coefficient * float(p.max()) ** exponent > _MIN_SHARE * t_max
        if not (grows and K_RANGE[0] + _STEP < exponent < K_RANGE[1] - _STEP):
            exponent = overhead = coefficient = None  # the points do not determine k
    return ScalingFit(slope=slope, intercept=intercept, exponent=exponent, overhead=overhead,
                      coefficient=coefficient, points=int(p.size), p_min=float(p.min()),
                      p_max=float(p.max()))


def rounded(x: float | None, digits: int = 3) -> float | None:
    """``x`` rounded for display (``None`` and non-finite values pass through as ``None``)."""
    if x is None or not math.isfinite(x):
        return None
    return round(x, digits)
