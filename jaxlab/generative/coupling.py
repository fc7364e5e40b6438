"""Minibatch optimal-transport coupling of data and noise.

Flow matching pairs each data point x0 with an independent noise draw x1, so
the straight lines between pairs cross and the marginal velocity field
averages over them: its paths curve, and its regression target is noisy.
Pairing the batch instead by the optimal assignment,

    π* = argmin_π Σ_i |x0_{π(i)} − x1_i|²   over permutations π of the batch,

keeps the marginals (every x0 and every x1 is still used once) while the
pairs approach the optimal-transport coupling as the batch grows, which
makes the paths straighter and the targets less noisy. For shortcut models
the straighter paths are what the large-step levels have to learn, and the
improved shortcut models (iSM) use such an OT coupling for that reason.

The assignment is solved exactly by ``scipy.optimize.linear_sum_assignment``
on the host (a ``jax.pure_callback``), O(b³) for a batch of b; the squared
distances are computed in JAX.

References:
  Tong, Fatras, Malkin, Huguet, Zhang, Rector-Brooks, Wolf, Bengio 2024,
  "Improving and generalizing flow-based generative models with minibatch
  optimal transport" (TMLR; arXiv:2302.00482).
  Pooladian, Ben-Hamu, Domingo-Enrich, Amos, Lipman, Chen 2023, "Multisample
  Flow Matching" (arXiv:2304.14772).
  Nguyen, Nguyen, Vu, Dao, Tran, Tran, Tran 2025, "Improved Training
  Technique for Shortcut Models" (NeurIPS; arXiv:2510.21250).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array
from scipy.optimize import linear_sum_assignment

from jaxlab.linalg.distances import pairwise_sq_distances


def _host_assignment(cost: np.ndarray) -> np.ndarray:
    """Column matched to each row of a square cost matrix, as int32."""
    rows, columns = linear_sum_assignment(np.asarray(cost, np.float64))
    matched = np.empty(len(rows), np.int32)
    matched[rows] = columns
    return matched


def optimal_assignment(cost: Array) -> Array:
    """The permutation minimizing ``Σ_i cost[i, perm[i]]`` (exact, jittable).

    Args:
      cost: (b, b) floating cost matrix.

    Returns:
      (b,) int32 permutation: row i is matched to column ``perm[i]``.

    Raises:
      ValueError: if ``cost`` is not a square floating matrix.
    """
    if not hasattr(cost, "ndim") or cost.ndim != 2 or cost.shape[0] != cost.shape[1]:
        raise ValueError(f"cost must be a square (b, b) matrix, got shape {getattr(cost, 'shape', type(cost).__name__)}")
    if not jnp.issubdtype(cost.dtype, jnp.floating):
        raise ValueError(f"cost must be floating, got dtype {cost.dtype}")
    result = jax.ShapeDtypeStruct(cost.shape[:1], jnp.int32)
    return jax.pure_callback(_host_assignment, result, jax.lax.stop_gradient(cost))


def minibatch_ot_pairing(x0: Array, x1: Array) -> Array:
    """The permutation of ``x0`` that pairs it with ``x1`` at least total squared distance.

    Args:
      x0: ``(b, *features)`` data.
      x1: ``(b, *features)`` noise.

    Returns:
      (b,) int32 permutation ``perm``; ``x0[perm][i]`` is the data point paired with ``x1[i]``.

    Raises:
      ValueError: if the shapes differ or are not ``(b, *features)``.
    """
    if x0.ndim < 2 or x0.shape != x1.shape:
        raise ValueError(f"x0 and x1 must have one shape (b, *features), got {x0.shape} and {x1.shape}")
    b = x0.shape[0]
    cost = pairwise_sq_distances(x1.reshape(b, -1).astype(jnp.float32), x0.reshape(b, -1).astype(jnp.float32))  # (b, b): noise i, data j
    return optimal_assignment(cost)
