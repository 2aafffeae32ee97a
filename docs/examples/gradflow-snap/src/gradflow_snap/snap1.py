"""SnAp-1: RTRL restricted to the one-step sparsity pattern of the influence matrix.

Menick, Elsen, Evci, Osindero, Simonyan & Graves, "Practical real time recurrent learning with a
sparse approximation", ICLR 2021 (arXiv:2006.07232, 2020).

RTRL carries the full sensitivity G_t = ∂h_t/∂θ_rec (n × P_rec per stream),

    G_t = J_t G_{t−1} + F_t,    J_t = ∂h_t/∂h_{t−1},   F_t = ∂h_t/∂θ_rec,

at a cost of O(n² P) per step. SnAp-n keeps only the entries of G_t that can be non-zero after
n steps; SnAp-1 keeps the pattern Ω of F_t itself — for each parameter θ_j, its influence on the
state coordinates S_j it feeds directly (for the rnn and gru cells the one unit whose row holds
θ_j; for the lstm the pair (h_k, c_k) of its unit; for the influence model every coordinate):

    G_t[k, j] = Σ_{k' ∈ S_j} J_t[k, k'] G_{t−1}[k', j] + F_t[k, j]     for k ∈ S_j,
    G_t[k, j] = 0                                                      otherwise,
    g_t = [Σ_b δ_t,bᵀ G_t,b, ∂ℓ_t/∂θ_out].

It is exact (equal to RTRL) whenever J_t never moves influence out of the pattern: J_t[k, k'] = 0
for k' ∈ S_j, k ∉ S_j — e.g. an rnn with a diagonal W_hh, a gru or lstm with W_hh = 0, a model
where every S_j is the whole state (the influence model), and always at the first step
(G_1 = F_1). Otherwise it is a deterministic, biased approximation (it drops the influence that
flows between units), which the paper shows trains well.

**How it is computed with the public model primitives only.**

* The pattern Ω is structural: at start it is read from the rows of F at two random points
  (θ = init_params(0) + noise, random states and inputs), one VJP per state coordinate
  (Uᵀ F with U = e_k gives row k). Assumption: a parameter's set S_j does not depend on θ, h, x
  (true of the built-in models; an entry that vanishes at a random point vanishes structurally).
* The state coordinates are coloured so that no parameter feeds two coordinates of one colour
  (greedy colouring of the graph joining the coordinates of every S_j; C colours: 1 for rnn and
  gru, 2 for lstm, n for influence). G_t is stored as (B, C, P_rec): G[b, c, j] = G_t[k_c(j), j]
  with k_c(j) the coordinate of colour c in S_j. Memory O(C P) per stream, as in the paper.
* F_t on Ω: C VJPs, U = the indicator of colour c: (Uᵀ F_t)_j = F_t[k_c(j), j] exactly, because
  S_j has at most one coordinate of colour c.
* J_t on the pattern (the entries J_t[k, k'] for k, k' ∈ S_j — the diagonal for rnn and gru,
  the 2 × 2 block of each unit for lstm): the primitives give J_t only through products, and
  reading even its diagonal needs n JVPs when J_t is dense (no colouring of a dense matrix does
  better), so J_t (B, n, n) is formed with one batched ``jvp_state`` on the identity and the
  needed entries are gathered. That costs O(n³) per step for the built-in cells: more than the
  O(P) = O(n²) of a model-specific SnAp-1, far less than RTRL's O(n⁴).

Cost per step: one JVP with n tangents, C VJPs, O(C² P) gathers and products.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gradflow import JVP_STATE, VJP, Estimator, EstimatorOptions, PerStream, StepRecord

Array = Any

#: seed of the random points at which the sparsity pattern of F is read
PATTERN_SEED = 20_200_612
#: how many state coordinates are probed in one batched VJP while reading the pattern
PATTERN_CHUNK = 64


def pattern_pairs(model: Any, probes: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """The structural non-zeros (k, j) of F = ∂f/∂θ_rec: two int arrays (rows, columns).

    Row k of F at a random point is the VJP with U = e_k; the union over ``probes`` points is
    taken. Memory O(nnz(F) + chunk · P).
    """
    backend, xp = model.backend, model.backend.xp
    n, p_rec = model.n_state, model.layout.n_rec
    rng = np.random.default_rng(PATTERN_SEED)
    theta0 = np.asarray(backend.to_numpy(model.init_params(0)), dtype=np.float64)
    eye = xp.eye(n, dtype=backend.dtype)
    codes = []
    for _ in range(probes):
        theta = backend.asarray(theta0 + 0.1 * rng.standard_normal(theta0.shape))
        for start in range(0, n, PATTERN_CHUNK):
            stop = min(n, start + PATTERN_CHUNK)
            B = stop - start
            h0 = np.asarray(backend.to_numpy(model.initial_state(B)), dtype=np.float64)
            h = backend.asarray(h0 + rng.standard_normal((B, n)))
            x = backend.asarray(rng.standard_normal((B, model.n_in)))
            _, cache = model.forward(theta, h, x)
            _, rows = model.vjp(theta, cache, eye[start:stop, :])  # (B, P_rec): rows of F
            k, j = np.nonzero(np.asarray(backend.to_numpy(rows)) != 0.0)
            codes.append((k + start).astype(np.int64) * p_rec + j)
    code = np.unique(np.concatenate(codes)) if codes else np.zeros(0, dtype=np.int64)
    return code // p_rec, code % p_rec


def colour_rows(n: int, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """A colour per state coordinate such that no parameter feeds two coordinates of one colour.

    Greedy colouring (coordinates in order) of the graph that joins the coordinates of each
    parameter's set S_j. Returns an int array (n,).
    """
    order = np.lexsort((rows, cols))
    rows, cols = rows[order], cols[order]
    bounds = np.flatnonzero(np.diff(cols)) + 1
    neighbours: list[set[int]] = [set() for _ in range(n)]
    seen: set[tuple[int, ...]] = set()
    for group in np.split(rows, bounds):
        key = tuple(int(k) for k in group)
        if len(key) < 2 or key in seen:
            continue
        seen.add(key)
        for k in key:
            neighbours[k].update(key)
    colour = np.full(n, -1, dtype=np.int64)
    for k in range(n):
        used = {int(colour[o]) for o in neighbours[k] if o != k and colour[o] >= 0}
        c = 0
        while c in used:
            c += 1
        colour[k] = c
    return colour


class SnAp1(Estimator):
    name = "snap1"
    description = ("SnAp-1 (Menick et al. 2021): RTRL kept on the one-step sparsity pattern of "
                   "∂h/∂θ; O(P) memory")
    Options = EstimatorOptions
    requires = frozenset({JVP_STATE, VJP})
    kind = "biased"  # deterministic; exact only in the limits of the module docstring

    def __init__(self, model: Any, options: EstimatorOptions) -> None:
        super().__init__(model, options)
        self._structure()

    # -- the sparsity structure (computed once) -----------------------------------------------
    def _structure(self) -> None:
        xp, backend = self.xp, self.backend
        n, p_rec = self.model.n_state, self.layout.n_rec
        rows, cols = pattern_pairs(self.model)
        colour = colour_rows(n, rows, cols)
        C = int(colour.max()) + 1 if n else 0
        where = np.full((C, p_rec), -1, dtype=np.int64)  # k_c(j), or −1 if S_j has no colour c
        where[colour[rows], cols] = rows
        valid = where >= 0
        safe = np.where(valid, where, 0)
        self.n_colours = C
        # indicator of each colour over the state coordinates, (C, n)
        self._colour_masks = backend.asarray((colour[None, :] == np.arange(C)[:, None])
                                             .astype(np.float64))
        # δ and G gathers: index k_c(j) for (c, j) flattened, and the validity mask
        self._row_index = backend.asarray(safe.reshape(-1))
        self._valid = backend.asarray(valid.astype(np.float64))  # (C, P)
        # J gathers: J[k_c(j), k_c'(j)] as a flat index into (n, n), for (c, c', j) flattened
        pair = safe[:, None, :] * n + safe[None, :, :]
        self._pair_index = backend.asarray(pair.reshape(-1))
        self._pair_valid = backend.asarray((valid[:, None, :] & valid[None, :, :])
                                           .astype(np.float64))  # (C, C, P)
        self._eye = xp.eye(n, dtype=self.dtype)

    # -- state -------------------------------------------------------------------------------
    def state_fields(self) -> list[PerStream]:
        """G on the pattern, (B, C, P_rec): zero at the start and when a stream starts a new
        sequence (the base class does both)."""
        return [PerStream("G", (self.n_colours, self.layout.n_rec))]

    def setup_workspace(self) -> None:
        n = self.model.n_state
        self._identity = self.xp.broadcast_to(self._eye[None, :, :], (self.batch, n, n))

    # -- one step ----------------------------------------------------------------------------
    def step(self, record: StepRecord) -> Array:
        xp, model, state = self.xp, self.model, self.state
        B, C, P = state.G.shape
        n = model.n_state
        theta, cache = record.theta, record.cache
        # J_t on the pattern: J[b, k_c(j), k_c'(j)], (B, C, C, P)
        J = xp.reshape(model.jvp_state(theta, cache, self._identity), (B, n * n))
        J_pat = xp.reshape(xp.take(J, self._pair_index, axis=1), (B, C, C, P)) * self._pair_valid
        # F_t on the pattern: F[b, k_c(j), j], one VJP per colour, (B, C, P)
        F_pat = xp.stack([model.vjp(theta, cache, xp.broadcast_to(self._colour_masks[c, :][None, :],
                                                                 (B, n)))[1]
                          for c in range(C)], axis=1)
        state.G = xp.sum(J_pat * state.G[:, None, :, :], axis=2) + F_pat * self._valid
        delta = xp.reshape(xp.take(record.delta, self._row_index, axis=1), (B, C, P))
        g_rec = xp.sum(delta * self._valid * state.G, axis=(0, 1))
        return self.fill_direction(g_rec, record.grad_out)
