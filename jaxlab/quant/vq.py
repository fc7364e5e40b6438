"""Nearest-code vector quantization with the straight-through estimator and the VQ-VAE losses.

A codebook (K, d) quantizes each d-vector z to its nearest code e (squared
Euclidean distance). The decoder sees e, but e is piecewise constant in z, so
the gradient is borrowed:

* ``"ste"``: straight-through, q = z + sg[e − z] — forward e, ∂L/∂z = ∂L/∂q;
* ``"rotation"``: the rotation trick (:mod:`jaxlab.quant.rotation`).

The codes themselves are trained by the VQ-VAE losses

    codebook loss  ‖sg[z] − e‖²   (moves codes towards encoder outputs),
    commitment     ‖z − sg[e]‖²   (keeps the encoder near its codes),

combined as ``codebook + β·commitment`` (β = 0.25); both are means over
every element of z.

References:
  van den Oord, Vinyals, Kavukcuoglu 2017, "Neural Discrete Representation
  Learning" (VQ-VAE), eq. 3.
  Bengio, Léonard, Courville 2013, "Estimating or Propagating Gradients
  Through Stochastic Neurons" (straight-through estimator).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import Array

from jaxlab._checks import check_codebook, check_floating
from jaxlab.quant.rotation import rotation_trick

ESTIMATORS = ("ste", "rotation")


class VQOutput(NamedTuple):
    """What :func:`vector_quantize` returns.

    Attributes:
      quantized: (..., d) the codes in the forward pass, with the estimator's gradient.
      indices: (...,) int32 code indices.
      loss: scalar ``codebook_loss + beta · commitment_loss``.
      codebook_loss: scalar mean of (sg[z] − e)².
      commitment_loss: scalar mean of (z − sg[e])².
    """

    quantized: Array
    indices: Array
    loss: Array
    codebook_loss: Array
    commitment_loss: Array


def squared_distances(z: Array, codebook: Array) -> Array:
    """‖z − e_k‖² for every code, (..., d) × (K, d) -> (..., K), as ‖z‖² − 2 z·e + ‖e‖² (clipped at 0)."""
    check_codebook(z, codebook)
    cross = jnp.einsum("...d,kd->...k", z, codebook)
    sq = jnp.sum(jnp.square(z), axis=-1, keepdims=True) - 2.0 * cross + jnp.sum(jnp.square(codebook), axis=-1)
    return jnp.maximum(sq, 0.0)


def nearest_code(z: Array, codebook: Array) -> Array:
    """(...,) int32 index of the nearest code of each (..., d) vector (ties: the lowest index)."""
    return jnp.argmin(squared_distances(z, codebook), axis=-1).astype(jnp.int32)


def straight_through(z: Array, e: Array) -> Array:
    """``z + sg[e − z]``: forward value ``e``, identity gradient to ``z``, none to ``e``."""
    return z + jax.lax.stop_gradient(e - z)


def codebook_losses(z: Array, e: Array) -> tuple[Array, Array]:
    """(codebook loss mean (sg[z] − e)², commitment loss mean (z − sg[e])²).

    References:
      van den Oord et al. 2017, "VQ-VAE", eq. 3 (second and third terms).
    """
    check_floating("z", z)
    check_floating("e", e)
    if z.shape != e.shape:
        raise ValueError(f"e must have the shape of z {z.shape}, got {e.shape}")
    codebook = jnp.mean(jnp.square(jax.lax.stop_gradient(z) - e))
    commitment = jnp.mean(jnp.square(z - jax.lax.stop_gradient(e)))
    return codebook, commitment


def vector_quantize(z: Array, codebook: Array, *, beta: float = 0.25, estimator: str = "ste") -> VQOutput:
    """Quantizes ``z`` to its nearest codes, with a gradient estimator and the VQ-VAE losses.

    Args:
      z: (..., d) encoder outputs.
      codebook: (K, d) codes (trained through ``loss``).
      beta: weight of the commitment loss.
      estimator: ``"ste"`` (straight-through) or ``"rotation"`` (rotation trick).

    Returns:
      :class:`VQOutput`.

    References:
      van den Oord et al. 2017, "VQ-VAE"; Fifty et al. 2024, arXiv:2410.06424.
    """
    check_codebook(z, codebook)
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
    indices = nearest_code(jax.lax.stop_gradient(z), jax.lax.stop_gradient(codebook))
    e = jnp.take(codebook, indices, axis=0)
    codebook_loss, commitment_loss = codebook_losses(z, e)
    quantized = straight_through(z, e) if estimator == "ste" else rotation_trick(z, e)
    return VQOutput(quantized, indices, codebook_loss + beta * commitment_loss, codebook_loss, commitment_loss)
