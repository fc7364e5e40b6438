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
* YaRN ("NTK-by-parts" + temperature): ``ω_i → (1 − γ_i)·ω_i/s + γ_i·ω_i``
  with a ramp γ_i from 1 (fast pairs, kept) to 0 (slow pairs, interpolated
  by s); and q and k are each multiplied by ``0.1·ln s + 1``, so the logits
  by its square (the paper's ``1/t``). Two ramps (``RopeConfig.yarn_ramp``):

  - ``"index"`` (default): linear in the pair index i, between
    ``lo = max(⌊d(β_fast)⌋, 0)`` and ``hi = min(⌈d(β_slow)⌉, dim − 1)``, where
    ``d(β) = dim·ln(L0/(2πβ))/(2·ln base)`` is the (fractional) index whose
    pair rotates β times in L0: ``γ_i = 1 − clip((i − lo)/(hi − lo), 0, 1)``,
    with ``hi`` nudged by 0.001 when ``hi == lo``. This is what the YaRN
    authors' code, Hugging Face transformers and DeepSeek-V3 compute, so it
    is what every released YaRN checkpoint (Yarn-Llama-2, DeepSeek-V3)
    was fine-tuned with.
  - ``"rotations"``: the paper's §3.2 form, linear in the rotation count
    ``r_i = L0·ω_i/(2π)``: ``γ_i = clip((r_i − β_slow)/(β_fast − β_slow), 0, 1)``.

  Both keep the pairs above β_fast rotations and interpolate those below
  β_slow (when ``L0 > 2π·β_slow``); in between they differ — for
  Yarn-Llama-2-7b-64k (dim 128, L0 4096, s 16) in 25 of the 64 frequencies,
  by up to 67% of the index-ramp value.
* log-n: logits of the query at position m multiplied by
  ``max(1, ln(m + 1)/ln L0)``, keeping the attention entropy from growing
  with the number of keys (1 inside the trained context).

References:
  Chen, Wong, Chen, Tian 2023, "Extending Context Window of Large Language
  Models via Positional Interpolation" (arXiv:2306.15595).
  bloc97 2023, "NTK-Aware Scaled RoPE" (reddit r/LocalLLaMA); emozilla 2023,
  "Dynamically Scaled RoPE".
  Peng, Quesnelle, Fan, Shippole 2023, "YaRN: Efficient Context Window
  Extension of Large Language Models" (arXiv:2309.00071), §3.2–3.4, and
  its code (github.com/jquesnelle/yarn, ``find_correction_range``).
  DeepSeek-AI 2024, "DeepSeek-V3 Technical Report" (arXiv:2412.19437), §4.3,
  and its inference code (``precompute_freqs_cis``, the MLA softmax scale).
  Su 2023, "Transformer upgrade road 12: ReRoPE" (kexue.fm/archives/9708).
  Chiang, Cholak 2022 (arXiv:2202.12172); Su 2021, "Attention scale from
  entropy invariance" (kexue.fm/archives/8823) — log-n scaling.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal, overload

import jax.numpy as jnp
from jax import Array

from jaxlab.nn.rope import apply_rope, rope_angles, rope_frequencies

Scaling = Literal["none", "pi", "ntk", "dynamic_ntk", "yarn", "rerope", "leaky_rerope"]
SCALINGS: tuple[str, ...] = ("none", "pi", "ntk", "dynamic_ntk", "yarn", "rerope", "leaky_rerope")
YarnRamp = Literal["index", "rotations"]
YARN_RAMPS: tuple[str, ...] = ("index", "rotations")


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
      yarn_ramp: YaRN's ramp between β_slow and β_fast: ``"index"`` (linear in
        the pair index, as the released YaRN and DeepSeek-V3 code and
        checkpoints) or ``"rotations"`` (linear in the rotation count, the
        paper's §3.2); see :func:`yarn_frequencies`.
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
    yarn_ramp: YarnRamp = "index"

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
        if self.yarn_ramp not in YARN_RAMPS:
            raise ValueError(f"`yarn_ramp` must be one of {YARN_RAMPS}; got {self.yarn_ramp!r}.")

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


@overload
def ntk_base(base: float, dim: int, factor: float) -> float: ...
@overload
def ntk_base(base: float, dim: int, factor: Array) -> Array: ...
def ntk_base(base: float, dim: int, factor: float | Array) -> float | Array:
    """NTK-aware base ``base · factor^(dim/(dim−2))``."""
    return base * factor ** (dim / (dim - 2))


def dynamic_ntk_factor(length: int | Array, original_length: int, max_factor: float) -> Array:
    """Effective NTK factor at the current length: ``clip(L/L0, 1, max_factor)``."""
    return jnp.clip(jnp.asarray(length, jnp.float32) / original_length, 1.0, max_factor)


def yarn_correction_range(dim: int, base: float, original_length: int, *, beta_fast: float = 32.0, beta_slow: float = 1.0) -> tuple[int, int]:
    """Pair indices ``(lo, hi)`` between which YaRN's index ramp runs.

    ``d(β) = dim·ln(L0/(2πβ))/(2·ln base)`` solves ``L0·base^(−2i/dim)/(2π) = β``
    for i: the pair that rotates β times in the trained context. The range is
    ``lo = max(⌊d(β_fast)⌋, 0)``, ``hi = min(⌈d(β_slow)⌉, dim − 1)`` (clamped to
    ``dim − 1``, not ``dim/2 − 1``, as in the reference code).

    Args:
      dim: rotated dimension (twice the number of pairs).
      base: RoPE base.
      original_length: trained context L0.
      beta_fast: rotation count at which the ramp starts (pairs kept below lo).
      beta_slow: rotation count at which it ends (pairs interpolated above hi).

    Returns:
      the integer bounds ``(lo, hi)``.

    References:
      Peng et al. 2023, "YaRN" (arXiv:2309.00071), §3.2 and its code
      (``find_correction_range``); DeepSeek-AI 2024, "DeepSeek-V3".
    """

    def index(rotations: float) -> float:
        return dim * math.log(original_length / (2.0 * math.pi * rotations)) / (2.0 * math.log(base))

    return max(math.floor(index(beta_fast)), 0), min(math.ceil(index(beta_slow)), dim - 1)


def yarn_frequencies(
    frequencies: Array,
    factor: float,
    original_length: int,
    *,
    base: float = 10_000.0,
    beta_fast: float = 32.0,
    beta_slow: float = 1.0,
    ramp: YarnRamp = "index",
) -> Array:
    """YaRN's NTK-by-parts frequencies ``(1 − γ)·ω/s + γ·ω``.

    The default ``"index"`` ramp is the one of the YaRN authors' code, of
    Hugging Face transformers and of DeepSeek-V3 — the frequencies every
    released YaRN checkpoint was fine-tuned with: γ falls linearly in the
    pair index i from 1 at ``lo`` to 0 at ``hi`` (:func:`yarn_correction_range`),
    ``γ_i = 1 − clip((i − lo)/(hi − lo), 0, 1)``, with ``hi`` raised by 0.001
    when ``hi == lo`` (which only clamping can cause). For a toy trained
    context ``L0 <= 2π·β_slow`` every pair rotates fewer than β_slow times
    but the clamped range is empty or reversed; the reference arithmetic,
    followed here, then keeps pair 0 (``hi == lo``) or every pair (``hi < lo``).
    ``"rotations"`` is the paper's §3.2 ramp, linear in the rotation count
    ``r_i = L0·ω_i/(2π)``: ``γ_i = clip((r_i − β_slow)/(β_fast − β_slow), 0, 1)``.

    Args:
      frequencies: (d/2,) plain RoPE frequencies ``base^(−2i/d)`` (the index
        ramp reads d from their length and needs the same ``base``).
      factor: extension factor s.
      original_length: trained context L0.
      base: the RoPE base of ``frequencies`` (index ramp only).
      beta_fast: pairs rotating more than this many times in L0 keep ω.
      beta_slow: pairs rotating fewer times get ω/s.
      ramp: ``"index"`` or ``"rotations"``.

    Returns:
      (d/2,) frequencies.

    Raises:
      ValueError: if ``ramp`` is neither ``"index"`` nor ``"rotations"``.

    References:
      Peng et al. 2023, "YaRN" (arXiv:2309.00071), §3.2 eq. (18)–(19), and its
      code (``find_correction_range``, ``linear_ramp_mask``); DeepSeek-AI 2024,
      "DeepSeek-V3" (arXiv:2412.19437), ``precompute_freqs_cis``.
    """
    if ramp == "rotations":
        rotations = original_length * frequencies / (2.0 * math.pi)  # r_i, (d/2,)
        gamma = jnp.clip((rotations - beta_slow) / (beta_fast - beta_slow), 0.0, 1.0)
    elif ramp == "index":
        half = frequencies.shape[-1]
        lo, hi = yarn_correction_range(2 * half, base, original_length, beta_fast=beta_fast, beta_slow=beta_slow)
        width = hi - lo if hi != lo else 0.001
        gamma = 1.0 - jnp.clip((jnp.arange(half, dtype=jnp.float32) - lo) / width, 0.0, 1.0)
    else:
        raise ValueError(f"`ramp` must be one of {YARN_RAMPS}; got {ramp!r}.")
    return (1.0 - gamma) * frequencies / factor + gamma * frequencies


def yarn_qk_scale(factor: float) -> float:
    """YaRN's multiplier of q and of k, ``√(1/t) = 0.1·ln s + 1`` (1 for s <= 1).

    The logits scale by its square. This is Hugging Face's YaRN
    ``attention_factor`` (which multiplies cos and sin, so each of q and k)
    and DeepSeek-V3's ``mscale(s, mscale_all_dim)`` with ``mscale_all_dim = 1``,
    whose square multiplies the MLA softmax scale ``1/√d_qk`` on all channels;
    DeepSeek-V3's extra factor on the rotated channels,
    ``mscale(s, mscale)/mscale(s, mscale_all_dim)``, is 1 there (both are 1),
    where ``mscale(s, c) = 0.1·c·ln s + 1``.

    Args:
      factor: extension factor s.

    Returns:
      the multiplier.

    References:
      Peng et al. 2023, "YaRN" (arXiv:2309.00071), §3.4;
      DeepSeek-AI 2024, "DeepSeek-V3" (arXiv:2412.19437).
    """
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
    return yarn_frequencies(
        plain,
        s,
        config.original_length,
        base=config.base,
        beta_fast=config.beta_fast,
        beta_slow=config.beta_slow,
        ramp=config.yarn_ramp,
    )


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
