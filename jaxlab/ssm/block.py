"""The pre-norm residual S4/S4D block used by the sequence models.

Precision (:mod:`jaxlab.nn.precision`): the GLU projection and the residual
stream run in ``dtype``; the LayerNorm statistics stay float32, and the SSM
itself (its parameters, discretization, kernel and FFT convolution) always
runs in float32/complex64, whatever ``dtype`` and ``param_dtype`` are.

Sharding: the block's output carries the logical names
``(batch, length, embed)`` (:mod:`jaxlab.nn.sharding`), so under FSDP the
batch stays split and the weights move instead of the activations.

References:
    Gu, Goel, Ré. "Efficiently Modeling Long Sequences with Structured State
    Spaces." ICLR 2022 (Section 3.4 and Appendix D.2: the deep S4 layer).
    Gu, Gupta, Goel, Ré. "On the Parameterization and Initialization of
    Diagonal State Space Models." NeurIPS 2022 (Section 5).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp
from jax import Array

from jaxlab.nn.precision import compute_dtype
from jaxlab.nn.sharding import BATCH, EMBED, LENGTH, constrain
from jaxlab.ssm.layers import SSM, zero_state


def sequence_names(ndim: int) -> tuple[str | None, ...]:
    """Logical names of a sequence ``(..., L, H)``: the first axis is the batch, the last two length and channels."""
    return (BATCH,) + (None,) * (ndim - 3) + (LENGTH, EMBED) if ndim > 2 else (LENGTH, EMBED)[-ndim:]


def token_names(ndim: int) -> tuple[str | None, ...]:
    """Logical names of one decoding step ``(..., H)``: the first axis is the batch, the last the channels."""
    return (BATCH,) + (None,) * (ndim - 2) + (EMBED,) if ndim > 1 else (EMBED,)


def float32_norm(norm: nn.Module, x: Array, dtype: Any) -> Array:
    """``norm(x)`` with its statistics in float32 (a bf16 variance loses the small channels), cast to ``dtype``."""
    return norm(x.astype(jnp.float32)).astype(dtype)


class S4Block(nn.Module):
    """Pre-norm residual block: ``x + Dropout(GLU(Dense(Dropout(GELU(SSM(LayerNorm(x)))))))``.

    Attributes:
        d_model: channels ``H``.
        d_state, kind, init_scheme, discretization, dt_min, dt_max, l_max: forwarded to :class:`SSM`.
        dropout: dropout rate (needs a ``"dropout"`` rng when not deterministic).
        dtype: compute dtype (float32, bfloat16 or float16) of the projection
            and the residual stream; the SSM computes in float32.
        param_dtype: dtype of the LayerNorm and Dense parameters (the SSM's stay float32).

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
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def setup(self):
        # setup runs on the first call (init or apply), before any computation
        self.compute = compute_dtype("dtype", self.dtype)
        compute_dtype("param_dtype", self.param_dtype)
        self.norm = nn.LayerNorm(dtype=jnp.float32, param_dtype=self.param_dtype)
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
        self.out = nn.Dense(2 * self.d_model, dtype=self.compute, param_dtype=self.param_dtype)
        self.drop = nn.Dropout(self.dropout)

    def _mix(self, z: Array, deterministic: bool) -> Array:
        names = sequence_names(z.ndim) if z.ndim > 2 else token_names(z.ndim)  # the step's (B, H) or a sequence
        z = self.drop(nn.gelu(z), deterministic=deterministic)
        hidden = constrain(self.out(z), names)  # (..., 2H): GLU halves, kept whole per example
        return constrain(self.drop(nn.glu(hidden, axis=-1), deterministic=deterministic), names)

    def __call__(self, x: Array, *, mode: str = "conv", deterministic: bool = True) -> Array:
        """``x`` ``(..., L, H)`` → ``(..., L, H)`` in ``dtype``."""
        names = sequence_names(x.ndim)
        z = self.ssm(float32_norm(self.norm, x, self.compute), mode=mode)  # (..., L, H) in dtype, computed in float32
        return constrain(x.astype(self.compute) + self._mix(constrain(z, names), deterministic), names)

    def step(self, x_t: Array, state: Array) -> tuple[Array, Array]:
        """One decoding step on ``x_t`` ``(..., H)``; dropout is off."""
        z, state = self.ssm.step(float32_norm(self.norm, x_t, self.compute), state)
        return constrain(x_t.astype(self.compute) + self._mix(z, True), token_names(x_t.ndim)), state

    def initial_state(self, batch_shape: tuple[int, ...] = ()) -> Array:
        """Zero state of the block's :class:`jaxlab.ssm.SSM`."""
        return zero_state(batch_shape, self.d_model, self.d_state, self.kind)
