"""The estimator contract.

Timing convention: step t reads x_t, computes h_t = f(h_{t−1}, x_t), ŷ_t = g(h_t) and the loss ℓ_t.
G_t = ∂h_t/∂θ_rec, δ_t = ∂ℓ_t/∂h_t (docs/architecture.md §6).

**What a step receives.** The one online step (:func:`gradflow.training.step.online_step`) runs
the forward step, the loss and the readout VJP, then calls :meth:`Estimator.step` with a
:class:`StepRecord`: θ, the model's forward cache of the step, δ_t and ∂ℓ_t/∂θ_out.

**What it returns.** A direction for θ of shape (P,) — an estimate of the gradient of the losses
it accounts for — or ``None`` on steps where it has nothing to say (TBPTT between its updates).

**Its state**, declared once in :meth:`Estimator.state_fields` (see :mod:`gradflow.contracts.state`)
and held in :attr:`Estimator.state`: the base class allocates it (:meth:`Estimator.start`), resets
the per-stream fields of streams that start a new sequence (:meth:`Estimator.reset`), snapshots,
loads and copies it with the random generator (:meth:`Estimator.state_dict`,
:meth:`Estimator.load_state_dict`, :meth:`Estimator.copy`), so that a checkpoint stores it and a
resumed run continues bit for bit.

**Who owns which buffer.**

* The record's arrays belong to the caller. An estimator never modifies them. It may keep the
  cache and δ_t (they are never modified after the step; TBPTT keeps a window of them), but not θ,
  which the optimizer updates in place after the step.
* The returned direction belongs to the caller until the next call of :meth:`~Estimator.step`,
  :meth:`~Estimator.flush` or :meth:`~Estimator.reset`; the caller may modify it in place (the
  trainer clips it in place). An estimator may return the same preallocated buffer every step
  (:meth:`~Estimator.direction_buffer`) and must overwrite all of it each time; it must never
  read it back as state.
* :attr:`Estimator.state` belongs to the estimator: :meth:`~Estimator.step` updates it, in place
  or by replacing arrays. :meth:`~Estimator.state_dict` returns copies and
  :meth:`~Estimator.load_state_dict` copies in, so neither side aliases the other.

**Extension points** (all public; only :meth:`~Estimator.step` is required):
:meth:`~Estimator.state_fields`, :meth:`~Estimator.setup_workspace`, :meth:`~Estimator.on_reset`,
:meth:`~Estimator.flush`, :meth:`~Estimator.stream_estimates` and
:attr:`~Estimator.update_interval`;
and the class attributes ``name``, ``description``, ``Options``, ``requires``, ``kind``,
``stochastic``, ``online``, ``forward_only``, ``optimizer_defaults``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict

from gradflow.contracts.errors import ShapeError
from gradflow.contracts.model import Cache, Model
from gradflow.contracts.random import CounterRNG, ReplicaRNG
from gradflow.contracts.state import (
    State,
    StateField,
    allocate,
    check_fields,
    reset_streams,
    restore,
    restore_replica,
    snapshot,
)

Array = Any
StateDict = dict[str, Any]
#: what an estimator's direction is, against the exact gradient ∂ℓ/∂θ with θ frozen
Kind = Literal["exact", "unbiased", "biased"]
KINDS: tuple[Kind, ...] = ("exact", "unbiased", "biased")


@dataclass(slots=True)
class StepRecord:
    """What an estimator sees of one step.

    theta: θ used for the step, (P,).
    cache: the model's forward cache of the step.
    delta: δ_t = ∂ℓ_t/∂h_t per stream, (B, n_state) (includes the 1/B of the mean over streams).
    grad_out: ∂ℓ_t/∂θ_out summed over streams, (P_out,).
    dy: ∂ℓ_t/∂ŷ_t per stream, (B, k) (the output error; δ_t is its readout VJP): what an
        estimator with its own feedback pathway uses instead of δ_t (RFLO's random feedback).
        ``None`` when the caller did not give it.
    """

    theta: Array
    cache: Cache
    delta: Array
    grad_out: Array
    dy: Array | None = None


class EstimatorOptions(BaseModel):
    """Base of estimator options: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


def runs_replicated(estimator: Estimator | type[Estimator]) -> bool:
    """Whether the estimator's class itself declares ``replicas`` (see the attribute)."""
    cls = estimator if isinstance(estimator, type) else type(estimator)
    return bool(cls.__dict__.get("replicas", False))


def takes_factors(estimator: Estimator) -> bool:
    """Whether ``estimator``'s step may be asked for factored directions: the class that defines
    the :meth:`~Estimator.step` it runs declares ``returns_factors`` itself. A subclass that
    overrides ``step`` (and may treat what ``super().step`` returns as an array) does not
    inherit the declaration, so it keeps getting arrays."""
    for cls in type(estimator).__mro__:
        if "step" in cls.__dict__:
            return bool(cls.__dict__.get("returns_factors", False))
    return False


class Estimator(ABC):
    """Base class of estimator plugins (see the module docstring for the contract).

    A subclass sets ``name`` (and ``description``, ``Options``, ``requires``, ``kind``...),
    declares its state in :meth:`state_fields` and implements :meth:`step`.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    Options: ClassVar[type[BaseModel]] = EstimatorOptions
    #: model primitives (capabilities) this estimator calls
    requires: ClassVar[frozenset[str]] = frozenset()
    #: what the direction is with θ frozen: ``"exact"`` (equal to the gradient of the losses it
    #: accounts for, e.g. RTRL), ``"unbiased"`` (its expectation is), or ``"biased"`` (equal to
    #: its own defining formula only, e.g. truncated BPTT). The conformance suite checks each
    #: kind against its reference.
    kind: ClassVar[Kind] = "biased"
    #: True if a step draws from the estimator's random generator (the estimate is random)
    stochastic: ClassVar[bool] = False
    #: False for an estimator that cannot run on an endless stream (BPTT updates only when every
    #: stream ends a sequence, and its memory grows with the sequence)
    online: ClassVar[bool] = True
    #: True for an estimator that adds nothing to the forward step but the exact readout
    #: gradient (its recurrent part is always zero): the forward-cost baseline of ``gradflow
    #: bench``
    forward_only: ClassVar[bool] = False
    #: optimizer settings the trainer uses with this estimator unless the user sets them, e.g.
    #: ``{"clip_rec": 0.1}`` for a rank-one estimator whose raw recurrent estimates are noisy
    #: (keys are fields of the ``optimizer`` section of :class:`gradflow.TrainConfig`).
    optimizer_defaults: ClassVar[dict[str, Any]] = {}
    #: Whether :meth:`step` applies the estimator's preconditioner, if it has one (the Kalman-like
    #: filter of ``kalman-nobacktrack`` returns M⁻¹ĝ). :func:`~gradflow.frozen_gradients` and
    #: ``gradflow check`` set it to False on the instance to read the raw gradient estimate ĝ;
    #: the estimator's state evolves the same either way. Estimators without one ignore it.
    precondition: bool = True
    #: True if :meth:`step` works with a leading replica axis on everything (R runs advanced
    #: together: θ (R, P), δ (R, B, n), the state (R, B, …)) and returns one direction per replica
    #: — what R estimators of its own would return. Declared by each class for itself (a
    #: subclass that changes any part of the step does not inherit it: :func:`runs_replicated`).
    #: Without it, replicated runs step one replica after the other.
    replicas: ClassVar[bool] = False
    #: True on the class that implements :meth:`step` if that step can return its direction by
    #: its factors (a :class:`~gradflow.FactoredDirection`) when the caller asks for them
    returns_factors: ClassVar[bool] = False
    #: Whether the caller takes the direction by its factors: set by the trainer, whose clipping
    #: and optimizer use them, when :func:`takes_factors` allows it; every other caller gets
    #: arrays. An estimator that cannot return factors ignores it.
    factors: bool = False

    def __init__(self, model: Model, options: BaseModel) -> None:
        self.model = model
        self.options = options
        self.backend = model.backend
        self.xp = model.backend.xp
        self.dtype = model.backend.dtype
        self.layout = model.layout
        self.batch = 0
        self.rng: CounterRNG | ReplicaRNG = CounterRNG(self.xp, 0)
        #: the leading axes of the state and of the directions: (R,) for R replicated runs
        self.lead: tuple[int, ...] = ()
        #: the estimator's state: one attribute per declared field (see :meth:`state_fields`)
        self.state = State()
        self._fields: tuple[StateField, ...] = ()
        self._direction: Array | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, options={self.options!r})"

    # -- what a subclass declares and implements ---------------------------------------------
    def state_fields(self) -> Sequence[StateField]:
        """The estimator's state: :class:`~gradflow.PerStream`, :class:`~gradflow.Shared`,
        :class:`~gradflow.Scalar` and :class:`~gradflow.Window` declarations (sizes from the
        model and the options; the number of streams is added by the base class). Called by
        :meth:`start` and :meth:`load_state_dict`. Default: no state (a memoryless estimator)."""
        return ()

    def setup_workspace(self) -> None:  # noqa: B027 - optional hook
        """Called after the state was created (:meth:`start`) or loaded (:meth:`load_state_dict`):
        allocate buffers and compute values derived from the state (not part of it, never
        checkpointed). Default: nothing."""

    def on_reset(self, mask: Array) -> None:  # noqa: B027 - optional hook
        """Called by :meth:`reset` after the per-stream fields declared ``reset=True`` were put
        back at their initial values: anything else a sequence boundary means to this estimator
        (TBPTT cuts its backward pass there). Default: nothing."""

    @abstractmethod
    def step(self, record: StepRecord) -> Array | None:
        """Consume one step; return a direction for θ, shape (P,), or ``None``.

        The returned array belongs to the caller until the next call of :meth:`step`,
        :meth:`flush` or :meth:`reset`, and the caller may modify it in place (see the module
        docstring: who owns which buffer).
        """

    def flush(self, theta: Array) -> Array | None:
        """End of the data: return what is still pending (TBPTT, BPTT), or ``None``."""
        return None

    def stream_estimates(self) -> Array | None:
        """Per-stream recurrent parts of the last step's estimate, shape (B, P_rec), or ``None``.

        Row b is stream b's share of the recurrent part of the direction returned by the last
        :meth:`step` before any preconditioning (the rows sum to it; δ_t already carries the 1/B
        of the mean loss). An estimator implements it only if its streams are statistically
        independent of each other; ``gradflow check`` then draws many independent samples as many
        streams of one batch. The default, ``None``, makes it run the estimator once per sample.
        """
        return None

    @property
    def update_interval(self) -> int | None:
        """Steps between two directions on an endless stream: 1 (every step, the default), k1
        for TBPTT, ``None`` for an estimator that returns directions only at sequence boundaries
        (``online = False``)."""
        return 1 if self.online else None

    # -- lifecycle, done by the base class ---------------------------------------------------
    def start(self, batch: int, seed: int = 0, replica_seeds: list[int] | None = None) -> None:
        """(Re)initialise the state for ``batch`` streams; seed the estimator's generator.

        With ``replica_seeds`` (an estimator that declares ``replicas``), the state is that of
        R = len(replica_seeds) runs advanced together: every array with a leading replica axis,
        and a generator per replica (:class:`~gradflow.contracts.random.ReplicaRNG`) seeded as
        each run made alone would be."""
        self.batch = int(batch)
        if replica_seeds is None:
            self.rng = CounterRNG(self.xp, seed)
            self.lead: tuple[int, ...] = ()
        else:
            if not runs_replicated(self):
                raise TypeError(f"{self._owner} does not declare replicas: its step works on one "
                                "run's arrays")
            self.rng = ReplicaRNG(self.xp, list(replica_seeds))
            self.lead = (len(replica_seeds),)
        self._fields = check_fields(self.state_fields(), self._owner)
        self.state = allocate(self._fields, self.xp, self.dtype, self.batch, self.lead)
        self._direction = None
        self.setup_workspace()

    def reset(self, mask: Array) -> None:
        """Streams where ``mask`` (B,) is true start a new sequence at the next step: their
        per-stream fields declared ``reset=True`` go back to their initial values, then
        :meth:`on_reset` is called. Nothing of such a stream's past may flow across."""
        reset_streams(self._fields, self.state, self.xp, mask)
        self.on_reset(mask)

    def state_dict(self) -> StateDict:
        """The whole state as a flat dict of arrays (copies: the hot paths update the state in
        place) and JSON scalars, the random generator and the number of streams included."""
        out: StateDict = {"batch": self.batch, **self.rng.state_entries()}
        out.update(snapshot(self._fields, self.state, self.copy_array))
        return out

    def load_state_dict(self, state: StateDict) -> None:
        """Restore a :meth:`state_dict` (its arrays are copied: ``state`` stays untouched).

        Every declared field must be there with its declared shape (a
        :class:`~gradflow.ShapeError` names the one that is not)."""
        self.batch = int(state["batch"])
        self.rng = CounterRNG.from_entries(self.xp, state)
        self._fields = check_fields(self.state_fields(), self._owner)
        self.state = restore(self._fields, state, self.load_array, self.batch, self._owner)
        self.setup_workspace()

    def replica_state_dict(self, replica: int) -> StateDict:
        """The :meth:`state_dict` of replica ``replica`` of a replicated estimator: what the
        estimator of that run made alone would give (a checkpoint of that run alone)."""
        rng = self.rng.rngs[replica]
        out: StateDict = {"batch": self.batch, **rng.state_entries()}
        out.update(snapshot(self._fields, self.state, self.copy_array, replica))
        return out

    def load_replica_state_dict(self, replica: int, state: StateDict) -> None:
        """Load the state of a run made alone (a :meth:`state_dict`) into replica ``replica``."""
        if int(state["batch"]) != self.batch:
            raise ShapeError(f"{self._owner}: a state of {state['batch']} streams cannot be "
                             f"loaded into replicated runs of {self.batch}")
        self.rng.rngs[replica] = CounterRNG.from_entries(self.xp, state)
        restore_replica(self._fields, self.state, replica, state, self.load_array, self.batch,
                        self._owner)
        self.setup_workspace()

    def copy(self) -> Estimator:
        """An independent estimator of the same class, options and model, in the same state
        (the preconditioning switch included): stepping one leaves the other as it was."""
        other = type(self)(self.model, self.options)
        other.precondition = self.precondition
        other.load_state_dict(self.state_dict())
        return other

    @property
    def state_spec(self) -> tuple[StateField, ...]:
        """The declarations of :meth:`state_fields` the state was made from (empty before
        :meth:`start`)."""
        return self._fields

    @property
    def _owner(self) -> str:
        return f"estimator {getattr(self, 'name', type(self).__name__)!r}"

    # -- helpers for subclasses --------------------------------------------------------------
    def copy_array(self, x: Array) -> Array:
        """A copy of an array of this backend (for snapshots of state updated in place)."""
        return self.xp.asarray(x, copy=True)

    def load_array(self, value: Any) -> Array:
        """``value`` (NumPy or this backend) as a fresh array of this backend, never an alias."""
        return self.copy_array(self.backend.asarray(value))

    def direction_buffer(self) -> Array:
        """A (P,) array allocated once per estimator, for :meth:`step` to fill and return.

        Filling it (``buf[:n_rec] = ...``, ``buf[n_rec:] = grad_out``) instead of concatenating
        saves an allocation of size P per step. The caller may have modified it in place since
        the last step: every step must overwrite all of it.
        """
        buf = self._direction
        if buf is None:
            buf = self._direction = self.xp.zeros((*self.lead, self.layout.size),
                                                  dtype=self.dtype)
        return buf

    def fill_direction(self, g_rec: Array | float, g_out: Array) -> Array:
        """:meth:`direction_buffer` set to [g_rec | g_out] (``g_rec`` may be a number, e.g. 0)."""
        buf = self.direction_buffer()
        n_rec = self.layout.n_rec
        buf[..., :n_rec] = g_rec
        buf[..., n_rec:] = g_out
        return buf
