"""The influence-balancing system: a linear model whose short-term and long-term gradients disagree.

    s_t = A s_{t-1} + θ b,   A = ½ I + ½ S   (S the superdiagonal shift: (S s)_k = s_{k+1})
    b   = (+1 × p, −1 × (n − p)),   s_0 = (1, ..., 1)
    ŷ_t = s_t¹   (the first coordinate; no readout parameters)

Tallec & Ollivier, "Unbiased online recurrent optimization" (ICLR 2018), §5: with the loss
½(ŷ − 1)², a parameter change reaches s¹ first through the p positive coordinates and only after
p steps through the n − p negative ones. The fixed point is s* = (I − A)⁻¹ b θ, s*_k =
2θ Σ_{j ≥ k} b_j, so s*¹ = 2θ(2p − n) (= −6θ for n = 23, p = 10): the long-run loss is minimal at
θ* = 1 / (2(2p − n)) = −1/6, while a gradient truncated to fewer than p steps sees
∂s¹/∂θ = (number of steps) > 0 and pushes θ the wrong way (docs/architecture.md §4: for every
truncation up to 40 with the defaults).

Primitives (θ is a scalar, P_rec = 1, P_out = 0):

    J_t V      = ½ V + ½ S V          Uᵀ J_t = ½ U + ½ Sᵀ U      J_t = ½ I + ½ S (dense)
    F_t        = b                    Uᵀ F_t = U · b
    Σ_j F_t[k, j]² / m_j = b_k² / m_θ = 1 / m_θ

The model ignores its input: a task feeds x_t of shape (B, n_in) (n_in = 0 by default; the
trainer sets n_in and n_out from the task, and n_out can only be 1).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from gradflow import Model, ParamLayout

Array = Any


class InfluenceOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n: int = Field(23, ge=2, description="state size n")
    p: int = Field(10, ge=1, description="number of positive coordinates of b (1 ≤ p < n)")
    theta0: float = Field(0.5, description="initial value of the scalar parameter θ")
    n_in: int = Field(0, ge=0, description="size of the (ignored) input x_t")
    n_out: int = Field(1, ge=1, le=1, description="output size: ŷ = s¹, always 1")

    @model_validator(mode="after")
    def _p_below_n(self) -> InfluenceOptions:
        if self.p >= self.n:
            raise ValueError(f"p ({self.p}) must be smaller than n ({self.n})")
        return self


class Influence(Model):
    name = "influence"
    description = "influence balancing: s' = A s + θ b, ŷ = s¹ (truncated gradients point wrong)"
    Options = InfluenceOptions

    def __init__(self, options: InfluenceOptions, backend: Any) -> None:
        super().__init__(options, backend)
        xp, n, p = self.xp, options.n, options.p
        self.n_state = n
        self.layout = ParamLayout([("theta", (1,))])
        self.b = xp.concat([xp.ones((p,), dtype=self.dtype), -xp.ones((n - p,), dtype=self.dtype)])

    # -- parameters and state ----------------------------------------------------------------
    def init_params(self, seed: int = 0) -> Array:
        """θ = theta0 (deterministic: the seed is not used)."""
        return self.xp.full((1,), self.options.theta0, dtype=self.dtype)

    def initial_state(self, batch: int) -> Array:
        return self.xp.ones((batch, self.n_state), dtype=self.dtype)

    def fixed_point(self, theta: Array) -> Array:
        """s* = (I − A)⁻¹ b θ, i.e. s*_k = 2θ Σ_{j ≥ k} b_j, shape (n,)."""
        xp = self.xp
        tail = xp.flip(xp.cumulative_sum(xp.flip(self.b)))
        return 2.0 * theta[0] * tail

    # -- one step ----------------------------------------------------------------------------
    def _shift_up(self, v: Array) -> Array:
        """S v along axis 1: (S v)_k = v_{k+1}, (S v)_{n-1} = 0 (any trailing axes)."""
        xp = self.xp
        return xp.concat([v[:, 1:, ...], xp.zeros_like(v[:, :1, ...])], axis=1)

    def _shift_down(self, u: Array) -> Array:
        """Sᵀ u: (Sᵀ u)_k = u_{k-1}, (Sᵀ u)_0 = 0."""
        xp = self.xp
        return xp.concat([xp.zeros_like(u[:, :1]), u[:, :-1]], axis=1)

    def forward(self, theta: Array, h: Array, x: Array) -> tuple[Array, dict[str, Array]]:
        h_next = 0.5 * h + 0.5 * self._shift_up(h) + theta[0] * self.b
        return h_next, {"h": h}

    def readout(self, theta: Array, h: Array) -> Array:
        return h[:, :1]

    def readout_vjp(self, theta: Array, h: Array, u: Array) -> tuple[Array, Array]:
        xp = self.xp
        gh = xp.concat([u, xp.zeros((h.shape[0], self.n_state - 1), dtype=h.dtype)], axis=1)
        return gh, xp.zeros((0,), dtype=h.dtype)

    # -- derivatives -------------------------------------------------------------------------
    def jvp_state(self, theta: Array, cache: dict[str, Array], v: Array) -> Array:
        return 0.5 * v + 0.5 * self._shift_up(v)

    def vjp(self, theta: Array, cache: dict[str, Array], u: Array) -> tuple[Array, Array]:
        return 0.5 * u + 0.5 * self._shift_down(u), u @ self.b[:, None]

    def param_jacobian(self, theta: Array, cache: dict[str, Array]) -> Array:
        xp, h = self.xp, cache["h"]
        return xp.zeros((h.shape[0], self.n_state, 1), dtype=h.dtype) + self.b[None, :, None]

    def state_jacobian(self, theta: Array, cache: dict[str, Array]) -> Array:
        """J_t = ½ I + ½ S for every stream, shape (B, n, n)."""
        xp, n, h = self.xp, self.n_state, cache["h"]
        one = 0.5 * (xp.eye(n, dtype=h.dtype) + xp.eye(n, k=1, dtype=h.dtype))
        return xp.zeros((h.shape[0], n, n), dtype=h.dtype) + one[None, :, :]

    def param_jacobian_accumulate(self, theta: Array, cache: dict[str, Array],
                                  acc: Array) -> None:
        """acc += F_t = b (P_rec = 1: the one column)."""
        column = acc[:, :, 0]
        column += self.b[None, :]

    def param_row_sqnorms(self, theta: Array, cache: dict[str, Array],
                          inv_metric: Array | None = None) -> Array:
        xp = self.xp
        rows = self.b * self.b if inv_metric is None else self.b * self.b * inv_metric[0]
        return xp.zeros_like(cache["h"]) + rows[None, :]
