"""Unbiased Online Recurrent Optimization (Tallec & Ollivier, arXiv 1702.05043).

UORO keeps a rank-one estimate ṽ w̃ᵀ of G_t = ∂h_t/∂θ_rec per stream and writes the whole fresh
term F_t as one random rank-one product: for signs ν ∈ {±1}^n, E[ν νᵀ] = I, so

    F_t = E[ν (νᵀ F_t)] = E[ν δθᵀ],    δθ = νᵀ F_t   (one vector-Jacobian product).

Each step (per stream, ε = 1e-7 by default):

    ṽ' = J_t ṽ,   ν ~ uniform {±1}^n,   δθ = νᵀ F_t,
    ρ0 = sqrt((|w̃| + ε) / (|ṽ'| + ε)),   ρ1 = sqrt((|δθ| + ε) / (|ν| + ε)),
    ṽ ← ρ0 ṽ' + ρ1 ν,   w̃ ← w̃ / ρ0 + δθ / ρ1,
    g_t = [Σ_b (δ_t,b · ṽ_b) w̃_b, ∂ℓ_t/∂θ_out].

ρ1 depends on ν only through |νᵀF_t|, which is even in ν, so the fresh pair (ρ1 ν, δθ/ρ1) is odd in
ν and its product is ν νᵀF_t: the cross terms vanish in expectation and E[ṽ w̃ᵀ] = G_t
(see :mod:`gradflow_plugins.estimators.rank_one`). Cost per step: one JVP, one VJP, O(n + P);
memory n + P_rec per stream.

By linearity δθ/ρ1 = (ν/ρ1)ᵀF_t: when the model gives |νᵀF_t| cheaply (it implements
``vjp_param_sqnorms``: O(n) for ``rnn``), ρ1 comes first and the VJP with the cotangent ν/ρ1 is
added straight into w̃; otherwise δθ is formed once, measured and scaled.

**Rank r** (option ``rank``): r independent chains per stream, each with its own ν, averaged:
variance ÷ r at r times the cost (:mod:`~gradflow_plugins.estimators.rank_one`).

**Truncation window** (option ``window`` = T): backpropagation through time inside windows of T
steps, the rank-one estimate carried across windows (UORO combined with truncated BPTT; the
construction below is derived here so that it stays unbiased and is UORO at T = 1). The steps of
a run are cut into windows of T consecutive steps from its start; let a = 0, T, 2T, … be the
first step of a window and e = a + T − 1 its last.

* At step a, after the forward step, the pair is advanced over the transitions since the last
  advance (steps a − T + 1 … a; at the start, step 0 alone) as one UORO step of the T-step map
  h_{a−T} ↦ h_a, with J̃ = J_a ⋯ J_{a−T+1} and F̃ = Σ_s J_a ⋯ J_{s+1} F_s:

      ṽ' = J̃ ṽ (T JVPs),  ν ~ uniform {±1}^n,  δθ = νᵀF̃ (ν backpropagated through the T
      transitions: T VJPs),  ρ0, ρ1 as above,  ṽ ← ρ0 ṽ' + ρ1 ν,  w̃ ← w̃/ρ0 + δθ/ρ1,

  so that E[ṽ w̃ᵀ] = J̃ G_{a−T} + F̃ = G_a (the argument above, with J̃ and F̃ for J_t and F_t).
* At step e the direction is returned, for the losses ℓ_a … ℓ_e of the window:

      u_e = δ_e,  u_{s−1} = u_sᵀJ_s + δ_{s−1}  (s = e … a + 1),   u_a: the cotangent at h_a,
      g = [Σ_{s=a+1}^{e} u_sᵀF_s + Σ_b (u_a,b · ṽ_b) w̃_b,  Σ_{s=a}^{e} ∂ℓ_s/∂θ_out],

  truncated BPTT of the window's losses back to h_a, exact, plus the pair's estimate of what
  flows further back (Σ_s δ_sᵀ J_s ⋯ J_{a+1} G_a = u_aᵀG_a). With θ frozen E[g] is the gradient
  of those T losses: the estimate is unbiased for the losses it accounts for. Nothing is
  returned at the other steps (``update_interval`` = T).
* :meth:`~UORO.flush` returns the losses still pending (a window the data ended in), the same
  formula over the steps it has; the pair is not advanced there (its next advance is the next
  window's first step, if the run goes on, and then the losses after the flush are the pending
  ones).

T = 1 is UORO: every step is the first and the last of its window, the pair is advanced over
the step's transition and g = [Σ_b (δ_t,b · ṽ_b) w̃_b, ∂ℓ_t/∂θ_out] — the default runs the O(P)
code above, which gives the numbers of the published algorithm (the window code at T = 1 gives
them too, to rounding: a test checks it).

A stream that starts a new sequence inside a window keeps its pair until the next advance (the
losses of the window before the boundary still need G_a); the boundary is recorded with its step
(like TBPTT's) and stops the backward pass of the window's losses there, the tangent ṽ (zeroed
before J_s) and the backpropagation of ν; at the advance the stream's old pair is dropped (its
J̃ṽ is exactly zero) and it starts from the fresh pair, as UORO does after a reset. Nothing
crosses the boundary.

Cost per window: T JVPs and 2T VJPs (the losses' and ν's backward passes), so per step one JVP,
two VJPs and O(P) vector work; memory: the pair plus the window's T forward caches and δ's, and
one (P_rec,) accumulator. With T > 1 the estimate is returned as an array (no factors, w̃ kept
unscaled, σ = 1), replicated runs are supported (every array with the replica axis in front), and
:meth:`~UORO.stream_estimates` is ``None`` (the BPTT part is summed over the streams).
"""

from __future__ import annotations

from typing import Any, ClassVar

from gradflow_plugins.estimators.rank_one import (
    Fresh,
    RankOneEstimator,
    RankOneOptions,
    balance,
)
from pydantic import Field

from gradflow import (
    VJP_PARAM_SQNORMS,
    FactoredDirection,
    PerStream,
    Scalar,
    Shared,
    StepRecord,
    Window,
)

Array = Any


class UOROOptions(RankOneOptions):
    """Options of ``uoro``: ε, the rank r and the truncation window T."""

    window: int = Field(
        1, ge=1,
        description="T: backpropagation through time inside windows of T steps, the rank-one "
        "estimate carried across windows; a direction every T steps, for the T losses of the "
        "window (1: UORO as published)",
    )


class UORO(RankOneEstimator):
    name = "uoro"
    description = "UORO (Tallec & Ollivier 2017): unbiased rank-one estimate of ∂h/∂θ, O(P)/step"
    #: variance control (docs/architecture.md §9; measured in docs/estimators/README.md): raw
    #: rank-one estimates wreck the recurrent weights unless their norm is clipped
    optimizer_defaults: ClassVar[dict[str, Any]] = {
        "name": "sgd", "lr": 0.01, "schedule": "constant", "clip_rec": 0.1,
    }
    Options = UOROOptions
    replicas = True
    #: the rank-one step (T = 1) returns its factors when asked; with T > 1 it returns arrays
    returns_factors = True

    def __init__(self, model: Any, options: UOROOptions) -> None:
        super().__init__(model, options)
        self._cheap_norms = model.has(VJP_PARAM_SQNORMS)
        #: T, the truncation window
        self.window = int(getattr(options, "window", 1))
        #: whether the window code runs (T > 1): the module docstring's second algorithm
        self._windowed = self.window > 1
        self.keeps_scale = not self._windowed

    @property
    def update_interval(self) -> int:
        """T: a direction at the last step of every window."""
        return self.window

    # -- the published step (T = 1) ----------------------------------------------------------
    def fresh(self, record: StepRecord) -> Fresh:
        xp, model = self.xp, self.model
        shape = tuple(record.delta.shape)  # (B, n), (R, B, n) with replicas; B·r with r chains
        n = shape[-1]
        nu = self.rng.signs(shape, self.dtype)
        if self._cheap_norms:
            sq = model.vjp_param_sqnorms(record.theta, record.cache, nu)  # |νᵀ F_t|², (B,)
            rho1 = balance(xp, sq[..., None], float(n), self.eps)
            return Fresh(a=rho1 * nu, cotangent=nu / rho1)
        _, dtheta = model.vjp(record.theta, record.cache, nu)  # νᵀ F_t, (B, P_rec)
        rho1 = balance(xp, xp.vecdot(dtheta, dtheta)[..., None], float(n), self.eps)
        dtheta /= rho1
        return Fresh(a=rho1 * nu, b=dtheta)

    # -- the truncation window (T > 1) -------------------------------------------------------
    def state_fields(self) -> list[Any]:
        """T = 1: the pair (:class:`RankOneEstimator`). T > 1: the pair, kept across sequence
        boundaries (the boundary cuts the passes instead: module docstring), the steps since the
        last advance ``hist`` (each entry the step's δ, its forward cache and, after a boundary,
        the mask ``cut``), the pending readout gradient ``g_out``, the number of pending losses,
        the number of steps run and the boundary seen since the last step."""
        if not self._windowed:
            return super().state_fields()
        return [*self.pair_fields(reset=False),
                Window("hist", self.window),
                Shared("g_out", (self.layout.n_out,)),
                Scalar("pending", 0),
                Scalar("steps", 0),
                PerStream("cut", (), fill=False, reset=False, dtype="bool"),
                Scalar("cut_pending", False)]

    def setup_workspace(self) -> None:
        super().setup_workspace()
        if self._windowed:
            #: Σ u_sᵀF_s of the window's backward pass, summed over the streams
            self._g_rec = self.xp.zeros((*self.lead, self.layout.n_rec), dtype=self.dtype)

    def on_reset(self, mask: Array) -> None:
        super().on_reset(mask)
        if self._windowed:  # the next recorded step carries the boundary
            state = self.state
            state.cut = ((state.cut | mask) if state.cut_pending
                         else self.xp.asarray(mask, copy=True))
            state.cut_pending = True

    def step(self, record: StepRecord) -> Array | FactoredDirection | None:
        if not self._windowed:
            return super().step(record)
        state, window = self.state, self.window
        entry = {"delta": record.delta, "cache": record.cache}
        if state.cut_pending:
            entry["cut"] = state.cut
            state.cut_pending = False
        if state.steps % window == 0:  # the first step of a window: advance the pair to h_a
            self._advance_pair(record.theta, [*list(state.hist)[1:], entry])
            state.hist.clear()
        state.hist.append(entry)
        state.steps += 1
        state.g_out += record.grad_out
        state.pending += 1
        if state.steps % window == 0:  # its last step: the direction of the window's losses
            return self._window_direction(record.theta)
        return None

    def flush(self, theta: Array) -> Array | None:
        """The losses of an unfinished window (T > 1), or ``None``."""
        if not self._windowed or self.state.pending == 0:
            return None
        return self._window_direction(theta)

    def stream_estimates(self) -> Array | None:
        return None if self._windowed else super().stream_estimates()

    def _pair(self) -> Any:
        """The pair's arrays, (…, B·r, k) with r chains (views of the state)."""
        return self.state if self.rank == 1 else self._chains()

    def _advance_pair(self, theta: Array, transitions: list[dict[str, Any]]) -> None:
        """One UORO step of the map h_{a−T} ↦ h_a over ``transitions`` (oldest first): ṽ' = J̃ṽ
        forward, ν backpropagated to δθ = νᵀF̃, then the balanced merge (module docstring). A
        boundary in a transition zeroes the tangent before its J_s and stops ν after its VJP."""
        xp, model, r = self.xp, self.model, self.rank
        pair = self._pair()
        zero = xp.zeros((), dtype=self.dtype)
        caches = [self.spread_cache(e["cache"]) for e in transitions]
        cuts = [None if e.get("cut") is None else self.spread(e["cut"]) for e in transitions]
        v = pair.v
        for cache, cut in zip(caches, cuts, strict=True):
            if cut is not None:
                v = xp.where(cut[..., None], zero, v)
            v = model.jvp_state(theta, cache, v)  # J_s ṽ
        nu = self.rng.signs(tuple(v.shape), self.dtype)
        dtheta = xp.zeros(tuple(pair.w.shape), dtype=self.dtype)
        u = nu
        for k in range(len(caches) - 1, -1, -1):  # δθ += u_sᵀF_s, u_{s−1} = u_sᵀJ_s
            u = model.vjp_accumulate(theta, caches[k], u, dtheta, state=k > 0)
            if k > 0 and cuts[k] is not None:
                u = xp.where(cuts[k][..., None], zero, u)
        w = pair.w
        cut_any = None
        for cut in cuts:
            if cut is not None:
                cut_any = cut if cut_any is None else cut_any | cut
        if cut_any is not None:  # a restarted stream forgets its old pair (J̃ṽ is 0 there)
            w = xp.where(cut_any[..., None], zero, w)
        rho0 = balance(xp, xp.vecdot(w, w)[..., None], xp.vecdot(v, v)[..., None], self.eps)
        rho1 = balance(xp, xp.vecdot(dtheta, dtheta)[..., None], float(v.shape[-1]), self.eps)
        pair.v = rho0 * v + rho1 * nu
        dtheta /= rho1
        pair.w = w / rho0 + dtheta
        if r > 1:
            self._store_chains(pair)

    def _window_direction(self, theta: Array) -> Array:
        """Truncated BPTT of the pending losses back to the window's first step, plus the pair's
        (u_a · ṽ) w̃ for what flows further back (module docstring); resets the pending sums."""
        xp, model, state = self.xp, self.model, self.state
        steps = list(state.hist)
        first_loss = len(steps) - state.pending
        zero = xp.zeros((), dtype=self.dtype)
        u = xp.zeros_like(steps[-1]["delta"])
        g = self._g_rec
        g[...] = 0.0
        for i in range(len(steps) - 1, -1, -1):
            entry = steps[i]
            if i >= first_loss:
                u = u + entry["delta"]
            if i == 0:  # u = u_a, the cotangent at h_a: the pair stands for ∂h_a/∂θ
                break
            u = model.vjp_accumulate(theta, entry["cache"], u, g)  # g += Σ_b u_bᵀF_s
            cut = entry.get("cut")
            if cut is not None:
                u = xp.where(cut[..., None], zero, u)
        pair = self._pair()
        coef = xp.vecdot(self.spread(u), pair.v)  # (u_a,b · ṽ_b,i), (…, B·r)
        if self.rank > 1:
            coef = coef * (1.0 / self.rank)
        g += (coef[..., None, :] @ pair.w)[..., 0, :]
        direction = self.fill_direction(g, state.g_out)
        state.g_out[...] = 0.0
        state.pending = 0
        return direction
