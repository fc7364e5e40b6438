"""The O(L·N²) reference SSM convolution kernel, by unrolling the recurrence.

References:
    Gu, Goel, Ré. "Efficiently Modeling Long Sequences with Structured State
    Spaces." ICLR 2022 (Section 2.4, Eq. 4-5).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import Array
from jax.typing import ArrayLike

from jaxlab._checks import check_positive_int, check_shape


def ssm_kernel_naive(Ab: ArrayLike, Bb: ArrayLike, Cb: ArrayLike, L: int) -> Array:
    """``K = (C̄B̄, C̄ĀB̄, …, C̄Ā^{L-1}B̄)`` by ``L`` matrix-vector products.

    Args:
        Ab: discrete state matrix Ā, ``(N, N)``.
        Bb: discrete input vector B̄, ``(N,)``.
        Cb: output vector C̄, ``(N,)``.
        L: kernel length.

    Returns:
        ``(L,)`` kernel, in the common dtype of the inputs (complex inputs give
        a complex kernel; take its real part for a real system).

    Raises:
        ValueError: on mismatched shapes or a non-positive ``L``.

    References:
        Gu, Goel, Ré. S4 (ICLR 2022), Eq. 5.
    """
    check_positive_int("L", L)
    Ab, Bb, Cb = jnp.asarray(Ab), jnp.asarray(Bb), jnp.asarray(Cb)
    n = Ab.shape[0] if Ab.ndim else 0
    check_shape("Ab", Ab.shape, (n, n), "(N, N)")
    check_shape("Bb", Bb.shape, (n,), "(N,)")
    check_shape("Cb", Cb.shape, (n,), "(N,)")
    dtype = jnp.result_type(Ab, Bb, Cb)
    Ab, Bb, Cb = Ab.astype(dtype), Bb.astype(dtype), Cb.astype(dtype)

    hi = jax.lax.Precision.HIGHEST

    def body(x, _):
        return jnp.dot(Ab, x, precision=hi), jnp.dot(Cb, x, precision=hi)

    _, k = jax.lax.scan(body, Bb, None, length=L)
    return k
