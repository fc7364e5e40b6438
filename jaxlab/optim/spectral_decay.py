"""Spectral weight decay: add ``rate * sigma_1 u_1 v_1^T``, the gradient of ``rate/2 * |W|_2^2``.

Where ``add_decayed_weights`` shrinks every singular value of a matrix in
proportion (the gradient of ``1/2 |W|_F^2``), spectral decay shrinks only the
largest one, penalizing the spectral norm that bounds the layer's Lipschitz
constant. The top singular pair is tracked by one (or a few) power steps per
update, warm-started from the previous update's right singular vector kept in
the state, so the estimate converges over training steps at no extra matmul.

References:
    Yoshida & Miyato, "Spectral Norm Regularization for Improving the
    Generalizability of Deep Learning", 2017. https://arxiv.org/abs/1705.10941
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxlab._checks import check_scalar, check_steps
from jaxlab.linalg import power_iteration

__all__ = ["SpectralDecayState", "spectral_decay"]


class SpectralDecayState(NamedTuple):
    """Per-leaf right singular vector estimate ``v`` (shape ``(n,)`` for an ``(m, n)`` leaf; ``(0,)`` otherwise)."""

    v: optax.Updates


def _start_vector(n: int, index: int) -> np.ndarray:
    """Fixed pseudo-random unit vector for leaf ``index`` (deterministic, seed ``index``)."""
    v = np.random.default_rng(index).standard_normal(n)
    return v / np.linalg.norm(v)


def _decay_term(w: jax.Array, v: jax.Array, power_steps) -> tuple[jax.Array, jax.Array]:
    """``(sigma u v^T, v)`` after ``power_steps`` power steps on ``w`` (m, n) warm-started at ``v`` (n,)."""
    sigma, u, v = power_iteration(w.astype(jnp.float32), steps=power_steps, v0=v)
    return sigma * jnp.outer(u, v), v  # (m, n), (n,)


def spectral_decay(rate, *, power_steps=1, mask=None) -> optax.GradientTransformationExtraArgs:
    """Adds ``rate * sigma_1 u_1 v_1^T`` of each rank-2 parameter to its update.

    Chains like ``optax.add_decayed_weights``: place it before the learning-rate
    scaling, e.g. ``optax.chain(jaxlab.optim.scale_by_muon(),
    jaxlab.optim.spectral_decay(1e-2), optax.scale_by_learning_rate(lr))``, or
    use ``muon(..., spectral_decay_rate=...)``. Leaves of rank other than 2 pass
    through unchanged.

    Each update runs ``power_steps`` steps ``v <- W^T W v / |W^T W v|`` from the
    stored ``v`` and adds ``rate * (W v) v^T`` (``= rate * sigma_1 u_1 v_1^T`` at
    convergence); the new ``v`` is stored, so as ``W`` drifts slowly one step per
    update keeps tracking the top singular pair. Zero matrices add zero.

    Args:
        rate: decay strength (scalar, schedule-free; may be injected).
        power_steps: power steps per update (``>= 1``; may be injected).
        mask: optional tree of booleans or callable ``params -> tree`` selecting
            the leaves to decay, as in ``optax.add_decayed_weights``.

    Returns:
        An ``optax.GradientTransformationExtraArgs`` with :class:`SpectralDecayState`;
        its ``update`` requires ``params``.

    Raises:
        ValueError: for a non-scalar ``rate``, a bad ``power_steps``, or a missing
            ``params`` in ``update``.

    References:
        Yoshida & Miyato, "Spectral Norm Regularization", 2017.
    """
    fn = "spectral_decay"
    check_scalar("rate", rate, where=fn)
    check_steps("power_steps", power_steps, where=fn)

    def init_fn(params):
        leaves, treedef = jax.tree.flatten(params)
        vs = [jnp.asarray(_start_vector(x.shape[1], i), jnp.float32) if jnp.ndim(x) == 2 else jnp.zeros((0,), jnp.float32) for i, x in enumerate(leaves)]
        return SpectralDecayState(v=jax.tree.unflatten(treedef, vs))

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError(f"{fn}: update needs params (the decay is computed from the weights)")

        grads, treedef = jax.tree.flatten(updates)
        weights, vs = treedef.flatten_up_to(params), treedef.flatten_up_to(state.v)  # type: ignore[attr-defined]  # jaxlib ships no stub for PyTreeDef
        new_grads, new_vs = [], []
        for g, w, v in zip(grads, weights, vs, strict=True):
            if jnp.ndim(w) == 2:
                term, v = _decay_term(w, v, power_steps)
                g = (g + rate * term).astype(g.dtype)
            new_grads.append(g)
            new_vs.append(v)
        return jax.tree.unflatten(treedef, new_grads), SpectralDecayState(v=jax.tree.unflatten(treedef, new_vs))

    tx = optax.GradientTransformationExtraArgs(init_fn, update_fn)
    if mask is not None:
        return optax.with_extra_args_support(optax.masked(tx, mask))
    return tx
