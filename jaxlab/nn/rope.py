"""Rotary position embedding (RoPE): 1-D, axial 2-D / 3-D, M-RoPE and RoPE-Tie.

RoPE rotates each pair of feature channels of a query or key by an angle
proportional to the token's position, ``angle_i = position · ω_i`` with the
geometric frequencies ``ω_i = base^(−2i/d)``, i = 0 … d/2 − 1. Because
rotations compose, ``⟨R_m q, R_n k⟩ = ⟨q, R_{n−m} k⟩``: the attention logit
depends on the positions only through their difference.

Channel layout: channel ``i`` is paired with channel ``i + d/2`` (the
"rotate-half" layout of GPT-NeoX and LLaMA), not with its neighbour. The two
layouts are the same rotation up to a fixed permutation of the channels.

Multi-axis positions. Every variant here is "1-D RoPE with a per-pair choice
of which coordinate drives the pair":

* axial 2-D (images) and 3-D (videos): the d/2 pairs are split into equal
  contiguous groups, one per axis, each group with its own geometric
  frequencies (``base^(−2i/(d/n_axes))``);
* M-RoPE (Qwen2-VL): the *1-D* frequencies, split into contiguous sections
  (temporal, height, width); a text token has all three coordinates equal,
  so on pure text M-RoPE is exactly 1-D RoPE;
* RoPE-Tie (Su 2024): the *1-D* frequencies with the pairs alternating
  between two axes; a text token sits on the diagonal ``(n, n)``, so on pure
  text RoPE-Tie is exactly 1-D RoPE.

References:
  Su, Lu, Pan, Murtadha, Wen, Liu 2021, "RoFormer: Enhanced Transformer with
  Rotary Position Embedding" (arXiv:2104.09864).
  Su 2021, "Transformer upgrade road 4: rotary position embedding for 2-D
  positions" (kexue.fm/archives/8397).
  Heo, Park, Han, Yun 2024, "Rotary Position Embedding for Vision
  Transformer" (arXiv:2403.13298) — axial 2-D RoPE.
  Wang et al. 2024, "Qwen2-VL" (arXiv:2409.12191), §2.1 — M-RoPE.
  Su 2024, "Transformer upgrade road 17: simple thoughts on multimodal
  position encoding" (kexue.fm/archives/10040) — RoPE-Tie.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np
from jax import Array


def _check_dim(name: str, dim: int, multiple: int = 2) -> int:
    if not isinstance(dim, int) or isinstance(dim, bool) or dim < multiple or dim % multiple:
        raise ValueError(f"`{name}` must be a positive multiple of {multiple}; got {dim!r}.")
    return dim


def rope_frequencies(dim: int, *, base: float = 10_000.0) -> Array:
    """The rotation frequencies ``ω_i = base^(−2i/dim)`` of 1-D RoPE.

    Args:
      dim: even number of rotated channels (the head dimension).
      base: the RoPE base (10,000 in RoFormer).

    Returns:
      float32 array (dim // 2,), decreasing from 1.

    Raises:
      ValueError: if ``dim`` is not a positive even int or ``base <= 1``.

    References:
      Su et al. 2021, "RoFormer", eq. (15).
    """
    _check_dim("dim", dim)
    if not base > 1.0:
        raise ValueError(f"`base` must be > 1; got {base!r}.")
    exponents = jnp.arange(0, dim, 2, dtype=jnp.float32) / dim  # (dim/2,)
    return jnp.asarray(base, jnp.float32) ** -exponents


def rope_angles(positions: Array, frequencies: Array) -> Array:
    """Rotation angles ``positions ⊗ frequencies``.

    Args:
      positions: (...,) integer or real positions.
      frequencies: (d/2,) frequencies.

    Returns:
      float32 (..., d/2).
    """
    return jnp.asarray(positions, jnp.float32)[..., None] * jnp.asarray(frequencies, jnp.float32)


def apply_rope(x: Array, angles: Array) -> Array:
    """Rotates channel pairs ``(x_i, x_{i+d/2})`` of ``x`` by ``angles_i``.

    Args:
      x: (..., d) queries or keys, d even.
      angles: angles broadcastable to (..., d/2), e.g. (b, t, 1, d/2) for
        ``x`` of shape (b, t, heads, d).

    Returns:
      array of the shape and dtype of ``x`` (the rotation is computed in
      float32).

    Raises:
      ValueError: if the last dimension of ``x`` is odd or is not twice that
        of ``angles``.
    """
    if x.ndim < 1 or x.shape[-1] % 2:
        raise ValueError(f"`x` must have an even last dimension; got shape {x.shape}.")
    half = x.shape[-1] // 2
    if angles.shape[-1] != half:
        raise ValueError(f"`angles` must have last dimension d/2 = {half} for x of shape {x.shape}; got {angles.shape}.")
    cos, sin = jnp.cos(angles), jnp.sin(angles)
    x32 = x.astype(jnp.float32)
    first, second = x32[..., :half], x32[..., half:]
    rotated = jnp.concatenate([first * cos - second * sin, second * cos + first * sin], axis=-1)
    return rotated.astype(x.dtype)


def rope(x: Array, positions: Array, *, base: float = 10_000.0) -> Array:
    """Plain 1-D RoPE of a (b, t, heads, d) array at (t,) or (b, t) positions."""
    if x.ndim != 4:
        raise ValueError(f"`x` must have shape (batch, time, heads, dim); got {x.shape}.")
    angles = rope_angles(positions, rope_frequencies(x.shape[-1], base=base))  # (..., t, d/2)
    return apply_rope(x, angles[..., None, :])


def axial_rope_angles(positions: Array, dim: int, *, base: float = 10_000.0) -> Array:
    """Angles of axial n-D RoPE (2-D for image patches, 3-D for video).

    The d/2 channel pairs are split into ``n_axes`` equal contiguous groups;
    group ``a`` rotates by coordinate ``a`` with the 1-D frequencies of a
    ``dim / n_axes``-channel RoPE, so each axis keeps the relative-position
    property on its own: the logit depends on the positions only through the
    coordinate differences.

    Args:
      positions: (..., n_axes) coordinates, e.g. (row, column) or
        (frame, row, column).
      dim: rotated channels; must be divisible by 2·n_axes.
      base: RoPE base.

    Returns:
      float32 (..., dim/2) angles for :func:`apply_rope`.

    References:
      Su 2021, kexue.fm/archives/8397; Heo et al. 2024 (arXiv:2403.13298).
    """
    positions = jnp.asarray(positions)
    if positions.ndim < 1:
        raise ValueError(f"`positions` must have shape (..., n_axes); got {positions.shape}.")
    n_axes = positions.shape[-1]
    _check_dim("dim", dim, 2 * n_axes)
    per_axis = rope_frequencies(dim // n_axes, base=base)  # (dim / (2 n_axes),)
    angles = [rope_angles(positions[..., a], per_axis) for a in range(n_axes)]
    return jnp.concatenate(angles, axis=-1)  # (..., dim/2)


def grid_positions(*shape: int) -> np.ndarray:
    """Integer coordinates of a row-major grid, e.g. ``grid_positions(h, w)`` → (h·w, 2)."""
    if not shape or any(not isinstance(n, int) or n < 1 for n in shape):
        raise ValueError(f"grid `shape` must be positive ints; got {shape}.")
    mesh = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    return np.stack([m.reshape(-1) for m in mesh], axis=-1)  # (prod(shape), len(shape))


def _axis_of_pair_angles(positions: Array, frequencies: Array, axis_of_pair: np.ndarray) -> Array:
    """angles_i = positions[..., axis_of_pair[i]] · ω_i."""
    positions = jnp.asarray(positions, jnp.float32)
    chosen = jnp.take(positions, jnp.asarray(axis_of_pair), axis=-1)  # (..., d/2)
    return chosen * jnp.asarray(frequencies, jnp.float32)


def mrope_angles(positions: Array, dim: int, sections: Sequence[int], *, base: float = 10_000.0) -> Array:
    """Angles of Qwen2-VL's multimodal RoPE (M-RoPE).

    The 1-D frequencies are cut into contiguous sections, section ``a``
    driven by coordinate ``a`` (temporal, height, width). Text tokens carry
    equal coordinates, so M-RoPE of text equals 1-D RoPE exactly.

    Args:
      positions: (..., len(sections)) coordinates, e.g. from
        :func:`mrope_position_ids`.
      dim: rotated channels (head dimension).
      sections: channel pairs per axis; must sum to dim/2 (Qwen2-VL uses
        (16, 24, 24) for dim 128).
      base: RoPE base.

    Returns:
      float32 (..., dim/2) angles.

    References:
      Wang et al. 2024, "Qwen2-VL" (arXiv:2409.12191), §2.1.
    """
    _check_dim("dim", dim)
    sections = tuple(int(s) for s in sections)
    if sum(sections) != dim // 2 or min(sections, default=0) < 1:
        raise ValueError(f"`sections` must be positive and sum to dim/2 = {dim // 2}; got {sections}.")
    positions = jnp.asarray(positions)
    if positions.ndim < 1 or positions.shape[-1] != len(sections):
        raise ValueError(f"`positions` must have shape (..., {len(sections)}); got {positions.shape}.")
    axis_of_pair = np.repeat(np.arange(len(sections)), sections)  # (dim/2,)
    return _axis_of_pair_angles(positions, rope_frequencies(dim, base=base), axis_of_pair)


def rope_tie_angles(positions: Array, dim: int, *, base: float = 10_000.0) -> Array:
    """Angles of RoPE-Tie: 2-D RoPE whose pairs alternate between the two axes.

    Pair ``i`` keeps the 1-D frequency ``ω_i`` and is driven by coordinate
    ``i mod 2``. Text at ``(n, n)`` is therefore rotated exactly as by 1-D
    RoPE, and image patches get a genuine 2-D relative position.

    Args:
      positions: (..., 2) coordinates, e.g. from :func:`rope_tie_position_ids`.
      dim: rotated channels, a multiple of 4.
      base: RoPE base.

    Returns:
      float32 (..., dim/2) angles.

    References:
      Su 2024, kexue.fm/archives/10040 (RoPE-Tie).
    """
    _check_dim("dim", dim, 4)
    positions = jnp.asarray(positions)
    if positions.ndim < 1 or positions.shape[-1] != 2:
        raise ValueError(f"`positions` must have shape (..., 2); got {positions.shape}.")
    axis_of_pair = np.arange(dim // 2) % 2  # (dim/2,)
    return _axis_of_pair_angles(positions, rope_frequencies(dim, base=base), axis_of_pair)


Segment = tuple  # ("text", n) | ("image", h, w) | ("video", frames, h, w)


def _check_segments(segments: Sequence[Segment]) -> None:
    arity = {"text": 1, "image": 2, "video": 3}
    for segment in segments:
        kind = segment[0] if segment else None
        if kind not in arity or len(segment) != 1 + arity[kind] or any(int(n) < 1 for n in segment[1:]):
            raise ValueError(f"`segments` entries must be ('text', n), ('image', h, w) or ('video', frames, h, w) with positive sizes; got {segment!r}.")


def mrope_position_ids(segments: Sequence[Segment]) -> np.ndarray:
    """(temporal, height, width) ids of a mixed sequence, the Qwen2-VL way.

    Text tokens get ``(p, p, p)`` with ``p`` counting up. A visual segment
    starting at offset ``s`` puts its patch (frame f, row i, column j) at
    ``(s + f, s + i, s + j)``; the next segment starts at one past the
    largest id used so far.

    Args:
      segments: e.g. ``[("text", 5), ("image", 2, 3), ("text", 4)]``.

    Returns:
      int32 (num_tokens, 3) position ids (host NumPy).
    """
    _check_segments(segments)
    ids, start = [], 0
    for kind, *sizes in segments:
        if kind == "text":
            block = np.repeat(start + np.arange(sizes[0])[:, None], 3, axis=1)
        else:
            grid = grid_positions(*([1] + sizes if kind == "image" else sizes))  # (n, 3)
            block = start + grid
        ids.append(block)
        start = int(block.max()) + 1
    return np.concatenate(ids).astype(np.int32)


def rope_tie_position_ids(segments: Sequence[Segment]) -> np.ndarray:
    """(x, y) ids of a mixed text/image sequence for :func:`rope_tie_angles`.

    Text tokens sit on the diagonal ``(p, p)``. An image of h × w patches
    starting at offset ``s`` puts patch (i, j) at ``(s + i, s + j)``, and the
    following text resumes at ``s + max(h, w)`` — one past the image's
    largest coordinate — so text-to-text distances across an image grow by
    the image's extent, as with 1-D positions of a row of ``max(h, w)``
    tokens. (This is the unscaled form of the scheme; the post also
    discusses rescaling the patch coordinates.)

    Args:
      segments: ``("text", n)`` and ``("image", h, w)`` entries.

    Returns:
      int32 (num_tokens, 2) position ids (host NumPy).
    """
    _check_segments(segments)
    ids, start = [], 0
    for kind, *sizes in segments:
        if kind == "video":
            raise ValueError("`segments` for RoPE-Tie may hold text and images only; got a video.")
        if kind == "text":
            block = np.repeat(start + np.arange(sizes[0])[:, None], 2, axis=1)
        else:
            block = start + grid_positions(*sizes)
        ids.append(block)
        start = int(block.max()) + 1
    return np.concatenate(ids).astype(np.int32)
