"""The estimator contract.

Timing convention: step t reads x_t, computes h_t = f(h_{t−1}, x_t), ŷ_t = g(h_t) and the loss ℓ_t.
G_t = ∂h_t/∂θ_rec, δ_t = ∂ℓ_t/∂h_t. The trainer runs forward and loss; the estimator receives a
:class:`StepRecord` (θ, the forward cache, δ_t, ∂ℓ_t/∂θ_out) and returns a direction for θ of shape
(P,) — an estimate of the gradient of the losses it accounts for — or ``None`` on steps where it
has nothing to say (TBPTT between its updates).

At a sequence boundary the trainer calls :meth:`Estimator.reset` with a boolean mask over streams
*before* the step whose previous state was replaced by h_0; nothing may flow across it.

Estimator state is a flat dict of arrays and scalars, its random generator included, so that a
checkpoint stores it and a resumed run continues bit for bit.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from gradflow.contracts.model import Cache, Model
from gradflow.contracts.random import CounterRNG

Array = Any
StateDict = dict[str, Any]


@dataclass
class StepRecord:
    """What an estimator sees of one step.

    theta: θ used for the step, (P,).
    cache: the model's forward cache of the step.
    delta: δ_t = ∂ℓ_t/∂h_t per stream, (B, n_state) (includes the 1/B of the mean over streams).
    grad_out: ∂ℓ_t/∂θ_out summed over streams, (P_out,).
    """

    theta: Array
    cache: Cache
    delta: Array
    grad_out: Array


class EstimatorOptions(BaseModel):
    """Base of estimator options: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


class Estimator(ABC):
    """Base class of estimator plugins.

    Subclasses set ``name``, ``description``, ``Options`` and ``requires`` (the model primitives
    they call) and implement :meth:`start` and :meth:`step`.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    Options: ClassVar[type[BaseModel]] = EstimatorOptions
    #: model capabilities this estimator calls
    requires: ClassVar[frozenset[str]] = frozenset()
    #: True if the estimate is random (unbiased estimators); False for exact ones.
    stochastic: ClassVar[bool] = False
    #: optimizer settings the trainer uses with this estimator unless the user sets them, e.g.
    #: ``{"clip_rec": 0.1}`` for a rank-one estimator whose raw recurrent estimates are noisy
    #: (keys are fields of the ``optimizer`` section of :class:`gradflow.TrainConfig`).
    optimizer_defaults: ClassVar[dict[str, Any]] = {}
    #: Whether :meth:`step` applies the estimator's preconditioner, if it has one (the Kalman-like
    #: filter of ``kalman-nobacktrack`` returns M⁻¹ĝ). :func:`~gradflow.frozen_gradients` and
    #: ``gradflow check`` set it to False on the instance to read the raw gradient estimate ĝ;
    #: the estimator's state evolves the same either way. Estimators without one ignore it.
    precondition: bool = True

    def __init__(self, model: Model, options: BaseModel) -> None:
        self.model = model
        self.options = options
        self.backend = model.backend
        self.xp = model.backend.xp
        self.dtype = model.backend.dtype
        self.layout = model.layout
        self.batch = 0
        self.rng = CounterRNG(self.xp, 0)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, options={self.options!r})"

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self, batch: int, seed: int = 0) -> None:
        """(Re)initialise the state for ``batch`` streams; seed the estimator's generator."""
        self.batch = int(batch)
        self.rng = CounterRNG(self.xp, seed)
        self._allocate(self.batch)

    @abstractmethod
    def _allocate(self, batch: int) -> None:
        """Create the state arrays for ``batch`` streams (all at their initial values)."""

    def reset(self, mask: Array) -> None:
        """Streams where ``mask`` (B,) is true start a new sequence at the next step.

        The default does nothing (estimators without memory of the past); estimators with
        per-stream state zero it for those streams.
        """
        return None

    @abstractmethod
    def step(self, record: StepRecord) -> Array | None:
        """Consume one step; return a direction for θ, shape (P,), or ``None``.

        The returned array belongs to the caller only until the next call of :meth:`step`,
        :meth:`flush` or :meth:`reset`: an estimator may return the same preallocated buffer every
        step (the built-in ones do, see :meth:`direction_buffer`), and the caller may modify it in
        place (the trainer clips it in place). A caller that keeps it must copy it; an estimator
        must not keep the returned array as part of its state.
        """

    def stream_estimates(self) -> Array | None:
        """Per-stream recurrent parts of the last step's estimate, shape (B, P_rec), or ``None``.

        Row b is stream b's share of the recurrent part of the direction returned by the last
        :meth:`step` before any preconditioning (the rows sum to it; δ_t already carries the 1/B
        of the mean loss). An estimator implements it only if its streams are statistically
        independent of each other; ``gradflow check`` then draws many independent samples as many
        streams of one batch. The default, ``None``, makes it run the estimator once per sample.
        """
        return None

    def flush(self, theta: Array) -> Array | None:
        """End of the data: return what is still pending (TBPTT, BPTT), or ``None``."""
        return None

    # -- state -------------------------------------------------------------------------------
    def state_arrays(self) -> dict[str, Array]:
        """The estimator's arrays by name (subclasses list theirs)."""
        return {}

    def load_state_arrays(self, arrays: dict[str, Array]) -> None:
        for key, value in arrays.items():
            setattr(self, key, value)

    def state_dict(self) -> StateDict:
        """Flat dict of arrays and scalars: the whole state, random generator included.

        A snapshot: the arrays are copies, since the hot paths update the state in place.
        """
        state: StateDict = {"batch": self.batch}
        state.update({f"rng.{k}": v for k, v in self.rng.get_state().items()})
        state.update({f"array.{k}": self.copy_array(v) for k, v in self.state_arrays().items()})
        return state

    def load_state_dict(self, state: StateDict) -> None:
        """Restore a :meth:`state_dict` (copying its arrays: ``state`` stays untouched)."""
        self.batch = int(state["batch"])
        self.rng.set_state({"seed": state["rng.seed"], "counter": state["rng.counter"]})
        arrays = {k[len("array."):]: self.load_array(v) for k, v in state.items()
                  if k.startswith("array.")}
        self.load_state_arrays(arrays)

    def copy_array(self, x: Array) -> Array:
        """A copy of an array of this backend (for snapshots of state updated in place)."""
        return self.xp.asarray(x, copy=True)

    def load_array(self, value: Any) -> Array:
        """``value`` (NumPy or this backend) as a fresh array of this backend, never an alias."""
        return self.copy_array(self.backend.asarray(value))

    # -- helpers for subclasses --------------------------------------------------------------
    def full_direction(self, g_rec: Array, g_out: Array) -> Array:
        """Concatenate a recurrent part (P_rec,) and a readout part (P_out,) into a new (P,)."""
        return self.xp.concat([g_rec, g_out])

    def direction_buffer(self) -> Array:
        """A (P,) array allocated once per estimator, for :meth:`step` to fill and return.

        Filling it (``buf[:n_rec] = ...``, ``buf[n_rec:] = grad_out``) instead of concatenating
        saves an allocation of size P per step. The caller may have scaled it in place (see
        :meth:`step`): every step must overwrite all of it.
        """
        buf = getattr(self, "_direction", None)
        if buf is None:
            buf = self._direction = self.xp.zeros((self.layout.size,), dtype=self.dtype)
        return buf

    def fill_direction(self, g_rec: Array | float, g_out: Array) -> Array:
        """:meth:`direction_buffer` set to [g_rec | g_out] (``g_rec`` may be a number, e.g. 0)."""
        buf = self.direction_buffer()
        n_rec = self.layout.n_rec
        buf[:n_rec] = g_rec
        buf[n_rec:] = g_out
        return buf

    def zero_where(self, mask: Array, x: Array) -> Array:
        """``x`` with the streams selected by ``mask`` (B,) set to zero (any trailing shape)."""
        xp = self.xp
        m = xp.reshape(mask, (mask.shape[0],) + (1,) * (x.ndim - 1))
        return xp.where(m, xp.zeros((), dtype=x.dtype), x)
