"""Toy 2-D distributions for flow and diffusion experiments.

Every sampler is a pure, jitted function ``sampler(key, num) -> (num, 2)``
float32 array, with ``num`` a static Python int. Each distribution is defined
at a natural "raw" scale and then centred and isotropically rescaled so that
its mean is 0 and its per-coordinate variance, averaged over the two
coordinates, is exactly 1. The centring and scaling constants are closed
forms derived in the comments, so the shapes are not distorted and the scale
matches the usual standardized toy data of the flow-matching literature.

References:
  Grathwohl et al., "FFJORD: Free-form Continuous Dynamics for Scalable
  Reversible Generative Models", ICLR 2019 (checkerboard, 8 Gaussians, moons,
  swiss roll as 2-D benchmarks).
  Johnson et al., "Composing graphical models with neural networks for
  structured representations and fast inference", NeurIPS 2016 (pinwheel).
  Lipman et al., "Flow Matching for Generative Modeling", ICLR 2023.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from jaxlab._checks import check_int

Array = jax.Array


def _standardize(points: Array, mean: tuple[float, float], variance: float) -> Array:
    """Centres ``points`` (num, 2) and divides by the per-coordinate std."""
    return ((points - jnp.asarray(mean)) / math.sqrt(variance)).astype(jnp.float32)


# Raw checkerboard: uniform on the 8 "black" cells (floor(x) + floor(y) even)
# of a 4 x 4 board on [-2, 2]^2. Each marginal is uniform on [-2, 2], so the
# mean is 0 and the variance is 4^2 / 12 = 4/3.
_CHECKERBOARD_VARIANCE = 4.0 / 3.0


@functools.partial(jax.jit, static_argnames="num")
def checkerboard(key: Array, num: int) -> Array:
    """Samples a 4 x 4 checkerboard: uniform on alternate squares.

    Args:
      key: a PRNG key.
      num: number of samples (static).

    Returns:
      float32 array (num, 2), on [-sqrt(3), sqrt(3)]^2 after standardizing.

    References:
      Grathwohl et al., "FFJORD", ICLR 2019.
    """
    num = check_int("num", num, minimum=1)
    key_x, key_row, key_y = jax.random.split(key, 3)
    x = jax.random.uniform(key_x, (num,), jnp.float32, -2.0, 2.0)
    # Pick one of the two rows whose parity matches the column's, then a
    # uniform offset inside it: rows {-2, 0} for even columns, {-1, 1} for odd.
    column_parity = jnp.mod(jnp.floor(x), 2.0)
    row = 2.0 * jax.random.bernoulli(key_row, 0.5, (num,)) - 2.0 + column_parity
    y = row + jax.random.uniform(key_y, (num,), jnp.float32)
    return _standardize(jnp.stack([x, y], axis=-1), (0.0, 0.0), _CHECKERBOARD_VARIANCE)


# Raw 8 Gaussians: centres on the unit circle at angles k * pi / 4, isotropic
# noise of std 0.1. Over 8 equally spaced angles E[cos^2] = 1/2, so the
# per-coordinate variance is 1/2 + 0.1^2.
_EIGHT_GAUSSIANS_STD = 0.1
_EIGHT_GAUSSIANS_VARIANCE = 0.5 + _EIGHT_GAUSSIANS_STD**2


@functools.partial(jax.jit, static_argnames="num")
def eight_gaussians(key: Array, num: int) -> Array:
    """Samples a mixture of 8 equally weighted Gaussians on a circle.

    Args:
      key: a PRNG key.
      num: number of samples (static).

    Returns:
      float32 array (num, 2); the modes lie on a circle of radius about 1.4.

    References:
      Grathwohl et al., "FFJORD", ICLR 2019.
    """
    num = check_int("num", num, minimum=1)
    key_mode, key_noise = jax.random.split(key)
    angle = jax.random.randint(key_mode, (num,), 0, 8).astype(jnp.float32) * (jnp.pi / 4)
    centres = jnp.stack([jnp.cos(angle), jnp.sin(angle)], axis=-1)  # (num, 2)
    noise = _EIGHT_GAUSSIANS_STD * jax.random.normal(key_noise, (num, 2), jnp.float32)
    return _standardize(centres + noise, (0.0, 0.0), _EIGHT_GAUSSIANS_VARIANCE)


# Raw two moons: the upper arc (cos t, sin t) and the lower arc
# (1 - cos t, 1/2 - sin t), t ~ U[0, pi], each with probability 1/2, plus
# isotropic noise of std 0.1. With E[cos t] = 0, E[sin t] = 2/pi and
# E[cos^2 t] = E[sin^2 t] = 1/2:
#   E[x] = 1/2, Var[x] = 3/4;   E[y] = 1/4, Var[y] = 9/16 - 1/pi.
_MOONS_STD = 0.1
_MOONS_MEAN = (0.5, 0.25)
_MOONS_VARIANCE = 0.5 * (0.75 + (9.0 / 16.0 - 1.0 / math.pi)) + _MOONS_STD**2


@functools.partial(jax.jit, static_argnames="num")
def two_moons(key: Array, num: int) -> Array:
    """Samples two interleaving half circles.

    Args:
      key: a PRNG key.
      num: number of samples (static).

    Returns:
      float32 array (num, 2).

    References:
      Grathwohl et al., "FFJORD", ICLR 2019.
    """
    num = check_int("num", num, minimum=1)
    key_t, key_moon, key_noise = jax.random.split(key, 3)
    t = jax.random.uniform(key_t, (num,), jnp.float32, 0.0, jnp.pi)
    upper = jnp.stack([jnp.cos(t), jnp.sin(t)], axis=-1)
    lower = jnp.stack([1.0 - jnp.cos(t), 0.5 - jnp.sin(t)], axis=-1)
    is_upper = jax.random.bernoulli(key_moon, 0.5, (num, 1))
    noise = _MOONS_STD * jax.random.normal(key_noise, (num, 2), jnp.float32)
    return _standardize(jnp.where(is_upper, upper, lower) + noise, _MOONS_MEAN, _MOONS_VARIANCE)


# Raw swiss roll: (t cos t, t sin t) with t ~ U[a, b], a = 1.5 pi, b = 4.5 pi,
# plus isotropic noise of std 0.5. From the antiderivatives
# t sin t + cos t and sin t - t cos t over [a, b] (length 3 pi):
#   E[x] = 6 pi / (3 pi) = 2,   E[y] = 2 / (3 pi),
#   E[x^2 + y^2] = E[t^2] = (b^3 - a^3) / (3 (b - a)) = 9.75 pi^2.
_SWISS_ROLL_START, _SWISS_ROLL_STOP = 1.5 * math.pi, 4.5 * math.pi
_SWISS_ROLL_STD = 0.5
_SWISS_ROLL_MEAN = (2.0, 2.0 / (3.0 * math.pi))
_SWISS_ROLL_VARIANCE = 0.5 * (9.75 * math.pi**2 - 4.0 - (2.0 / (3.0 * math.pi)) ** 2) + _SWISS_ROLL_STD**2


@functools.partial(jax.jit, static_argnames="num")
def swiss_roll(key: Array, num: int) -> Array:
    """Samples a 2-D swiss roll (a noisy spiral of one and a half turns).

    Args:
      key: a PRNG key.
      num: number of samples (static).

    Returns:
      float32 array (num, 2).

    References:
      Grathwohl et al., "FFJORD", ICLR 2019.
    """
    num = check_int("num", num, minimum=1)
    key_t, key_noise = jax.random.split(key)
    t = jax.random.uniform(key_t, (num,), jnp.float32, _SWISS_ROLL_START, _SWISS_ROLL_STOP)
    spiral = t[:, None] * jnp.stack([jnp.cos(t), jnp.sin(t)], axis=-1)
    noise = _SWISS_ROLL_STD * jax.random.normal(key_noise, (num, 2), jnp.float32)
    return _standardize(spiral + noise, _SWISS_ROLL_MEAN, _SWISS_ROLL_VARIANCE)


# Raw pinwheel: in arm k of 5, a point (r, s) with r ~ N(1, 0.3^2) along the
# arm and s ~ N(0, 0.05^2) across it is rotated by 2 pi k / 5 + 0.25 exp(r).
# Rotations keep norms, so E|p|^2 = 1 + 0.3^2 + 0.05^2; the five equally
# spaced arms cancel, so the mean is 0.
_PINWHEEL_ARMS = 5
_PINWHEEL_RADIAL_STD = 0.3
_PINWHEEL_TANGENTIAL_STD = 0.05
_PINWHEEL_TWIST = 0.25
_PINWHEEL_VARIANCE = 0.5 * (1.0 + _PINWHEEL_RADIAL_STD**2 + _PINWHEEL_TANGENTIAL_STD**2)


@functools.partial(jax.jit, static_argnames="num")
def pinwheel(key: Array, num: int) -> Array:
    """Samples a pinwheel: five curved, elongated Gaussian arms.

    Args:
      key: a PRNG key.
      num: number of samples (static).

    Returns:
      float32 array (num, 2).

    References:
      Johnson et al., "Composing graphical models with neural networks for
      structured representations and fast inference", NeurIPS 2016.
    """
    num = check_int("num", num, minimum=1)
    key_arm, key_local = jax.random.split(key)
    arm = jax.random.randint(key_arm, (num,), 0, _PINWHEEL_ARMS).astype(jnp.float32)
    stds = jnp.array([_PINWHEEL_RADIAL_STD, _PINWHEEL_TANGENTIAL_STD], jnp.float32)
    local = stds * jax.random.normal(key_local, (num, 2), jnp.float32) + jnp.array([1.0, 0.0])  # (num, 2)
    angle = 2.0 * jnp.pi * arm / _PINWHEEL_ARMS + _PINWHEEL_TWIST * jnp.exp(local[:, 0])
    cos, sin = jnp.cos(angle), jnp.sin(angle)
    points = jnp.stack([cos * local[:, 0] - sin * local[:, 1], sin * local[:, 0] + cos * local[:, 1]], axis=-1)
    return _standardize(points, (0.0, 0.0), _PINWHEEL_VARIANCE)


Toy2DName = Literal["checkerboard", "eight_gaussians", "two_moons", "swiss_roll", "pinwheel"]  # TOY2D's keys, for typed configs

TOY2D: dict[str, Callable[[Array, int], Array]] = {
    "checkerboard": checkerboard,
    "eight_gaussians": eight_gaussians,
    "two_moons": two_moons,
    "swiss_roll": swiss_roll,
    "pinwheel": pinwheel,
}


def sample_toy2d(name: str, *, key: Array, num: int) -> Array:
    """Samples ``num`` points from the toy distribution called ``name``.

    Args:
      name: one of ``TOY2D``'s keys.
      key: a PRNG key.
      num: number of samples (a positive Python int).

    Returns:
      float32 array (num, 2).

    Raises:
      ValueError: if ``name`` is unknown or ``num`` is not a positive int.
    """
    if name not in TOY2D:
        raise ValueError(f"`name` must be one of {sorted(TOY2D)}; got {name!r}.")
    return TOY2D[name](key, check_int("num", num, minimum=1))


def toy2d_batches(name: str, *, key: Array, batch_size: int) -> Callable[[int], dict[str, np.ndarray]]:
    """A training stream ``step -> {"x": (batch_size, 2)}`` of host arrays.

    Batch ``s`` is drawn with ``fold_in(key, s)``, so the stream is a pure
    function of (key, step) and a resumed run sees the batches an
    uninterrupted one would.

    Args:
      name: one of ``TOY2D``'s keys.
      key: the stream's PRNG key (e.g. ``jaxlab.train.named_key(seed, "data")``).
      batch_size: points per batch (a positive Python int).

    Raises:
      ValueError: if ``name`` is unknown or ``batch_size`` is not a positive int.
    """
    if name not in TOY2D:
        raise ValueError(f"`name` must be one of {sorted(TOY2D)}; got {name!r}.")
    check_int("batch_size", batch_size, minimum=1)
    draw = jax.jit(lambda step_key: TOY2D[name](step_key, batch_size))
    return lambda step: {"x": np.asarray(draw(jax.random.fold_in(key, step)))}
