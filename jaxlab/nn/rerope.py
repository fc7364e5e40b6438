"""ReRoPE and Leaky ReRoPE: RoPE with the relative position clipped beyond a window.

RoPE's logit between a query at m and a key at n depends on ``m − n``.
ReRoPE replaces that relative position by

    m − n                          if m − n < w,
    w + (m − n − w)/k              otherwise (Leaky ReRoPE; ReRoPE is k = ∞),

so no relative position exceeds those seen in training when w and k are
chosen for it. A clipped relative position is not a difference of two
absolute ones, so the logits are evaluated twice — once with ordinary RoPE
for the window, once with q rotated by ``m/k + w(1 − 1/k)`` and k by
``n/k`` — and merged by the mask ``m − n < w``. Causal masking is left to the
caller (positions with m < n get the in-window value).

References:
  Su 2023, "Transformer upgrade road 12: ReRoPE for infinite extrapolation"
  (kexue.fm/archives/9708), and "… 13: inverse use of Leaky ReRoPE"
  (kexue.fm/archives/9728).
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import Array

from jaxlab.nn.rope import apply_rope, rope_angles


def _grouped_angles(positions: Array, frequencies: Array, ndim: int) -> Array:
    """Angles (t, d/2) or (b, t, d/2) shaped to broadcast over a head-major array of rank ``ndim``."""
    angles = rope_angles(positions, frequencies)
    if angles.ndim == 3:  # batched positions: (b, 1, …, 1, t, d/2)
        angles = angles.reshape(angles.shape[:1] + (1,) * (ndim - 3) + angles.shape[1:])
    return angles


def grouped_logits(q: Array, k: Array) -> Array:
    """Dot products in the head-major grouped layout: (b, kv, g, t, d) · (b, kv, s, d) → (b, kv, g, t, s), float32."""
    return jnp.einsum("bkgtd,bksd->bkgts", q, k, preferred_element_type=jnp.float32)


def relative_positions(q_positions: Array, k_positions: Array) -> Array:
    """``m − n`` as (t, s), or (b, t, s) for batched positions."""
    q_positions = jnp.asarray(q_positions, jnp.float32)
    k_positions = jnp.asarray(k_positions, jnp.float32)
    return q_positions[..., :, None] - k_positions[..., None, :]


def rectified_relative_positions(relative: Array, *, window: int, slope: float) -> Array:
    """The relative positions ReRoPE uses: ``m − n`` inside the window, ``w + slope·(m − n − w)`` beyond."""
    return jnp.where(relative < window, relative, window + slope * (relative - window))


def rerope_logits(
    q: Array,
    k: Array,
    q_positions: Array,
    k_positions: Array,
    frequencies: Array,
    *,
    window: int,
    slope: float = 0.0,
) -> Array:
    """Unscaled attention logits with (Leaky) ReRoPE.

    Args:
      q: (b, kv, g, t, d) queries (not rotated), grouped by key-value head.
      k: (b, kv, s, d) keys (not rotated).
      q_positions: (t,) or (b, t) query positions m.
      k_positions: (s,) or (b, s) key positions n.
      frequencies: (d/2,) rotation frequencies.
      window: w; relative positions below it are exact.
      slope: 1/k beyond the window; 0 is ReRoPE.

    Returns:
      float32 (b, kv, g, t, s) logits ``⟨q, R_{r(m−n)} k⟩``.

    Raises:
      ValueError: on mismatched shapes or a slope outside [0, 1).

    References:
      Su 2023, kexue.fm/archives/9708 and /9728.
    """
    if q.ndim != 5 or k.ndim != 4 or q.shape[-1] != k.shape[-1] or q.shape[:2] != k.shape[:2]:
        raise ValueError(f"`q` (b, kv, g, t, d) and `k` (b, kv, s, d) must agree; got {q.shape} and {k.shape}.")
    if not 0.0 <= slope < 1.0:
        raise ValueError(f"`slope` must be in [0, 1); got {slope!r}.")
    q_positions = jnp.asarray(q_positions, jnp.float32)
    k_positions = jnp.asarray(k_positions, jnp.float32)
    near = grouped_logits(
        apply_rope(q, _grouped_angles(q_positions, frequencies, 5)),
        apply_rope(k, _grouped_angles(k_positions, frequencies, 4)),
    )
    far_q = q_positions * slope + window * (1.0 - slope)  # R_{far_q − far_k} = R_{w + slope(m − n − w)}
    far = grouped_logits(
        apply_rope(q, _grouped_angles(far_q, frequencies, 5)),
        apply_rope(k, _grouped_angles(k_positions * slope, frequencies, 4)),
    )
    relative = relative_positions(q_positions, k_positions)  # (t, s) or (b, t, s)
    inside = relative < window
    inside = inside.reshape((inside.shape[0] if inside.ndim == 3 else 1, 1, 1) + inside.shape[-2:])
    return jnp.where(inside, near, far)
