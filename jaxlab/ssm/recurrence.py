"""Recurrent views of a discrete SSM: sequential scan, associative scan, single step.

Inputs follow the layer layout ``u: (..., L, H)``: ``H`` independent
single-input single-output systems, each with its own ``(Ā, B̄, C)``.

* Diagonal (S4D): ``Ā, B̄, C`` of shape ``(H, M)`` over one of each pair of
  conjugate modes; state ``(..., H, M)``; output ``y = 2 Re(C·x)``.
* Dense (S4): ``Ā`` ``(H, N, N)``, ``B̄, C`` ``(H, N)`` over the full complex
  basis; state ``(..., H, N)``; output ``y = Re(C·x)``.

The skip term ``D u`` is left to the caller.

References:
    Gu, Goel, Ré. "Efficiently Modeling Long Sequences with Structured State
    Spaces." ICLR 2022 (Section 2.3: the recurrent view).
    Smith, Warrington, Linderman. "Simplified State Space Layers for Sequence
    Modeling." ICLR 2023 (Section 2.2: parallel scans for diagonal SSMs).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import Array
from jax.typing import ArrayLike

_HI = jax.lax.Precision.HIGHEST


def _time_major(u: Array) -> Array:
    if u.ndim < 2:
        raise ValueError(f"u: expected shape (..., L, H), received {u.shape}")
    return jnp.moveaxis(u, -2, 0)  # (L, ..., H)


def _zeros_state(u_t: Array, size: int, dtype) -> Array:
    return jnp.zeros(u_t.shape + (size,), dtype)


def diag_step(Ab: ArrayLike, Bb: ArrayLike, C: ArrayLike, x: ArrayLike, u_t: ArrayLike) -> tuple[Array, Array]:
    """One step ``x ← Ā x + B̄ u_t``, ``y_t = 2 Re(C·x)`` of a diagonal SSM.

    Args:
        Ab, Bb, C: ``(H, M)`` complex.
        x: state ``(..., H, M)`` complex.
        u_t: input ``(..., H)`` real.

    Returns:
        ``(y_t, x)``: output ``(..., H)`` (dtype of ``u_t``) and the new state.

    References:
        Gu et al. S4D (NeurIPS 2022), Section 3.
    """
    u_t = jnp.asarray(u_t)
    x = jnp.add(Ab * x, Bb * u_t[..., None])
    y = 2.0 * jnp.sum((C * x).real, axis=-1)
    return y.astype(u_t.dtype), x


def dense_step(Ab: ArrayLike, Bb: ArrayLike, C: ArrayLike, x: ArrayLike, u_t: ArrayLike) -> tuple[Array, Array]:
    """One step ``x ← Ā x + B̄ u_t``, ``y_t = Re(C·x)`` of a dense complex SSM.

    Args:
        Ab: ``(H, N, N)``; Bb, C: ``(H, N)``; all complex.
        x: state ``(..., H, N)``.
        u_t: input ``(..., H)`` real.

    Returns:
        ``(y_t, x)``: output ``(..., H)`` and the new state.

    References:
        Gu, Goel, Ré. S4 (ICLR 2022), Section 2.3.
    """
    u_t = jnp.asarray(u_t)
    x = jnp.einsum("hij,...hj->...hi", Ab, x, precision=_HI) + Bb * u_t[..., None]
    y = jnp.sum((C * x).real, axis=-1)
    return y.astype(u_t.dtype), x


def _scan(step, Ab, Bb, C, u, x0, size):
    u = jnp.asarray(u)
    us = _time_major(u)
    dtype = jnp.result_type(Ab, Bb, C)
    x = _zeros_state(us[0], size, dtype) if x0 is None else jnp.asarray(x0, dtype)

    def body(x, u_t):
        y, x = step(Ab, Bb, C, x, u_t)
        return x, y

    x, ys = jax.lax.scan(body, x, us)
    return jnp.moveaxis(ys, 0, -2), x


def diag_scan(Ab: ArrayLike, Bb: ArrayLike, C: ArrayLike, u: ArrayLike, x0: ArrayLike | None = None) -> tuple[Array, Array]:
    """Run a diagonal SSM over a sequence with ``jax.lax.scan``.

    Args:
        Ab, Bb, C: ``(H, M)`` complex.
        u: input ``(..., L, H)``.
        x0: initial state ``(..., H, M)``; zeros when ``None``.

    Returns:
        ``(y, x_last)``: output ``(..., L, H)`` and final state ``(..., H, M)``.

    References:
        Gu et al. S4D (NeurIPS 2022), Section 3.
    """
    return _scan(diag_step, Ab, Bb, C, u, x0, jnp.shape(Ab)[-1])


def dense_scan(Ab: ArrayLike, Bb: ArrayLike, C: ArrayLike, u: ArrayLike, x0: ArrayLike | None = None) -> tuple[Array, Array]:
    """Run a dense complex SSM (S4's recurrent view) over a sequence with ``jax.lax.scan``.

    Args:
        Ab: ``(H, N, N)``; Bb, C: ``(H, N)``.
        u: input ``(..., L, H)``.
        x0: initial state ``(..., H, N)``; zeros when ``None``.

    Returns:
        ``(y, x_last)``: output ``(..., L, H)`` and final state ``(..., H, N)``.

    References:
        Gu, Goel, Ré. S4 (ICLR 2022), Section 2.3.
    """
    return _scan(dense_step, Ab, Bb, C, u, x0, jnp.shape(Ab)[-1])


def diag_associative_scan(Ab: ArrayLike, Bb: ArrayLike, C: ArrayLike, u: ArrayLike, x0: ArrayLike | None = None) -> tuple[Array, Array]:
    """Diagonal SSM over a sequence with ``jax.lax.associative_scan`` (``O(log L)`` depth).

    The pairs ``(a, b)`` of the maps ``x ↦ a x + b`` compose associatively as
    ``(a₂a₁, a₂b₁ + b₂)``; every state is materialized, ``(L, ..., H, M)``.

    Args:
        Ab, Bb, C: ``(H, M)`` complex.
        u: input ``(..., L, H)``.
        x0: initial state ``(..., H, M)``; zeros when ``None``.

    Returns:
        ``(y, x_last)`` as :func:`diag_scan`.

    References:
        Smith, Warrington, Linderman. S5 (ICLR 2023), Section 2.2 and
        Appendix H; Blelloch. "Prefix sums and their applications." 1990.
    """
    Ab, Bb, C, u = (jnp.asarray(x) for x in (Ab, Bb, C, u))
    us = _time_major(u)  # (L, ..., H)
    b = Bb * us[..., None]  # (L, ..., H, M)
    a = jnp.broadcast_to(Ab, b.shape)

    def combine(left, right):
        a1, b1 = left
        a2, b2 = right
        return a2 * a1, a2 * b1 + b2

    a_cum, xs = jax.lax.associative_scan(combine, (a, b), axis=0)
    if x0 is not None:
        xs = xs + a_cum * jnp.asarray(x0, xs.dtype)
    y = 2.0 * jnp.sum((C * xs).real, axis=-1)  # (L, ..., H)
    return jnp.moveaxis(y, 0, -2).astype(u.dtype), xs[-1]
