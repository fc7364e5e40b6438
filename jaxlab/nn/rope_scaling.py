"""RoPE context extension: PI, NTK-aware, dynamic NTK, YaRN, ReRoPE settings, log-n scaling.

A model trained with RoPE at context ``L0`` sees, at longer contexts,
rotation angles (relative positions) it never saw. The extensions here
change the frequencies (PI, NTK, dynamic NTK, YaRN), the attention
temperature (YaRN, log-n), or the relative positions themselves (ReRoPE,
Leaky ReRoPE — see :mod:`jaxlab.nn.rerope`). All are training-free; with
``factor = 1`` every frequency scaling is plain RoPE.

With ``s`` the extension factor and ``d`` the rotated dimension:

* PI: ``ω_i → ω_i / s`` (positions squeezed into the trained range).
* NTK-aware: ``base → base · s^(d/(d−2))`` (high frequencies kept, the lowest
  one interpolated by s).
* dynamic NTK: NTK with the factor following the current length L,
  ``s = clip(L/L0, 1, factor)``: plain RoPE up to the trained length, and
  never beyond the configured factor (so factor 1 is plain RoPE at every
  length; emozilla's original form ``α·L/L0 − (α − 1)`` is uncapped).
* YaRN ("NTK-by-parts" + temperature): with ``r_i = L0·ω_i/(2π)`` rotations
  in the trained context and ``γ_i = clip((r_i − β_slow)/(β_fast − β_slow), 0, 1)``,
  ``ω_i → (1 − γ_i)·ω_i/s + γ_i·ω_i``; and q and k are each multiplied by
  ``0.1·ln s + 1``, so the logits by its square (the paper's ``1/t``).
* log-n: logits of the query at position m multiplied by
  ``max(1, ln(m + 1)/ln L0)``, keeping the attention entropy from growing
  with the number of keys (1 inside the trained context).

References:
  Chen, Wong, Chen, Tian 2023, "Extending Context Window of Large Language
  Models via Positional Interpolation" (arXiv:2306.15595).
  bloc97 2023, "NTK-Aware Scaled RoPE" (reddit r/LocalLLaMA); emozilla 2023,
  "Dynamically Scaled RoPE".
  Peng, Quesnelle, Fan, Shippole 2023, "YaRN: Efficient Context Window
  Extension of Large Language Models" (arXiv:2309.00071), §3.2–3.4.
  Su 2023, "Transformer upgrade road 12: ReRoPE" (kexue.fm/archives/9708).
  Chiang, Cholak 2022 (arXiv:2202.12172); Su 2021, "Attention scale from
  entropy invariance" (kexue.fm/archives/8823) — log-n scaling.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

import jax.numpy as jnp
from jax import Array

from jaxlab.nn.rope import apply_rope, rope_angles, rope_frequencies

Scaling = Literal["none", "pi", "ntk", "dynamic_ntk", "yarn", "rerope", "leaky_rerope"]
SCALINGS: tuple[str, ...] = ("none", "pi", "ntk", "dynamic_ntk", "yarn", "rerope", "leaky_rerope")


@dataclasses.dataclass(frozen=True)
class RopeConfig:
    """How an attention layer applies RoPE (static, hashable).

    Attributes:
      base: RoPE base.
      scaling: the context extension; ``"none"`` is plain RoPE.
      factor: extension factor s (PI, NTK, YaRN) or its cap (dynamic NTK), >= 1.
      original_length: the trained context L0 (YaRN, dynamic NTK, log-n).
      beta_fast: YaRN's β (32 in the paper): pairs rotating more than this
        many times in L0 are left unscaled.
      beta_slow: YaRN's α (1 in the paper): pairs rotating fewer times are
        fully interpolated.
      window: ReRoPE window w: relative positions below w are kept.
      leaky_k: Leaky ReRoPE: beyond the window positions grow with slope 1/k.
      logn: multiply logits by ``max(1, ln(m+1)/ln L0)`` (log-n scaling).
    """

    base: float = 10_000.0
    scaling: Scaling = "none"
    factor: float = 1.0
    original_length: int = 2048
    beta_fast: float = 32.0
    beta_slow: float = 1.0
    window: int = 512
    leaky_k: float = 16.0
    logn: bool = False

    def __post_init__(self) -> None:
        if self.scaling not in SCALINGS:
            raise ValueError(f"`scaling` must be one of {SCALINGS}; got {self.scaling!r}.")
        if not self.base > 1.0:
            raise ValueError(f"`base` must be > 1; got {self.base!r}.")
        if not self.factor >= 1.0:
            raise ValueError(f"`factor` must be >= 1; got {self.factor!r}.")
        if not isinstance(self.original_length, int) or self.original_length < 2:
            raise ValueError(f"`original_length` must be an int >= 2; got {self.original_length!r}.")
        if not self.beta_fast > self.beta_slow > 0:
            raise ValueError(f"need beta_fast > beta_slow > 0; got {self.beta_fast!r}, {self.beta_slow!r}.")
        if not isinstance(self.window, int) or self.window < 1:
            raise ValueError(f"`window` must be a positive int; got {self.window!r}.")
        if not self.leaky_k >= 1.0:
            raise ValueError(f"`leaky_k` must be >= 1; got {self.leaky_k!r}.")

    @property
    def rectified(self) -> bool:
        """Whether the logits need ReRoPE's two-part evaluation."""
        return self.scaling in ("rerope", "leaky_rerope")

    @property
    def slope(self) -> float:
        """Slope of the relative position beyond the ReRoPE window (0 for ReRoPE)."""
        return 1.0 / self.leaky_k if self.scaling == "leaky_rerope" else 0.0


def pi_frequencies(frequencies: Array, factor: float) -> Array:
    """Position interpolation: every frequency divided by ``factor``."""
    return frequencies / factor


def ntk_base(base: float, dim: int, factor: float | Array) -> float | Array:
    """NTK-aware base ``base · factor^(dim/(dim−2))``."""
    return base * factor ** (dim / (dim - 2))


def dynamic_ntk_factor(length: int | Array, original_length: int, max_factor: float) -> Array:
    """Effective NTK factor at the current length: ``clip(L/L0, 1, max_factor)``."""
    return jnp.clip(jnp.asarray(length, jnp.float32) / original_length, 1.0, max_factor)


def yarn_frequencies(
    frequencies: Array, factor: float, original_length: int, *, beta_fast: float = 32.0, beta_slow: float = 1.0
) -> Array:
    """YaRN's NTK-by-parts frequencies.

    Args:
      frequencies: (d/2,) plain RoPE frequencies.
      factor: extension factor s.
      original_length: trained context L0.
      beta_fast: pairs with more than this many rotations in L0 keep ω.
      beta_slow: pairs with fewer rotations get ω/s.

    Returns:
      (d/2,) frequencies ``(1 − γ)·ω/s + γ·ω``.

    References:
      Peng et al. 2023, "YaRN", §3.2 eq. (18)–(19).
    """
    rotations = original_length * frequencies / (2.0 * math.pi)  # r_i, (d/2,)
    ramp = jnp.clip((rotations - beta_slow) / (beta_fast - beta_slow), 0.0, 1.0)  # γ_i
    return (1.0 - ramp) * frequencies / factor + ramp * frequencies


def yarn_qk_scale(factor: float) -> float:
    """YaRN's multiplier of q and of k, ``0.1·ln s + 1`` (logits scale by its square)."""
    return 0.1 * math.log(factor) + 1.0 if factor > 1.0 else 1.0


def logn_scale(positions: Array, original_length: int) -> Array:
    """Log-n logit multiplier ``max(1, ln(m + 1)/ln L0)`` of the query at position m."""
    counts = jnp.asarray(positions, jnp.float32) + 1.0
    return jnp.maximum(1.0, jnp.log(counts) / math.log(original_length))


def scaled_frequencies(config: RopeConfig, dim: int, *, length: int | Array) -> Array:
    """The (dim/2,) rotation frequencies ``config`` uses at sequence length ``length``.

    ``length`` only matters for dynamic NTK (it may be traced).
    """
    plain = rope_frequencies(dim, base=config.base)
    s = config.factor
    if s == 1.0 or config.scaling in ("none", "rerope", "leaky_rerope"):
        return plain  # every frequency scaling is exactly plain RoPE at factor 1
    if config.scaling == "pi":
        return pi_frequencies(plain, s)
    if config.scaling == "ntk":
        return rope_frequencies(dim, base=ntk_base(config.base, dim, s))
    if config.scaling == "dynamic_ntk":
        base = ntk_base(config.base, dim, dynamic_ntk_factor(length, config.original_length, s))
        return base ** -(jnp.arange(0, dim, 2, dtype=jnp.float32) / dim)
    return yarn_frequencies(plain, s, config.original_length, beta_fast=config.beta_fast, beta_slow=config.beta_slow)


def qk_scale(config: RopeConfig) -> float:
    """Multiplier applied to both q and k (YaRN's temperature; 1 otherwise)."""
    return yarn_qk_scale(config.factor) if config.scaling == "yarn" else 1.0


def query_logit_scale(config: RopeConfig, positions: Array) -> Array | float:
    """Per-query multiplier of the logits: log-n scaling when enabled, else 1."""
    return logn_scale(positions, config.original_length) if config.logn else 1.0


def rotate(x: Array, positions: Array, config: RopeConfig, *, length: int | Array) -> Array:
    """Rotates queries or keys by ``config``'s (scaled) RoPE frequencies.

    YaRN's q/k multiplier is not applied here; attention layers fold its
    square into the logit scale (:func:`qk_scale`), which also covers the
    channels MLA leaves unrotated.

    Args:
      x: (b, t, d) or (b, t, heads, d), or with extra head axes after t.
      positions: (t,) or (b, t) positions.
      config: the RoPE configuration (ReRoPE rotates inside the logits
        instead, see :func:`jaxlab.nn.rerope.rerope_logits`).
      length: the sequence length for dynamic NTK.

    Returns:
      rotated array of the shape and dtype of ``x``.
    """
    if x.ndim < 3:
        raise ValueError(f"`x` must have shape (batch, time, [heads...,] dim); got {x.shape}.")
    frequencies = scaled_frequencies(config, x.shape[-1], length=length)
    angles = rope_angles(positions, frequencies)  # (..., t, d/2)
    angles = angles.reshape(angles.shape[:-1] + (1,) * (x.ndim - 3) + angles.shape[-1:])
    return apply_rope(x, angles)
