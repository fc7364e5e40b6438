"""Causal convolution of a sequence with an SSM kernel through the FFT.

The convolution ``y_ℓ = Σ_{j<=ℓ} K_j u_{ℓ-j}`` of a length-``L`` input with
a length-``L`` kernel is a product of their Fourier transforms once both are
zero-padded to at least ``2L - 1`` samples (no wrap-around), costing
``O(L log L)`` per channel instead of ``O(L²)``.

Precision: the transforms run in float32 (or float64 for float64 inputs)
whatever the input dtype — XLA's FFT takes no bfloat16, and a length-``n``
transform in bf16 would lose most of its digits — and the result is cast
back to the input's dtype.

References:
    Gu, Goel, Ré. "Efficiently Modeling Long Sequences with Structured State
    Spaces." ICLR 2022 (Section 2.4, Eq. 5; Section 3.3).
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import Array
from jax.typing import ArrayLike


def fft_length(L: int) -> int:
    """FFT size for a causal convolution of length ``L``.

    Args:
        L: sequence length.

    Returns:
        The smallest power of two ``>= 2L - 1`` (zero padding without
        wrap-around).

    References:
        Gu, Goel, Ré. S4 (ICLR 2022), Section 2.4.
    """
    return 1 << max(0, (2 * L - 2).bit_length())


def causal_conv(u: ArrayLike, k: ArrayLike) -> Array:
    """Per-channel causal convolution ``y[..., ℓ, h] = Σ_{j<=ℓ} k[h, j] u[..., ℓ-j, h]``.

    The kernel is transformed once and broadcast over the batch axes, so its
    cost does not grow with the batch size.

    Args:
        u: input ``(..., L, H)``, real.
        k: kernel ``(H, L_k)`` with ``L_k >= L`` (only the first ``L`` taps are
            used).

    Returns:
        ``(..., L, H)`` output with the dtype of ``u`` (computed in float32,
        or float64 if ``u`` or ``k`` is float64).

    Raises:
        ValueError: if ``u`` has fewer than two axes, or ``k`` is not
            ``(H, L_k)`` with matching ``H`` and ``L_k >= L``.

    References:
        Gu, Goel, Ré. S4 (ICLR 2022), Section 2.4.
    """
    u, k = jnp.asarray(u), jnp.asarray(k)
    if u.ndim < 2:
        raise ValueError(f"u: expected shape (..., L, H), received {u.shape}")
    L, H = u.shape[-2:]
    if k.ndim != 2 or k.shape[0] != H or k.shape[1] < L:
        raise ValueError(f"k: expected shape (H, L_k) = ({H}, >= {L}), received {k.shape}")
    n = fft_length(L)
    compute = jnp.promote_types(jnp.promote_types(u.dtype, k.dtype), jnp.float32)  # bf16/f16 -> f32
    uf = jnp.fft.rfft(jnp.swapaxes(u, -1, -2).astype(compute), n=n)  # (..., H, n//2+1)
    kf = jnp.fft.rfft(k[:, :L].astype(compute), n=n)  # (H, n//2+1)
    y = jnp.fft.irfft(uf * kf, n=n)[..., :L]  # (..., H, L)
    return jnp.swapaxes(y, -1, -2).astype(u.dtype)
