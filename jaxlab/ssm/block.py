"""The pre-norm residual S4/S4D block used by the sequence models.

References:
    Gu, Goel, Ré. "Efficiently Modeling Long Sequences with Structured State
    Spaces." ICLR 2022 (Section 3.4 and Appendix D.2: the deep S4 layer).
    Gu, Gupta, Goel, Ré. "On the Parameterization and Initialization of
    Diagonal State Space Models." NeurIPS 2022 (Section 5).
"""

from __future__ import annotations

import flax.linen as nn
from jax import Array

from jaxlab.ssm.layers import SSM, zero_state


class S4Block(nn.Module):
    """Pre-norm residual block: ``x + Dropout(GLU(Dense(Dropout(GELU(SSM(LayerNorm(x)))))))``.

    Attributes:
        d_model: channels ``H``.
        d_state, kind, init_scheme, discretization, dt_min, dt_max, l_max: forwarded to :class:`SSM`.
        dropout: dropout rate (needs a ``"dropout"`` rng when not deterministic).

    References:
        Gu, Goel, Ré. S4 (ICLR 2022), Section 3.4 and Appendix D.2;
        Gu et al. S4D (NeurIPS 2022), Section 5.
    """

    d_model: int
    d_state: int = 64
    kind: str = "s4d"
    init_scheme: str = "legs"
    discretization: str = "zoh"
    dt_min: float = 1e-3
    dt_max: float = 1e-1
    l_max: int | None = None
    dropout: float = 0.0

    def setup(self):
        self.norm = nn.LayerNorm()
        self.ssm = SSM(
            features=self.d_model,
            d_state=self.d_state,
            kind=self.kind,
            init_scheme=self.init_scheme,
            discretization=self.discretization,
            dt_min=self.dt_min,
            dt_max=self.dt_max,
            l_max=self.l_max,
        )
        self.out = nn.Dense(2 * self.d_model)
        self.drop = nn.Dropout(self.dropout)

    def _mix(self, z: Array, deterministic: bool) -> Array:
        z = self.drop(nn.gelu(z), deterministic=deterministic)
        return self.drop(nn.glu(self.out(z), axis=-1), deterministic=deterministic)

    def __call__(self, x: Array, *, mode: str = "conv", deterministic: bool = True) -> Array:
        """``x`` ``(..., L, H)`` → ``(..., L, H)``."""
        return x + self._mix(self.ssm(self.norm(x), mode=mode), deterministic)

    def step(self, x_t: Array, state: Array) -> tuple[Array, Array]:
        """One decoding step on ``x_t`` ``(..., H)``; dropout is off."""
        z, state = self.ssm.step(self.norm(x_t), state)
        return x_t + self._mix(z, True), state

    def initial_state(self, batch_shape: tuple[int, ...] = ()) -> Array:
        """Zero state of the block's :class:`jaxlab.ssm.SSM`."""
        return zero_state(batch_shape, self.d_model, self.d_state, self.kind)
