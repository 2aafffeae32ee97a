"""The rank-one trick shared by UORO, NoBackTrack and Kalman-NoBackTrack.

Per stream, the exact forward sensitivity G_t = ∂h_t/∂θ_rec (n × P_rec) obeys

    G_t = J_t G_{t−1} + F_t,    G_0 = 0.

These estimators keep instead one state-side vector ṽ (n) and one parameter-side vector w̃ (P_rec)
per stream, with E[ṽ_t w̃_tᵀ] = G_t. At each step the propagated old pair J_t ṽ w̃ᵀ is merged with
a fresh random rank-one pair (a, b) whose product has expectation F_t:

    ṽ ← ρ̄ J_t ṽ + a,    w̃ ← w̃ / ρ̄ + b,    ρ̄ = sqrt((|w̃| + ε) / (|J_t ṽ| + ε)).

Expanding the product, ṽw̃ᵀ = J_t ṽ w̃ᵀ + a bᵀ + ρ̄ J_t ṽ bᵀ + a w̃ᵀ / ρ̄: the two cross terms are
odd in the fresh random signs, so they vanish in expectation, and E[a bᵀ] = F_t — hence
E[ṽ_t w̃_tᵀ] = J_t E[ṽ_{t−1} w̃_{t−1}ᵀ] + F_t = G_t by induction (ρ̄ depends only on the past, never
on the signs drawn at step t). ρ̄ equalises the norms of the two factors of the old pair, which
minimises the variance the cross terms add (Ollivier, Tallec & Charpiat 2015, "rank-one trick";
Tallec & Ollivier 2017, UORO, Prop. 1). The ε keeps ρ̄ finite and non-zero when a factor is zero
(at the start, after a reset, or when every unit is saturated).

The gradient estimate of step t is then g_t = [Σ_b (δ_t,b · ṽ_b) w̃_b, ∂ℓ_t/∂θ_out]: an unbiased
estimate of ∂ℓ_t/∂θ (δ_t already carries the 1/B of the mean loss). Memory n + P_rec per stream;
cost per step one JVP in the state, one VJP and O(n + P) vector work — no n × P_rec array.

**Rank r** (option ``rank``). r independent chains (ṽ_i, w̃_i), i = 1..r, per stream, each updated
as above with its own signs, and the estimate is their mean,

    g_t = [Σ_b (1/r) Σ_i (δ_t,b · ṽ_b,i) w̃_b,i, ∂ℓ_t/∂θ_out].

Each chain is unbiased, so the mean is; the chains are independent given the trajectory, so the
variance of the recurrent part is that of one chain divided by r (what the balancing ρ's minimise
is unchanged: each chain balances its own pair). Cost and state: r times the rank-one ones. The
state gets a rank axis only when r > 1 (``v`` (B, r, n), ``w`` (B, r, P_rec), ``w_scale``
(B, r, 1)); at r = 1 it is exactly the published algorithm, same numbers and same state. The
chains are run as B·r streams of the same step (:meth:`RankOneEstimator.spread`: the forward
cache and δ_t repeated r times, δ_t / r, so that the coefficients already carry the mean): one
JVP and one VJP over B·r streams, and every fast path below — σ kept on the side, the direction
by its factors (B·r rows), replicated runs — serves the chains unchanged. The hooks (:meth:`fresh`,
the norms) then see B·r streams; :meth:`before_step` sees the step's own record.

Subclasses supply the fresh pair (:meth:`RankOneEstimator.fresh`) and, for metric-weighted versions,
the norms (:meth:`~RankOneEstimator.state_sqnorm`, :meth:`~RankOneEstimator.param_sqnorm`), a hook
run first in every step (:meth:`~RankOneEstimator.before_step`) and the post-processing of the
estimate (:meth:`~RankOneEstimator.finish`).

Hot path (per step, B streams). The parameter factor is stored as w̃ = σ w, with one scale σ per
stream (state ``w_scale``), so that dividing w̃ by ρ̄ is a change of σ, not a pass over P numbers:

    σ ← σ / ρ̄,   w += (u / σ)ᵀ F_t   (``model.vjp_accumulate``: straight into w, one pass;
                                        a BLAS rank-one update on NumPy),

and the estimate's coefficient is (δ_t,b · ṽ_b) σ_b. σ is folded back into w (w ← σ w, σ ← 1,
one pass) for the streams whose σ leaves [2⁻²⁰, 2²⁰] — so w stays within a factor 2²⁰ of w̃ —
which needs σ on the host: this is done on NumPy (where reading it is free) when P_rec exceeds
one cache block (``lazy_scale_min``). Below that, and on the other backends (a device, where a
read stalls the queue), σ stays 1 and the division is the model's ``vjp_accumulate(...,
scale=1/ρ̄)``, fused with the addition: a pass in the cache costs less than the few operations
on σ. Folding a stream never changes another's numbers (replicas stay equal to
runs made alone). The direction is returned by its factors (:class:`gradflow.FactoredDirection`)
or written into a buffer allocated once (:meth:`gradflow.Estimator.direction_buffer`). Norms of
parameter vectors are dot products (``vecdot``), and |w|² is kept from the step that computed it.
So a step reads and writes w once, reads it once for its norm, and allocates no (B, P_rec)
temporary, whatever n is.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from array_api_compat import is_numpy_array
from pydantic import Field

from gradflow import (
    JVP_STATE,
    TEMPORARY_BLOCK,
    VJP,
    Estimator,
    EstimatorOptions,
    FactoredDirection,
    PerStream,
    ShapeError,
    StepRecord,
    block_size,
    blocks,
)

Array = Any


#: the range σ is kept in (module docstring): w stays within 2²⁰ of w̃ in both directions
_SCALE_MIN, _SCALE_MAX = 2.0**-20, 2.0**20


class RankOneOptions(EstimatorOptions):
    """Options shared by the rank-one estimators."""

    eps: float = Field(
        1e-7, gt=0.0,
        description="ε added to both norms of every ratio ρ = sqrt((|w| + ε)/(|v| + ε)): keeps ρ "
        "finite and non-zero when a factor vanishes (zero state, saturated units)",
    )
    rank: int = Field(
        1, ge=1,
        description="r: independent rank-one estimates per stream, averaged: the variance "
        "divided by r at r times the cost and state (1: the algorithm as published)",
    )


def balance(xp: Any, num_sq: Array, den_sq: Array, eps: float) -> Array:
    """ρ = sqrt((sqrt(num_sq) + ε) / (sqrt(den_sq) + ε)), elementwise.

    Scaling the state factor of a rank-one pair by ρ and its parameter factor by 1/ρ makes their
    norms equal (up to ε); ``num_sq`` is the squared norm of the parameter factor, ``den_sq`` that
    of the state factor (arrays, or a Python number for a constant norm). Always finite and > 0
    for finite inputs.
    """
    return xp.sqrt((_root(xp, num_sq) + eps) / (_root(xp, den_sq) + eps))


def _root(xp: Any, x: Array | float) -> Array | float:
    return math.sqrt(x) if isinstance(x, int | float) else xp.sqrt(x)


class RankOneEstimator(Estimator):
    """Per-stream rank-one estimate ṽ w̃ᵀ of G_t (see the module docstring).

    State: ``v`` (B, n) and ``w`` (B, P_rec), both zero at the start and when a stream starts a
    new sequence (h_0 does not depend on θ), and ``w_scale`` σ (B, 1), one there: the parameter
    factor is w̃ = σ w (module docstring). With ``rank`` r > 1 each has a rank axis after the
    streams: (B, r, n), (B, r, P_rec), (B, r, 1).
    """

    requires = frozenset({JVP_STATE, VJP})
    kind = "unbiased"
    stochastic = True
    returns_factors = True
    #: σ is kept above this many numbers of P_rec (``None``: one cache block, ``block_size``)
    lazy_scale_min: int | None = None

    def __init__(self, model: Any, options: RankOneOptions) -> None:
        super().__init__(model, options)
        self.eps = float(options.eps)
        #: r, the number of independent chains per stream (module docstring)
        self.rank = int(getattr(options, "rank", 1))
        #: whether σ may be kept on the side (a subclass whose own step needs w̃ = w says no)
        self.keeps_scale = True

    def state_fields(self) -> list[PerStream]:
        return self.pair_fields()

    def pair_fields(self, reset: bool = True) -> list[PerStream]:
        """ṽ, w̃ (as w and σ) per stream, with a rank axis when r > 1."""
        r = () if self.rank == 1 else (self.rank,)
        return [PerStream("v", (*r, self.model.n_state), reset=reset),
                PerStream("w", (*r, self.layout.n_rec), reset=reset),
                PerStream("w_scale", (*r, 1), fill=1.0, reset=reset)]

    def setup_workspace(self) -> None:
        #: (δ_t,b · ṽ_b) σ_b of the last step, the coefficient of w (stream_estimates)
        self._coef: Array | None = None
        #: |w|² per stream, (B, 1), measured at the end of the last step (the next step's ρ̄
        #: needs it): only with the Euclidean norm, and forgotten when w changes otherwise
        self._w_sq: Array | None = None
        cls = type(self)
        self._euclidean = cls.param_sqnorm is RankOneEstimator.param_sqnorm
        #: the estimate is returned by its factors unless finish() post-processes it
        self._factored = cls.finish is RankOneEstimator.finish
        #: σ is kept (folded only when out of range) on NumPy above ``lazy_scale_min`` numbers
        #: of P_rec; elsewhere σ is 1 and w̃ = w is scaled in the model's pass (module docstring)
        least = block_size(self.xp) if self.lazy_scale_min is None else self.lazy_scale_min
        self._lazy = (self.keeps_scale and self.layout.n_rec > least
                      and is_numpy_array(self.xp.zeros((0,), dtype=self.dtype)))
        if not self._lazy and not bool(self.xp.all(self.state.w_scale == 1.0)):
            self.state.w *= self.state.w_scale  # a state kept with σ (a checkpoint) continues
            self.state.w_scale = self.xp.ones_like(self.state.w_scale)

    def on_reset(self, mask: Array) -> None:
        self._w_sq = None  # the rows of w̃ of the reset streams are zero now

    # -- hooks -------------------------------------------------------------------------------
    def before_step(self, record: StepRecord) -> None:
        """Called first in every step (filters update their metrics here). Default: nothing."""

    @abstractmethod
    def fresh(self, record: StepRecord) -> Fresh:
        """The fresh pair, with E[a bᵀ] = F_t per stream, built from signs drawn now, already
        balanced, and odd in those signs: see :class:`Fresh`."""

    def state_sqnorm(self, v: Array) -> Array:
        """Squared norm of state vectors (B, n) -> (B, 1). Euclidean by default."""
        return self.xp.vecdot(v, v)[..., None]

    def param_sqnorm(self, w: Array) -> Array:
        """Squared norm of parameter vectors (B, P_rec) -> (B, 1). Euclidean by default."""
        return self.xp.vecdot(w, w)[..., None]

    def finish(self, direction: Array) -> Array:
        """Post-process the full estimate ĝ_t (P,) into the returned direction (in place allowed:
        ``direction`` is the estimator's buffer). Default: ĝ_t."""
        return direction

    # -- rank r: the chains as B·r streams ---------------------------------------------------
    def spread(self, x: Array) -> Array:
        """A per-stream array (…, B, …) as (…, B·r, …): each stream's row repeated r times (the
        leading axes ``lead`` of replicated runs stay in front). ``x`` itself at r = 1."""
        r = self.rank
        if r == 1:
            return x
        xp, axis = self.xp, len(self.lead)
        shape = tuple(x.shape)
        wide = xp.broadcast_to(xp.expand_dims(x, axis=axis + 1),
                               (*shape[:axis + 1], r, *shape[axis + 1:]))
        return xp.reshape(wide, (*shape[:axis], shape[axis] * r, *shape[axis + 1:]))

    def spread_record(self, record: StepRecord) -> StepRecord:
        """The step as the B·r streams of the chains see it: every cache array and δ_t repeated
        r times, δ_t (and ∂ℓ/∂ŷ) divided by r, so that the coefficients (δ · ṽ_i) of the r chains
        of a stream sum to their mean. ``record`` itself at r = 1."""
        if self.rank == 1:
            return record
        inv = 1.0 / self.rank
        return StepRecord(theta=record.theta, cache=self.spread_cache(record.cache),
                          delta=self.spread(record.delta) * inv, grad_out=record.grad_out,
                          dy=None if record.dy is None else self.spread(record.dy) * inv)

    def spread_cache(self, cache: dict[str, Array]) -> dict[str, Array]:
        """A forward cache for the B·r streams of the chains: every array repeated r times along
        the streams' axis (``cache`` itself at r = 1)."""
        if self.rank == 1:
            return cache
        axis, batch = len(self.lead), self.batch
        out = {}
        for key, value in cache.items():
            if getattr(value, "ndim", 0) <= axis or int(value.shape[axis]) != batch:
                raise ShapeError(f"{self._owner} with rank {self.rank} runs its chains as "
                                 f"{batch}·{self.rank} streams, but model "
                                 f"{self.model.name!r}'s cache entry {key!r} (shape "
                                 f"{tuple(getattr(value, 'shape', ()))}) has no axis of the "
                                 f"{batch} streams")
            out[key] = self.spread(value)
        return out

    def _chains(self) -> SimpleNamespace:
        """v, w, w_scale of the state as (…, B·r, k) arrays (views of the state's)."""
        xp, state = self.xp, self.state
        out = SimpleNamespace()
        for name in ("v", "w", "w_scale"):
            x = getattr(state, name)
            shape = tuple(x.shape)
            setattr(out, name, xp.reshape(x, (*shape[:-3], shape[-3] * shape[-2], shape[-1])))
        return out

    def _store_chains(self, chains: SimpleNamespace) -> None:
        """The chains' arrays back into the state, with its (…, B, r, k) shapes."""
        xp, state, r = self.xp, self.state, self.rank
        for name in ("v", "w", "w_scale"):
            x = getattr(chains, name)
            shape = tuple(x.shape)
            setattr(state, name, xp.reshape(x, (*shape[:-2], shape[-2] // r, r, shape[-1])))

    # -- one step ----------------------------------------------------------------------------
    def step(self, record: StepRecord) -> Array | FactoredDirection:
        self.before_step(record)
        if self.rank == 1:
            return self._advance(record, self.state)
        chains = self._chains()
        out = self._advance(self.spread_record(record), chains)
        self._store_chains(chains)
        return out

    def _advance(self, record: StepRecord, state: Any) -> Array | FactoredDirection:
        """The rank-one update of the pairs ``state.v``, ``state.w``, ``state.w_scale`` (the
        state itself, or the chains of :meth:`_chains`) and the estimate (module docstring)."""
        xp, model = self.xp, self.model
        v_prop = model.jvp_state(record.theta, record.cache, state.v)  # J_t ṽ, a new (B, n)
        w = state.w
        w_sq = self._w_sq if self._w_sq is not None else self.param_sqnorm(w)
        if self._lazy:  # w̃ = σ w: w̃ / ρ̄ = (σ / ρ̄) w, no pass over w; then w += (u / σ)ᵀ F_t
            sigma = state.w_scale
            rho = balance(xp, (sigma * sigma) * w_sq, self.state_sqnorm(v_prop), self.eps)
            fresh = self.fresh(record)
            sigma = self._fold(w, sigma / rho)
            state.w_scale = sigma
            self._add_fresh(record, fresh, w, 1.0 / sigma, None)
        else:  # σ = 1: w ← w / ρ̄ + uᵀ F_t, one pass over w in the model
            rho = balance(xp, w_sq, self.state_sqnorm(v_prop), self.eps)
            fresh = self.fresh(record)
            self._add_fresh(record, fresh, w, None, 1.0 / rho)
        v_prop *= rho
        v_prop += fresh.a
        state.v = v_prop
        # (δ_t,b · ṽ_b) σ_b: the coefficient of w, (B,) ((R, B) with replicas)
        coef = xp.vecdot(record.delta, v_prop)
        if self._lazy:
            coef = coef * sigma[..., 0]
        self._coef = coef
        if self._factored and self.factors:  # g_rec = Σ_b coef_b w_b, formed by the consumer
            return self._factors(coef, w, record.grad_out)
        buf = self.direction_buffer()
        n_rec, streams = self.layout.n_rec, w.shape[-2]
        if streams == 1:  # g_rec = coef_0 w_0, block by block: one read and one write
            for c0, c1 in blocks(n_rec, block_size(xp)):
                buf[..., c0:c1] = w[..., 0, c0:c1] * coef[..., 0:1]
        else:  # Σ_b coef_b w_b: matrix-vector products over the streams, in column blocks
            for c0, c1 in blocks(n_rec, max(1, TEMPORARY_BLOCK // streams)):
                buf[..., c0:c1] = (coef[..., None, :] @ w[..., :, c0:c1])[..., 0, :]
        buf[..., n_rec:] = record.grad_out
        if self._factored:
            self._w_sq = self.param_sqnorm(w) if self._euclidean else None
        return self.finish(buf)

    def _add_fresh(self, record: StepRecord, fresh: Fresh, w: Array, factor: Array | None,
                   scale: Array | None) -> None:
        """w ← w · scale + b · factor in place (each (B, 1) or ``None`` for 1), b = uᵀF_t through
        the model's ``vjp_accumulate`` when the fresh pair gives its cotangent u."""
        if fresh.cotangent is not None:
            u = fresh.cotangent if factor is None else fresh.cotangent * factor
            self.model.vjp_accumulate(record.theta, record.cache, u, w, state=False, scale=scale)
            return
        if scale is not None:
            w *= scale
        w += fresh.b if factor is None else fresh.b * factor

    def _fold(self, w: Array, sigma: Array) -> Array:
        """σ folded into w where it must be (module docstring); returns the new σ. A stream
        whose σ stays is multiplied by 1: its numbers do not change."""
        xp = self.xp
        inside = (sigma > _SCALE_MIN) & (sigma < _SCALE_MAX)
        if bool(xp.all(inside)):
            return sigma
        one = xp.ones_like(sigma)
        w *= xp.where(inside, one, sigma)  # (|w|² is measured again at the end of the step)
        return xp.where(inside, sigma, one)

    def _factors(self, coef: Array, w: Array, grad_out: Array) -> FactoredDirection:
        """The estimate as [coefᵀ w, ∂ℓ/∂θ_out], with ‖coefᵀ w‖² for one stream (coef² |w|²,
        from the |w|² the next step needs anyway: one read of w)."""
        rec_sq = None
        if self._euclidean:
            w_sq = self.param_sqnorm(w)
            self._w_sq = w_sq
            if w.shape[-2] == 1:
                rec_sq = self.xp.vecdot(coef, coef) * w_sq[..., 0, 0]  # coef_0², exactly
        return FactoredDirection(coef, w, grad_out, rec_sq)

    def stream_estimates(self) -> Array | None:
        """(δ_t,b · ṽ_b) w̃_b = (δ_t,b · ṽ_b) σ_b w_b for each stream b, (B, P_rec) — with r chains
        the mean (1/r) Σ_i (δ_t,b · ṽ_b,i) w̃_b,i: the streams are independent."""
        if self._coef is None:
            return None
        if self.rank == 1:
            return self._coef[..., None] * self.state.w
        w = self.state.w  # (…, B, r, P_rec); the coefficients already carry the 1/r
        coef = self.xp.reshape(self._coef, tuple(w.shape[:-1]))
        return self.xp.sum(coef[..., None] * w, axis=-2)


@dataclass
class Fresh:
    """A fresh rank-one pair (a, b) of one step, per stream: ṽ gets ``a`` (B, n), w̃ gets b.

    b is given either as a VJP cotangent u (B, n), b = uᵀ F_t, which the model adds straight into
    w̃ (``cotangent``; the fast path), or as a dense (B, P_rec) array (``b``).
    """

    a: Array
    cotangent: Array | None = None
    b: Array | None = None
