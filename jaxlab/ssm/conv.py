"""Causal convolution of a sequence with an SSM kernel through the FFT.

The convolution ``y_ℓ = Σ_{j<=ℓ} K_j u_{ℓ-j}`` of a length-``L`` input with
a length-``L`` kernel is a product of their Fourier transforms once both are
zero-padded to at least ``2L - 1`` samples (no wrap-around), costing
``O(L log L)`` per channel instead of ``O(L²)``.

Precision: the transforms run in float32 (or float64 for float64 inputs)
whatever the input dtype — XLA's FFT takes no bfloat16, and a length-``n``
transform in bf16 would lose most of its digits — and the result is cast
back to the input's dtype.

Sharding: XLA's SPMD partitioner splits an FFT only along its transformed
axis and gathers any other split, so under FSDP it would gather the whole
batch of activations. Inside a mesh with logical-axis rules
(:mod:`jaxlab.nn.sharding`) the convolution therefore runs per device on its
slice of the batch (``jax.shard_map``), the kernel's transform replicated.

References:
    Gu, Goel, Ré. "Efficiently Modeling Long Sequences with Structured State
    Spaces." ICLR 2022 (Section 2.4, Eq. 5; Section 3.3).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import Array
from jax.sharding import PartitionSpec
from jax.typing import ArrayLike

from jaxlab.nn.sharding import BATCH


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
    kf = jnp.fft.rfft(k[:, :L].astype(compute), n=n)  # (H, n//2+1)

    def convolve(u: Array, kf: Array) -> Array:  # (..., L, H), (H, n//2+1) -> (..., L, H)
        uf = jnp.fft.rfft(jnp.swapaxes(u, -1, -2).astype(compute), n=n)  # (..., H, n//2+1)
        y = jnp.fft.irfft(uf * kf, n=n)[..., :L]  # (..., H, L)
        return jnp.swapaxes(y, -1, -2).astype(u.dtype)

    return _per_batch_shard(convolve, u, kf)


def _batch_mesh_axes(batch: int) -> tuple[str, ...]:
    """The mesh axes the active logical rules split ``"batch"`` over, if they divide ``batch``; else ()."""
    rules, mesh = nn.get_logical_axis_rules(), jax.sharding.get_abstract_mesh()
    if not rules or mesh.empty:
        return ()
    spec = nn.logical_to_mesh_axes((BATCH,), rules)
    axes = spec[0] if spec is not None else None
    names = (axes,) if isinstance(axes, str) else tuple(axes or ())
    ways = math.prod(mesh.shape[name] for name in names)
    return names if ways > 1 and batch % ways == 0 else ()


def _per_batch_shard(convolve: Callable[[Array, Array], Array], u: Array, kf: Array) -> Array:
    """``convolve(u, kf)``, run on each device's slice of ``u``'s leading (batch) axis when a mesh splits it."""
    axes = _batch_mesh_axes(u.shape[0]) if u.ndim > 2 else ()
    if not axes:
        return convolve(u, kf)
    spec = PartitionSpec(axes)
    return jax.shard_map(convolve, mesh=jax.sharding.get_abstract_mesh(), in_specs=(spec, PartitionSpec()), out_specs=spec)(u, kf)
