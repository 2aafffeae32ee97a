"""A counter-based random generator written once against the array API.

Randomness in gradflow (parameter initialisation, the random signs of the rank-one estimators)
comes from a keyed hash of a 64-bit counter, in the spirit of counter-based generators
(Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC 2011). Element ``i`` of the
``c``-th draw of a generator with key ``s`` is

    u = mix64(s ⊕ mix64(c · K1 + i · K2 + K3))

where ``mix64`` is the SplitMix64 finaliser (Steele, Lea & Flood, OOPSLA 2014). Consequences:

* the whole state is two Python integers (``seed``, ``counter``): a checkpoint stores it as JSON
  scalars and a resumed run draws exactly the same numbers;
* the numbers are the same on every backend (NumPy, CuPy, array-api-strict) for the same seed,
  because only unsigned 64-bit array arithmetic is used;
* on CuPy the draws are made on the device, with no host-device copy.
"""

from __future__ import annotations

import math
from typing import Any

_MASK = (1 << 64) - 1
_K1 = 0x9E3779B97F4A7C15
_K2 = 0xD1B54A32D192ED03
_K3 = 0x8CB92BA72F3D8DD7
_M1 = 0xBF58476D1CE4E5B9
_M2 = 0x94D049BB133111EB


def _mix(xp: Any, x: Any) -> Any:
    """SplitMix64 finaliser on a uint64 array (wrapping arithmetic)."""
    x = x ^ (x >> 30)
    x = x * _M1
    x = x ^ (x >> 27)
    x = x * _M2
    return x ^ (x >> 31)


#: numbers of signs drawn at once for the next draws of one shape (see CounterRNG.signs)
SIGNS_AHEAD = 1 << 14


class CounterRNG:
    """Seeded, serializable, backend-independent random generator.

    Parameters
    ----------
    xp:
        Array namespace the draws are made in.
    seed:
        Any non-negative integer (reduced modulo 2**64).
    counter:
        Number of draws already made (restored from a checkpoint).
    """

    def __init__(self, xp: Any, seed: int, counter: int = 0) -> None:
        if seed < 0:
            raise ValueError(f"seed must be non-negative, got {seed}")
        self.xp = xp
        self.seed = int(seed) & _MASK
        self.counter = int(counter)
        #: signs drawn ahead, by (shape, dtype): (seed, first counter, signs) — see signs()
        self._signs: dict[tuple[Any, ...], tuple[int, int, Any]] = {}

    # -- state -------------------------------------------------------------------------------
    def get_state(self) -> dict[str, int]:
        """The whole state: ``{"seed": s, "counter": c}``."""
        return {"seed": self.seed, "counter": self.counter}

    def set_state(self, state: dict[str, int]) -> None:
        self.seed = int(state["seed"]) & _MASK
        self.counter = int(state["counter"])

    def state_entries(self, prefix: str = "rng.") -> dict[str, int]:
        """The state as entries of a flat state dict: ``{"rng.seed": s, "rng.counter": c}``."""
        return {f"{prefix}seed": self.seed, f"{prefix}counter": self.counter}

    @classmethod
    def from_entries(cls, xp: Any, state: dict[str, Any], prefix: str = "rng.") -> CounterRNG:
        """The generator whose :meth:`state_entries` are in the flat state dict ``state``."""
        return cls(xp, int(state[f"{prefix}seed"]), int(state[f"{prefix}counter"]))

    # -- draws -------------------------------------------------------------------------------
    def bits(self, shape: tuple[int, ...]) -> Any:
        """Uniform random uint64 array of the given shape; advances the counter by one."""
        xp = self.xp
        size = math.prod(shape)
        base = (self.counter * _K1 + _K3) & _MASK
        self.counter += 1
        idx = xp.arange(size, dtype=xp.uint64)
        return xp.reshape(self._hash(idx * _K2 + base), shape)

    def bits_at(self, shape: tuple[int, ...], first: int, count: int, stride: int = 1) -> Any:
        """The draws ``bits(shape)`` would return at the counters first, first + stride, ...,
        first + (count − 1)·stride, stacked: shape (count, *shape). The counter is not changed:
        a caller that draws ahead this way (a task generating many steps at once) keeps its own
        position and sets ``counter`` to where the one-draw-per-call sequence would be."""
        xp = self.xp
        size = math.prod(shape)
        # (c · K1 + K3) mod 2⁶⁴ for each counter c: the same integers as in bits(), computed in
        # wrapping uint64 arithmetic
        counters = xp.arange(count, dtype=xp.uint64) * (int(stride) & _MASK) + (int(first) & _MASK)
        base = counters * _K1 + _K3
        idx = xp.arange(size, dtype=xp.uint64)
        return xp.reshape(self._hash(idx[None, :] * _K2 + base[:, None]), (count, *shape))

    def _hash(self, x: Any) -> Any:
        """mix64(s ⊕ mix64(x)) elementwise, for x = c · K1 + i · K2 + K3 (mod 2⁶⁴)."""
        return _mix(self.xp, _mix(self.xp, x) ^ self.seed)

    @staticmethod
    def to_uniform(xp: Any, bits: Any) -> Any:
        """float64 uniform on [0, 1) from uint64 draws, with their top 53 bits."""
        return xp.astype(bits >> 11, xp.float64) * (1.0 / (1 << 53))

    def uniform(self, shape: tuple[int, ...], dtype: Any, low: float = 0.0,
                high: float = 1.0) -> Any:
        """Uniform draws on [low, high) with 53 random bits each."""
        xp = self.xp
        u = self.to_uniform(xp, self.bits(shape))
        return xp.astype(low + (high - low) * u, dtype)

    def normal(self, shape: tuple[int, ...], dtype: Any) -> Any:
        """Standard normal draws (Box-Muller on two uniform draws)."""
        xp = self.xp
        u1 = 1.0 - self.uniform(shape, xp.float64)  # in (0, 1]
        u2 = self.uniform(shape, xp.float64)
        z = xp.sqrt(-2.0 * xp.log(u1)) * xp.cos((2.0 * math.pi) * u2)
        return xp.astype(z, dtype)

    def signs(self, shape: tuple[int, ...], dtype: Any) -> Any:
        """Independent Rademacher signs (+1 or -1 with probability 1/2 each): the top bit of
        each number of ``bits(shape)``.

        A draw of a few numbers costs a dozen array operations, more than the arithmetic they
        feed in a small network's step, so the signs of the next draws of the same shape are
        computed together (:meth:`bits_at`, up to :data:`SIGNS_AHEAD` numbers) and kept: each
        call returns a copy of its row. The numbers are those of one draw per call — a draw is a
        function of (seed, counter) only —, so the cache needs no state of its own: it is
        used only for the seed and counters it was computed for.
        """
        xp = self.xp
        size = math.prod(shape)
        ahead = SIGNS_AHEAD // max(size, 1)
        if ahead < 2:
            return 2.0 * xp.astype(self.bits(shape) >> 63, dtype) - 1.0
        key = (tuple(shape), dtype)
        cached = self._signs.get(key)
        c = self.counter
        if cached is None or cached[0] != self.seed or not cached[1] <= c < cached[1] + ahead:
            top = xp.astype(self.bits_at(shape, c, ahead) >> 63, dtype)
            cached = (self.seed, c, 2.0 * top - 1.0)
            self._signs[key] = cached
        self.counter = c + 1
        return xp.asarray(cached[2][c - cached[1], ...], copy=True)

    def spawn(self, key: int) -> CounterRNG:
        """An independent generator derived from this one's seed and ``key``."""
        mixed = (self.seed ^ ((key * _K1 + _K2) & _MASK)) & _MASK
        mixed ^= mixed >> 29
        mixed = (mixed * _M1) & _MASK
        return CounterRNG(self.xp, mixed ^ (mixed >> 32))


class ReplicaRNG:
    """The generators of R replicated runs, drawing together: a draw of shape (R, *shape) is the
    R draws of shape ``shape`` that each run's own :class:`CounterRNG` makes, stacked — so
    replica r's numbers are those of the run made alone with seed ``seeds[r]``.

    While every replica's generator is at the same counter (replicas advance together), the
    signs of all of them are one computation: the counter-and-index hash mix64(c·K1 + i·K2 + K3)
    is shared, and only the key differs (mix64(s_r ⊕ ·), with the seeds as an (R, 1) array);
    they are drawn ahead like :meth:`CounterRNG.signs`. Other draws, and replicas whose counters
    differ, draw replica by replica."""

    def __init__(self, xp: Any, seeds: list[int]) -> None:
        self.xp = xp
        self.rngs = [CounterRNG(xp, int(seed)) for seed in seeds]
        self._signs: dict[tuple[Any, ...], tuple[tuple[int, ...], int, Any]] = {}

    def _stacked(self, draw: str, shape: tuple[int, ...], *args: Any) -> Any:
        if int(shape[0]) != len(self.rngs):
            raise ValueError(f"a replicated draw has a leading axis of the {len(self.rngs)} "
                             f"replicas, got shape {tuple(shape)}")
        return self.xp.stack([getattr(rng, draw)(tuple(shape[1:]), *args) for rng in self.rngs])

    def signs(self, shape: tuple[int, ...], dtype: Any) -> Any:
        xp, rngs = self.xp, self.rngs
        counter = rngs[0].counter
        inner = tuple(shape[1:])
        size = math.prod(inner)
        ahead = SIGNS_AHEAD // max(size * len(rngs), 1)
        if (int(shape[0]) != len(rngs) or ahead < 1
                or any(rng.counter != counter for rng in rngs)):
            return self._stacked("signs", shape, dtype)
        seeds = tuple(rng.seed for rng in rngs)
        key = (inner, dtype)
        cached = self._signs.get(key)
        if cached is None or cached[0] != seeds or not cached[1] <= counter < cached[1] + ahead:
            cached = (seeds, counter, self._draw_signs(inner, counter, ahead, seeds, dtype))
            self._signs[key] = cached
        for rng in rngs:
            rng.counter = counter + 1
        return xp.asarray(cached[2][:, counter - cached[1], ...], copy=True)

    def _draw_signs(self, inner: tuple[int, ...], first: int, count: int,
                    seeds: tuple[int, ...], dtype: Any) -> Any:
        """(R, count, *inner) signs: replica r's draws at counters first … first + count − 1."""
        xp = self.xp
        size = math.prod(inner)
        counters = xp.arange(count, dtype=xp.uint64) + (int(first) & _MASK)
        mixed = _mix(xp, xp.arange(size, dtype=xp.uint64)[None, :] * _K2
                     + (counters * _K1 + _K3)[:, None])  # (count, size), shared by the replicas
        keys = xp.reshape(xp.asarray(list(seeds), dtype=xp.uint64), (-1, 1, 1))
        top = xp.astype(_mix(xp, mixed[None, ...] ^ keys) >> 63, dtype)
        return xp.reshape(2.0 * top - 1.0, (len(seeds), count, *inner))

    def uniform(self, shape: tuple[int, ...], dtype: Any, low: float = 0.0,
                high: float = 1.0) -> Any:
        return self._stacked("uniform", shape, dtype, low, high)

    def normal(self, shape: tuple[int, ...], dtype: Any) -> Any:
        return self._stacked("normal", shape, dtype)
