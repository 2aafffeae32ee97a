"""The model contract: a recurrent core h_t = f(h_{t-1}, x_t; θ_rec), a readout ŷ_t = g(h_t; θ_out).

All arrays carry a leading batch axis B ≥ 1 (independent streams). θ is one flat vector laid out
by :attr:`Model.layout`, recurrent parameters first. Primitives never modify their inputs (θ, the
cache, the tangents) and return new arrays, which the estimators' hot paths may then update in
place; :meth:`Model.vjp_accumulate` and :meth:`Model.param_jacobian_accumulate` are the primitives
that write, into their ``acc``.

The required primitives are ``init_params``, ``forward``, ``readout`` and ``readout_vjp``. The
optional ones (:data:`OPTIONAL_PRIMITIVES`) are provided by implementing the method of that name:
a model lacks a primitive by not implementing it, and that is the only way to say so —
:attr:`Model.capabilities` is derived from the methods the class overrides, and the base
class's method raises :class:`~gradflow.CapabilityError` naming the model and the primitive. An
estimator lists the primitives it calls in ``requires``; asking for an impossible pair is a
:class:`~gradflow.CapabilityError` when the estimator is created, never in the middle of a run.
New structured primitives (a Kronecker factorisation of F_t, the diagonal of J_t) are added the
same way: a name here, a method on the base that raises, an estimator that requires it (or, like
RTRL with ``state_jacobian`` and ``param_jacobian_accumulate``, uses it when ``model.has`` it).

Notation (per stream, n = state size, P_rec = number of recurrent parameters;
docs/architecture.md §4):

* J_t = ∂f/∂h_{t-1}, an n × n matrix;
* F_t = ∂f/∂θ_rec, an n × P_rec matrix;
* δ_t = ∂ℓ_t/∂h_t.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from gradflow.contracts.backend import Backend
from gradflow.contracts.errors import CapabilityError
from gradflow.contracts.layout import ParamLayout
from gradflow.contracts.units import Units

Array = Any
Cache = dict[str, Array]

#: The primitive names (docs/architecture.md §4): every model has the first two ...
FORWARD = "forward"
READOUT = "readout"
#: ... and the optional ones it implements (each is a method of that name)
JVP_STATE = "jvp_state"
VJP = "vjp"
PARAM_JACOBIAN = "param_jacobian"
PARAM_ROW_SQNORMS = "param_row_sqnorms"
VJP_PARAM_SQNORMS = "vjp_param_sqnorms"
STATE_JACOBIAN = "state_jacobian"
PARAM_JACOBIAN_ACCUMULATE = "param_jacobian_accumulate"
#: ... and the structured ones (docs/architecture.md §4, "Structured primitives")
PARAM_JACOBIAN_UNITS_ACCUMULATE = "param_jacobian_units_accumulate"
STATE_JACOBIAN_BLOCKS = "state_jacobian_blocks"
INTERNAL_JACOBIAN_BLOCKS = "internal_jacobian_blocks"
PARAM_KRON_FACTORS = "param_kron_factors"
LEAK = "leak"
OPTIONAL_PRIMITIVES = (JVP_STATE, VJP, PARAM_JACOBIAN, PARAM_ROW_SQNORMS, VJP_PARAM_SQNORMS,
                       STATE_JACOBIAN, PARAM_JACOBIAN_ACCUMULATE, PARAM_JACOBIAN_UNITS_ACCUMULATE,
                       STATE_JACOBIAN_BLOCKS, INTERNAL_JACOBIAN_BLOCKS, PARAM_KRON_FACTORS, LEAK)
#: the primitives the base class derives from dense ones when a model does not implement them:
#: the model has the primitive if it has any one of the alternatives' primitives
DERIVED: dict[str, tuple[frozenset[str], ...]] = {
    PARAM_JACOBIAN_UNITS_ACCUMULATE: (frozenset({VJP}),),
    STATE_JACOBIAN_BLOCKS: (frozenset({STATE_JACOBIAN}), frozenset({JVP_STATE})),
}
ALL_CAPABILITIES = frozenset({FORWARD, READOUT, *OPTIONAL_PRIMITIVES})


def runs_replicated(model: Model | type[Model]) -> bool:
    """Whether the model's class itself declares ``replicas`` (a subclass that overrides a
    primitive does not inherit the declaration)."""
    cls = model if isinstance(model, type) else type(model)
    return bool(cls.__dict__.get("replicas", False))


class ModelOptions(BaseModel):
    """Options every model shares: input, hidden and output sizes."""

    model_config = ConfigDict(extra="forbid")

    n_in: int = Field(1, ge=1, description="input size m")
    n_hidden: int = Field(32, ge=1, description="number of hidden units n")
    n_out: int = Field(1, ge=1, description="output size k")


class Model(ABC):
    """Base class of model plugins.

    Subclasses set the class attributes ``name``, ``description`` and ``Options`` (a pydantic
    model, ``extra="forbid"``), build :attr:`layout` and :attr:`n_state` in ``__init__``, and
    implement the required primitives and whichever optional ones they provide.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    Options: ClassVar[type[BaseModel]] = ModelOptions
    #: the primitives this model provides: derived from the methods its class implements. An
    #: instance whose options remove a structure narrows it in ``__init__`` (the ``rnn`` with a
    #: sparse W_hh: ``self.capabilities = self.capabilities - {PARAM_KRON_FACTORS}``), and its
    #: method then raises; it never widens it.
    capabilities: frozenset[str] = frozenset({FORWARD, READOUT})
    #: of those, the ones its class implements itself (the rest are derived: :data:`DERIVED`)
    implemented: ClassVar[frozenset[str]] = frozenset({FORWARD, READOUT})
    #: True if every primitive it implements also takes a replicated θ (R, P) — R independent
    #: runs advanced together — with the other arrays carrying the same leading axis, (R, B, …):
    #: replica r's rows computed with θ[r], exactly as a run of its own would compute them.
    #: A model without it runs replicated runs one replica after the other. Declared by each
    #: class for itself (see :func:`runs_replicated`).
    replicas: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "capabilities" in cls.__dict__:
            raise TypeError(f"model class {cls.__name__}: capabilities are derived from the "
                            "primitives it implements; remove the capabilities attribute and "
                            "leave out the methods of the primitives it lacks")
        own = {FORWARD, READOUT} | {name for name in OPTIONAL_PRIMITIVES
                                    if getattr(cls, name) is not getattr(Model, name)}
        derived = {name for name, alternatives in DERIVED.items()
                   if any(needs <= own for needs in alternatives)}
        cls.capabilities = frozenset(own | derived)
        #: the primitives its class implements itself (the fast forms), not derived
        cls.implemented = frozenset(own)

    layout: ParamLayout
    #: size n of the recurrent state h (for an LSTM, 2 × n_hidden: h and c).
    n_state: int

    def __init__(self, options: BaseModel, backend: Backend) -> None:
        self.options = options
        self.backend = backend
        self.xp = backend.xp
        self.dtype = backend.dtype

    # -- sizes -------------------------------------------------------------------------------
    @property
    def n_in(self) -> int:
        return int(getattr(self.options, "n_in", 0))

    @property
    def n_out(self) -> int:
        return int(getattr(self.options, "n_out", 0))

    @property
    def n_params(self) -> int:
        return self.layout.size

    def has(self, capability: str) -> bool:
        return capability in self.capabilities

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(name={self.name!r}, P={self.layout.size}, "
                f"n_state={self.n_state}, backend={self.backend.name}/{self.backend.dtype_name})")

    # -- required primitives -----------------------------------------------------------------
    @abstractmethod
    def init_params(self, seed: int = 0) -> Array:
        """A fresh θ, shape (P,), drawn from a generator seeded with ``seed``."""

    def initial_state(self, batch: int) -> Array:
        """h_0 for ``batch`` streams, shape (B, n_state). Zeros unless a model says otherwise."""
        return self.xp.zeros((batch, self.n_state), dtype=self.dtype)

    @abstractmethod
    def forward(self, theta: Array, h: Array, x: Array) -> tuple[Array, Cache]:
        """One step: h_next = f(h, x; θ_rec), shape (B, n_state), and a cache for the primitives.

        The cache is a flat ``dict`` of arrays (so that estimators can store it in checkpoints).
        """

    @abstractmethod
    def readout(self, theta: Array, h: Array) -> Array:
        """ŷ = g(h; θ_out), shape (B, k)."""

    @abstractmethod
    def readout_vjp(self, theta: Array, h: Array, u: Array) -> tuple[Array, Array]:
        """For a cotangent u (B, k) of ŷ: ((∂ŷ/∂h)ᵀu per stream (B, n_state),
        Σ_b (∂ŷ_b/∂θ_out)ᵀu_b summed over streams (P_out,))."""

    # -- optional primitives -----------------------------------------------------------------
    def jvp_state(self, theta: Array, cache: Cache, v: Array) -> Array:
        """J_t V for V of shape (B, n) or (B, n, K) (K tangents at once)."""
        raise self._lacks(JVP_STATE)

    def vjp(self, theta: Array, cache: Cache, u: Array) -> tuple[Array, Array]:
        """For U (B, n): (Uᵀ J_t per stream (B, n), Uᵀ F_t per stream (B, P_rec))."""
        raise self._lacks(VJP)

    def param_jacobian(self, theta: Array, cache: Cache) -> Array:
        """Dense F_t = ∂f/∂θ_rec, shape (B, n, P_rec)."""
        raise self._lacks(PARAM_JACOBIAN)

    def param_row_sqnorms(self, theta: Array, cache: Cache,
                          inv_metric: Array | None = None) -> Array:
        """Σ_j F_t[k, j]² · inv_metric_j for each state coordinate k, shape (B, n).

        ``inv_metric`` is the diagonal of the inverse metric on θ_rec, shape (P_rec,)
        (all ones when ``None``: the Euclidean row norms).
        """
        raise self._lacks(PARAM_ROW_SQNORMS)

    def vjp_param_sqnorms(self, theta: Array, cache: Cache, u: Array) -> Array:
        """‖Uᵀ F_t‖² for each stream, shape (B,), without forming Uᵀ F_t (O(n) for ``rnn``).

        Optional: a model implements it only when it is cheaper than forming Uᵀ F_t; UORO uses it
        when the model has it and forms Uᵀ F_t otherwise."""
        raise self._lacks(VJP_PARAM_SQNORMS)

    def state_jacobian(self, theta: Array, cache: Cache) -> Array:
        """Dense J_t = ∂f/∂h_{t-1}, shape (B, n, n): J_t[b, i, j] = ∂h_t,bi/∂h_{t-1},bj.

        O(n²) per stream (the dense matrix the JVP applies): RTRL multiplies it into its
        sensitivities as one matrix product per stream (docs/architecture.md §6)."""
        raise self._lacks(STATE_JACOBIAN)

    def param_jacobian_accumulate(self, theta: Array, cache: Cache, acc: Array) -> None:
        """acc += F_t in place, for ``acc`` of shape (B, n, P_rec) (each stream's n × P_rec
        block C-contiguous: ``buf[:, :n, :]`` of a larger buffer is fine).

        The same numbers as adding :meth:`param_jacobian`, without forming the dense F_t: a model
        implements it when F_t is structured, so that only its non-zero entries are touched (for
        ``rnn``, row k of F_t is non-zero only on unit k's own weights: O(P_rec) work instead of
        O(n·P_rec), and no n × P_rec temporary)."""
        raise self._lacks(PARAM_JACOBIAN_ACCUMULATE)

    # -- structured primitives (docs/architecture.md §4) --------------------------------------
    def units(self) -> Units:
        """The unit structure (:mod:`gradflow.contracts.units`): which state coordinates and
        recurrent parameters belong to each unit, a parameter moving only its unit's coordinates
        in one step. Structural (the same at every θ, h, x). Default: one unit holding
        everything, which is always true."""
        return Units.single(self.n_state, self.layout.n_rec)

    def jacobian_pattern(self) -> np.ndarray:
        """The structural non-zeros of J_t, a bool array (n_state, n_state): False where
        J_t[k, k'] = 0 at every θ, h, x (a fixed sparse W_hh). Default: all True (dense)."""
        return np.ones((self.n_state, self.n_state), dtype=bool)

    def internal_jacobian_blocks(self, theta: Array, cache: Cache) -> Array:
        """The diagonal blocks of J_t through each unit's own internal dynamics only, shape
        (B, n_units, s, s): ∂h_t/∂h_{t−1} on the unit's coordinates with the recurrent weights'
        input W_hh h_{t−1} held fixed — e-prop's eligibility dynamics (Bellec et al. 2020):
        1 − α for the leaky ``rnn``, the forget gate's path through c for the ``lstm``, the update
        gate z for the ``gru``. No default (the dense primitives do not separate the paths)."""
        raise self._lacks(INTERNAL_JACOBIAN_BLOCKS)

    def leak(self, theta: Array) -> Array:
        """λ (n_state,) of a leaky-integrator model h_t = λ ⊙ h_{t−1} + (1 − λ) ⊙ φ(W x̂_t)
        (Murray 2019, eq. 1, λ = 1 − 1/τ): the constant part of J_t that RFLO keeps. A model
        provides it only if it has that form (one coordinate per unit)."""
        raise self._lacks(LEAK)

    def param_kron_factors(self, theta: Array, cache: Cache) -> tuple[Array, Array]:
        """F_t as a Kronecker product: (D (B, n_state, n_rows), x̂ (B, n_cols)) with

            F_t[b, k, kron_index[i, j]] = D[b, k, i] · x̂[b, j],

        θ_rec being one weight matrix W (n_rows × n_cols) up to the permutation
        :meth:`kron_index` (rows: the pre-activations, columns: the inputs [h_{t−1}; x_t; 1]).
        KF-RTRL, R-KF-RTRL and OK need it; a model whose F_t is not one Kronecker product (the
        ``gru``: its candidate's recurrent input is gated by r) does not provide it."""
        raise self._lacks(PARAM_KRON_FACTORS)

    def kron_index(self) -> np.ndarray:
        """The position in θ_rec of W[i, j] of :meth:`param_kron_factors`, an int array
        (n_rows, n_cols) holding every recurrent parameter once."""
        raise self._lacks(PARAM_KRON_FACTORS)

    def param_jacobian_units_accumulate(self, theta: Array, cache: Cache, acc: Array) -> None:
        """acc += F_t on the units' pattern, for ``acc`` of shape (B, s, P_rec):
        acc[b, c, j] += F_t[b, coords[u(j), c], j] with u(j) the unit of θ_j (:meth:`units`).

        Derived from :meth:`vjp_accumulate` when a model does not implement it: s VJPs with
        U = the indicator of the c-th coordinate of every unit give exactly these entries, since
        θ_j moves only its unit's coordinates. For the built-in cells that is already the fast
        form (O(s · P) work, written into ``acc``)."""
        if VJP not in self.capabilities:
            raise self._lacks(PARAM_JACOBIAN_UNITS_ACCUMULATE)
        xp = self.xp
        batch = int(acc.shape[0])
        for c, indicator in enumerate(self._unit_indicators()):
            u = xp.broadcast_to(indicator[None, :], (batch, self.n_state))
            self.vjp_accumulate(theta, cache, u, acc[:, c, :], state=False)

    def state_jacobian_blocks(self, theta: Array, cache: Cache) -> Array:
        """J_t on each unit's coordinates, shape (B, n_units, s, s):
        out[b, u, c, c'] = J_t[b, coords[u, c], coords[u, c']].

        Derived from the dense J_t (:meth:`state_jacobian`, or :meth:`jvp_state` on the identity)
        when a model does not implement it: O(n²) or O(n³) per step where the built-in cells
        take O(n)."""
        xp = self.xp
        if STATE_JACOBIAN in self.capabilities:
            J = self.state_jacobian(theta, cache)
        elif JVP_STATE in self.capabilities:
            batch = int(cache_batch(cache))
            eye = xp.eye(self.n_state, dtype=self.dtype)
            J = self.jvp_state(theta, cache, xp.broadcast_to(eye[None], (batch, *eye.shape)))
        else:
            raise self._lacks(STATE_JACOBIAN_BLOCKS)
        units = self.units()
        n, s = self.n_state, units.size
        index = (units.coords[:, :, None] * n + units.coords[:, None, :]).reshape(-1)
        flat = xp.reshape(J, (int(J.shape[0]), n * n))
        picked = xp.take(flat, self.backend.asarray(index), axis=1)
        return xp.reshape(picked, (int(J.shape[0]), units.n_units, s, s))

    def _unit_indicators(self) -> list[Array]:
        """For each c < s, the indicator (n_state,) of the c-th coordinate of every unit."""
        found = self.__dict__.get("_indicators")
        if found is None:
            coords = self.units().coords
            rows = []
            for c in range(coords.shape[1]):
                v = np.zeros(self.n_state)
                v[coords[:, c]] = 1.0
                rows.append(self.backend.asarray(v))
            found = self.__dict__["_indicators"] = rows
        return found

    # -- derived primitives ------------------------------------------------------------------
    def vjp_accumulate(self, theta: Array, cache: Cache, u: Array, acc: Array,
                       state: bool = True, scale: Array | None = None) -> Array | None:
        """acc += Uᵀ F_t in place, and return Uᵀ J_t (B, n) (``None`` when ``state`` is false).

        ``acc`` of shape (B, P_rec) receives each stream's row; ``acc`` of shape (P_rec,) the sum
        over the streams Σ_b u_bᵀ F_t,b (TBPTT's gradient: no (B, P_rec) array is needed, and a
        model can form it as matrix products over the batch). The estimators' hot paths call this
        instead of :meth:`vjp` so that nothing of size P is allocated when the model can avoid
        it. The default calls :meth:`vjp` and adds; a model overrides it to write straight into
        ``acc`` and to skip Uᵀ J_t when ``state`` is false.

        With ``scale`` (shape (B, 1) for a per-stream ``acc``, a 0-d array for a summed one), the
        update is acc ← acc · scale + Uᵀ F_t — the rank-one estimators' w̃ ← w̃ / ρ + uᵀF_t, with
        scale = 1/ρ — each entry multiplied exactly as ``acc *= scale`` would: a model that
        streams ``acc`` in blocks scales each block while it is in the cache, one pass instead
        of two.
        """
        if scale is not None:
            acc *= scale
        u_h, g = self.vjp(theta, cache, u)
        if acc.ndim == 1:
            acc += self.xp.sum(g, axis=0)
        else:
            acc += g
        return u_h if state else None

    def _lacks(self, capability: str) -> CapabilityError:
        return CapabilityError(f"model {self.name!r} does not provide {capability!r}")


def cache_batch(cache: Cache) -> int:
    """The number of streams B of a forward cache (the leading axis of its first array)."""
    for value in cache.values():
        if getattr(value, "ndim", 0) >= 1:
            return int(value.shape[0])
    raise ValueError("the cache holds no array with a batch axis")
