"""Linen layer: the S4/S4D sequence map, with three agreeing modes and a decode step.

:class:`SSM` maps ``(..., L, H)`` to ``(..., L, H)`` with ``H`` independent
SSMs of state size ``N`` (``N/2`` stored conjugate modes) and a skip ``D``:

* ``mode="conv"`` (training): the kernel ``(H, L)`` is computed once, whatever
  the batch size, and applied by FFT convolution;
* ``mode="scan"``: the discretized recurrence with ``jax.lax.scan``;
* ``mode="assoc"`` (S4D only): the recurrence with ``jax.lax.associative_scan``;
* :meth:`SSM.step`: one token with a carried state, for autoregressive decoding.

Parameterization (S4/S4D papers): ``log Δ`` drawn uniformly in
``[log dt_min, log dt_max]``; ``Re λ = -exp(lambda_log_neg_re)`` stays
negative; ``Im λ``, ``B``, ``P`` and ``C`` are stored as real arrays (complex
numbers as trailing real pairs). The names ``log_step``, ``lambda_log_neg_re``,
``lambda_im``, ``B`` and ``P`` are what :func:`jaxlab.ssm.ssm_param_labels`
recognizes.

Precision: parameters are float32; the input (and output) may be bfloat16.
The kernel, the FFT convolution, the recurrences and the skip term run in
float32 and the result is cast back to the input's dtype.

References:
    Gu, Goel, Ré. "Efficiently Modeling Long Sequences with Structured State
    Spaces." ICLR 2022 (Sections 3-4).
    Gu, Gupta, Goel, Ré. "On the Parameterization and Initialization of
    Diagonal State Space Models." NeurIPS 2022 (Sections 3-5).
"""

from __future__ import annotations

import math
from typing import cast

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from jaxlab._checks import check_choice, check_positive_int
from jaxlab.ssm.conv import causal_conv
from jaxlab.ssm.nplr import dplr_legs
from jaxlab.ssm.recurrence import dense_scan, dense_step, diag_associative_scan, diag_scan, diag_step
from jaxlab.ssm.s4 import S4Params, s4_kernel, s4_recurrence
from jaxlab.ssm.s4d import DIAG_METHODS, S4D_INITS, S4DParams, s4d_discretize, s4d_init, s4d_kernel

KINDS = ("s4d", "s4")
MODES = ("conv", "scan", "assoc")


def zero_state(batch_shape: tuple[int, ...], features: int, d_state: int, kind: str) -> Array:
    """Zero recurrent state of an :class:`SSM` layer, for decoding.

    Args:
        batch_shape: leading batch axes.
        features: channels ``H``.
        d_state: state size ``N``.
        kind: ``"s4d"`` or ``"s4"``.

    Returns:
        complex64 zeros ``(*batch_shape, H, N/2)`` (S4D: one of each
        conjugate pair) or ``(*batch_shape, H, N)`` (S4: the full basis).

    References:
        Gu, Goel, Ré. S4 (ICLR 2022), Section 2.3 (recurrent view).
    """
    check_choice("kind", kind, KINDS)
    size = d_state if kind == "s4" else d_state // 2
    return jnp.zeros((*batch_shape, features, size), jnp.complex64)


def _const(value: np.ndarray):
    def init(key, shape, dtype=jnp.float32):
        return jnp.broadcast_to(jnp.asarray(value, dtype), shape)

    return init


def _pairs(z: np.ndarray) -> np.ndarray:
    return np.stack([z.real, z.imag], axis=-1)


def _complex(pairs: Array) -> Array:
    return jax.lax.complex(pairs[..., 0], pairs[..., 1])


class SSM(nn.Module):
    """``H`` single-input single-output SSMs (S4D diagonal or S4 DPLR) over a sequence.

    Attributes:
        features: number of channels ``H``.
        d_state: state size ``N`` (even; ``N/2`` conjugate modes are stored).
        kind: ``"s4d"`` (diagonal, Vandermonde kernel) or ``"s4"`` (DPLR
            LegS, Cauchy + Woodbury kernel, bilinear).
        init_scheme: S4D initialization ``"lin"``, ``"inv"``, ``"legs"`` or ``"real"``
            (S4 always starts from LegS).
        discretization: S4D discretization, ``"zoh"`` or ``"bilinear"``.
        dt_min, dt_max: range of the log-uniform initial step sizes.
        l_max: S4 only: the kernel length ``C̃`` refers to; inputs may be at most
            this long.

    References:
        Gu, Goel, Ré. S4 (ICLR 2022), Sections 3.3-3.4; Gu et al. S4D
        (NeurIPS 2022), Sections 3-4.
    """

    features: int
    d_state: int = 64
    kind: str = "s4d"
    init_scheme: str = "legs"
    discretization: str = "zoh"
    dt_min: float = 1e-3
    dt_max: float = 1e-1
    l_max: int | None = None

    def setup(self):
        check_positive_int("features", self.features)
        check_positive_int("d_state", self.d_state, even=True)
        check_choice("kind", self.kind, KINDS)
        check_choice("init_scheme", self.init_scheme, S4D_INITS)
        check_choice("discretization", self.discretization, DIAG_METHODS)
        if self.kind == "s4" and (self.l_max is None or self.l_max < 1):
            raise ValueError(f"l_max: expected a positive int for kind='s4', received {self.l_max!r}")
        H, M = self.features, self.d_state // 2
        if self.kind == "s4":
            form = dplr_legs(self.d_state)
            lam, b = form.lambda_, form.b
            self.P = self.param("P", _const(_pairs(form.p)), (H, M, 2))
        else:
            lam, b = s4d_init(self.init_scheme, self.d_state)
        lo, hi = math.log(self.dt_min), math.log(self.dt_max)
        self.log_step = self.param("log_step", lambda k, s: jax.random.uniform(k, s, minval=lo, maxval=hi), (H,))
        self.lambda_log_neg_re = self.param("lambda_log_neg_re", _const(np.log(-lam.real)), (H, M))
        self.lambda_im = self.param("lambda_im", _const(lam.imag), (H, M))
        self.B = self.param("B", _const(_pairs(b)), (H, M, 2))
        self.C = self.param("C", nn.initializers.normal(math.sqrt(0.5)), (H, M, 2))
        self.D = self.param("D", nn.initializers.normal(1.0), (H,))

    def ssm_params(self) -> S4DParams | S4Params:
        """The complex continuous-time parameters (:class:`S4DParams` or :class:`S4Params`)."""
        lam = jax.lax.complex(-jnp.exp(self.lambda_log_neg_re), self.lambda_im)
        step = jnp.exp(self.log_step)
        if self.kind == "s4":
            return S4Params(lam, _complex(self.P), _complex(self.B), _complex(self.C), step)
        return S4DParams(lam, _complex(self.B), _complex(self.C), step)

    @property
    def _s4_l_max(self) -> int:
        """``l_max``, which setup requires for kind='s4', the only kind that reads it."""
        return cast(int, self.l_max)

    def kernel(self, L: int) -> Array:
        """Convolution kernel ``(H, L)`` (S4: computed at ``l_max`` and truncated)."""
        params = self.ssm_params()
        if isinstance(params, S4Params):
            return s4_kernel(params, self._s4_l_max)[:, :L]
        return s4d_kernel(params, L, method=self.discretization)

    def _recurrence(self):
        params = self.ssm_params()
        if isinstance(params, S4Params):
            return s4_recurrence(params, self._s4_l_max)
        Ab, Bb = s4d_discretize(params, self.discretization)
        return Ab, Bb, params.c

    def __call__(self, u: Array, *, mode: str = "conv") -> Array:
        """Apply the SSM to ``u`` ``(..., L, H)``; returns ``(..., L, H)`` in ``u``'s dtype (computed in float32).

        Raises:
            ValueError: on a bad ``mode``, a last axis other than ``features``,
                a non-floating ``u``, or (S4) a sequence longer than ``l_max``.
        """
        check_choice("mode", mode, MODES)
        if u.ndim < 2 or u.shape[-1] != self.features:
            raise ValueError(f"u: expected shape (..., L, H) with H = {self.features}, received {u.shape}")
        if not jnp.issubdtype(u.dtype, jnp.floating):
            raise ValueError(f"u: expected a floating array, received dtype {u.dtype}")
        out_dtype, u = u.dtype, u.astype(jnp.promote_types(u.dtype, jnp.float32))
        L = u.shape[-2]
        if self.kind == "s4" and L > self._s4_l_max:
            raise ValueError(f"u: expected length L <= l_max = {self.l_max}, received L = {L}")
        if mode == "assoc" and self.kind == "s4":
            raise ValueError("mode: 'assoc' is only available for kind='s4d', received kind='s4'")
        if mode == "conv":
            y = causal_conv(u, self.kernel(L))
        else:
            Ab, Bb, C = self._recurrence()
            if self.kind == "s4":
                y, _ = dense_scan(Ab, Bb, C, u)
            else:
                y, _ = (diag_scan if mode == "scan" else diag_associative_scan)(Ab, Bb, C, u)
        return (y + self.D * u).astype(out_dtype)

    def step(self, u_t: Array, state: Array) -> tuple[Array, Array]:
        """One decoding step: ``u_t`` ``(..., H)`` and the carried ``state`` → ``(y_t, state)``.

        The discretization is recomputed from the parameters at each call
        (``O(H·N)`` for S4D; ``O(H·N³ log l_max)`` for S4, whose ``C̄`` needs
        ``Ā^l_max``); under ``jit`` of a decoding loop with fixed parameters
        XLA can hoist it out of the loop.
        """
        if u_t.shape[-1:] != (self.features,):
            raise ValueError(f"u_t: expected shape (..., H) with H = {self.features}, received {u_t.shape}")
        out_dtype, u_t = u_t.dtype, u_t.astype(jnp.promote_types(u_t.dtype, jnp.float32))
        Ab, Bb, C = self._recurrence()
        y, state = (dense_step if self.kind == "s4" else diag_step)(Ab, Bb, C, state, u_t)
        return (y + self.D * u_t).astype(out_dtype), state

    def initial_state(self, batch_shape: tuple[int, ...] = ()) -> Array:
        """Zero state ``(*batch_shape, H, N/2)`` (S4D) or ``(*batch_shape, H, N)`` (S4), complex64."""
        return zero_state(batch_shape, self.features, self.d_state, self.kind)
