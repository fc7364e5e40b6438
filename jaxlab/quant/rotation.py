"""The rotation trick: gradients through vector quantization by a rotation and a rescaling.

For an encoder output z and its nearest code e, the quantizer's output is
written as q̃ = sg[λ·R]·z with

    R = I − 2·r·rᵀ + 2·ê·ẑᵀ,   r = (ẑ + ê)/‖ẑ + ê‖,   ẑ = z/‖z‖,  ê = e/‖e‖,
    λ = ‖e‖/‖z‖.

R is the rotation in the plane of ẑ and ê that maps ẑ to ê (a Householder
reflection composed with a second reflection), so the forward value is
λ·R·z = ‖e‖·ê = e exactly, while the gradient reaching z is
∂L/∂z = λ·Rᵀ·∂L/∂q̃ — the code's gradient rotated back into z's frame and
rescaled — instead of the straight-through copy ∂L/∂z = ∂L/∂q̃. R and λ are
constants (stop-gradient), and R·z is applied as three vector operations,
never as a d×d matrix.

References:
  Fifty et al. 2024, "Restructuring Vector Quantization with the Rotation
  Trick", arXiv:2410.06424.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import Array

from jaxlab._checks import check_floating

EPS = 1e-6


def _unit(x: Array) -> tuple[Array, Array]:
    norm = jnp.linalg.norm(x, axis=-1, keepdims=True)
    return x / jnp.maximum(norm, EPS), norm


def rotation_matrix(z: Array, e: Array) -> Array:
    """The explicit rotation R (..., d, d) with R·ẑ = ê (for tests and inspection; O(d²) memory).

    Args:
      z: (..., d) encoder outputs.
      e: (..., d) codes.

    Returns:
      (..., d, d) rotations ``I − 2rrᵀ + 2êẑᵀ``.

    References:
      Fifty et al. 2024, arXiv:2410.06424.
    """
    check_floating("z", z)
    check_floating("e", e)
    if z.shape != e.shape:
        raise ValueError(f"e must have the shape of z {z.shape}, got {e.shape}")
    z_hat, _ = _unit(z)
    e_hat, _ = _unit(e)
    r, _ = _unit(z_hat + e_hat)
    eye = jnp.eye(z.shape[-1], dtype=z.dtype)
    outer = lambda a, b: a[..., :, None] * b[..., None, :]
    return eye - 2.0 * outer(r, r) + 2.0 * outer(e_hat, z_hat)


def rotation_trick(z: Array, e: Array) -> Array:
    """``sg[λ·R]·z``: forward value ``e``, gradient ``λ·Rᵀ·g`` with respect to ``z``.

    Args:
      z: (..., d) encoder outputs (differentiated).
      e: (..., d) their codes (only the forward value matters: no gradient
        flows into ``e`` through this function; train codes with
        :func:`jaxlab.quant.codebook_losses`).

    Returns:
      (..., d) array equal to ``e`` up to rounding.

    References:
      Fifty et al. 2024, "Restructuring Vector Quantization with the Rotation
      Trick", arXiv:2410.06424.
    """
    check_floating("z", z)
    check_floating("e", e)
    if z.shape != e.shape:
        raise ValueError(f"e must have the shape of z {z.shape}, got {e.shape}")
    z_c, e_c = jax.lax.stop_gradient(z), jax.lax.stop_gradient(e)
    z_hat, z_norm = _unit(z_c)
    e_hat, e_norm = _unit(e_c)
    r, _ = _unit(z_hat + e_hat)
    scale = e_norm / jnp.maximum(z_norm, EPS)
    dot = lambda a, b: jnp.sum(a * b, axis=-1, keepdims=True)
    rotated = z - 2.0 * r * dot(r, z) + 2.0 * e_hat * dot(z_hat, z)
    return scale * rotated
