"""SimVQ: the codebook is a frozen random basis C times a learned linear map W.

Instead of learning K free codes, SimVQ learns W (d, d) and uses the codes
C·W, with C (K, d) drawn once at random and never trained. A gradient step
on W moves every code at once (the whole linear space spanned by the codes),
so codes that no encoder output selects are still updated and the codebook
does not collapse. The losses are the VQ-VAE ones, on the codes C·W.

References:
  Zhu et al. 2024, "Addressing Representation Collapse in Vector Quantized
  Models with One Linear Layer" (SimVQ), arXiv:2411.02038.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import Array

from jaxlab._checks import check_floating, check_num_codes
from jaxlab.quant.vq import VQOutput, vector_quantize


def simvq_init(key: Array, num_codes: int, dim: int) -> tuple[Array, Array]:
    """(frozen C (K, d) ~ N(0, 1/d), projection W (d, d) = I): the initial codebook is C.

    Args:
      key: typed PRNG key of the frozen basis (keep it to rebuild C).
      num_codes: K.
      dim: d.
    """
    check_num_codes(num_codes)
    if not isinstance(dim, int) or dim < 1:
        raise ValueError(f"dim must be a positive int, got {dim!r}")
    frozen = jax.random.normal(key, (num_codes, dim), jnp.float32) / jnp.sqrt(float(dim))
    return frozen, jnp.eye(dim, dtype=jnp.float32)


def simvq_codebook(frozen: Array, projection: Array) -> Array:
    """The codes ``sg[C]·W`` (K, d); gradients reach only ``projection``."""
    check_floating("frozen", frozen, min_ndim=2)
    check_floating("projection", projection, min_ndim=2)
    if frozen.ndim != 2 or projection.ndim != 2 or projection.shape[0] != frozen.shape[1]:
        raise ValueError(f"need frozen (K, d) and projection (d, d'), got {frozen.shape} and {projection.shape}")
    return jax.lax.stop_gradient(frozen) @ projection


def simvq_quantize(z: Array, frozen: Array, projection: Array, *, beta: float = 0.25, estimator: str = "ste") -> VQOutput:
    """Nearest-code quantization of ``z`` (..., d') against the codes C·W.

    Args:
      z: (..., d') encoder outputs.
      frozen: (K, d) the frozen random basis C.
      projection: (d, d') the learned map W.
      beta: commitment weight.
      estimator: ``"ste"`` or ``"rotation"``.

    Returns:
      :class:`jaxlab.quant.VQOutput`; its loss trains W (and the encoder).

    References:
      Zhu et al. 2024, SimVQ, arXiv:2411.02038.
    """
    return vector_quantize(z, simvq_codebook(frozen, projection), beta=beta, estimator=estimator)
