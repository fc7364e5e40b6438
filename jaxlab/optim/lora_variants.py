"""LoRA-GA (gradient-aligned initialization) and LoRA-Pro (gradient adjustment), in Flax orientation.

Notation (see :mod:`jaxlab.optim.lora`): a kernel ``W (in, out)`` is adapted as
``W = W0 + s a b`` with ``a (in, r)``, ``b (r, out)``, ``s`` the LoRA scale. For
the full gradient ``G = dL/dW (in, out)`` the adapter gradients are
``g_a = s G b^T`` and ``g_b = s a^T G``, and a gradient step on the adapters
changes ``W`` to first order by ``-lr * s (g_a b + a g_b)`` — the *equivalent
gradient* ``g~ = s (g_a b + a g_b)`` (:func:`lora_equivalent_gradient`).

**LoRA-GA** (Wang et al. 2024, arXiv:2407.05000) chooses ``a, b`` so that the
first equivalent gradient is the best rank-``2r`` approximation of ``G``: with
``G = U S V^T`` (averaged over a few batches), ``a = c U[:, :r]`` and
``b = c V[:, r:2r]^T`` give ``g~ = s^2 c^2 (U_r U_r^T G + G V_{r:2r} V_{r:2r}^T)
= s^2 c^2 G_{2r}``. (The paper, with ``W (out, in) = W0 + s B A``, takes
``A = V[:, :r]^T`` on the input side and ``B = U[:, r:2r]`` on the output side
— its "ArB2r"; transposing maps the paper's input-side ``V`` to Flax's ``U``.) The
"stable output" factor is ``c = out^(1/4) / sqrt(gamma)``, and ``W0`` is replaced
by ``W0 - s a b`` so the initial model is unchanged.

**LoRA-Pro** (Wang et al. 2024, arXiv:2407.18242) replaces ``(g_a, g_b)`` by the
pair whose equivalent gradient is the orthogonal projection of ``G`` onto the
tangent space ``{a X + Y b}``:
``g~ = G P_b + P_a G (I - P_b)`` with ``P_a = a (a^T a)^{-1} a^T`` (in x in) and
``P_b = b^T (b b^T)^{-1} b`` (out x out) — rank at most ``2r``, and not a
truncated SVD. In Flax orientation the adjusted gradients are

    ``g_a' = g_a (b b^T)^{-1} / s^2 + a Z``,
    ``g_b' = (a^T a)^{-1} g_b (I - P_b) / s^2 - Z b``,

for any ``r x r`` matrix ``Z`` (the paper's ``X^T``); the paper's choice keeps
``(g_a', g_b')`` closest to ``(g_a, g_b)``, which is the Sylvester equation
``(a^T a) Z + Z (b b^T) = -(a^T g_a (b b^T)^{-1}) / s^2`` (solved here through
the eigendecompositions of the two SPD ``r x r`` matrices). Everything needs only
``g_a, g_b`` — the full ``G`` is never formed, except by :func:`lora_pro_adam`,
which keeps the paper's full-size Adam moments of ``g~``.

References:
    Wang, Yu & Li, "LoRA-GA: Low-Rank Adaptation with Gradient Approximation",
    NeurIPS 2024. https://arxiv.org/abs/2407.05000

    Wang, Liang, Zhang, Li & Tan, "LoRA-Pro: Are Low-Rank Adapters Properly
    Optimized?", ICLR 2025. https://arxiv.org/abs/2407.18242
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxlab._checks import check_scalar
from jaxlab.optim.dimension_numbers import path_str
from jaxlab.optim.lora import LoraPair, _is_pair, lora_targets

__all__ = [
    "LoraProAdamState",
    "lora_equivalent_gradient",
    "lora_ga_init",
    "lora_pro_adam",
    "lora_pro_gradients",
    "scale_by_lora_pro",
]

_HI = jax.lax.Precision.HIGHEST


def _mm(x, y):
    return jnp.matmul(x, y, precision=_HI)


def lora_ga_init(params, grads, rank: int, *, scale: float, gamma: float = 16.0, predicate=None):
    """LoRA-GA adapters from the SVD of the (averaged) full gradient, with ``W0`` offset.

    Args:
        params: base parameter tree.
        grads: gradient of the loss with respect to ``params`` (same structure),
            typically averaged over a few batches.
        rank: adapter rank ``r``; ``2r <= min(in, out)`` for every target.
        scale: the LoRA scale ``s`` the adapters will be used with (see
            :func:`jaxlab.optim.lora_scale`).
        gamma: the "stable output" hyperparameter ``gamma``; both factors are
            multiplied by ``out^(1/4) / sqrt(gamma)`` (the paper uses 16–64).
        predicate: which leaves to adapt (see :func:`jaxlab.optim.lora_targets`).

    Returns:
        ``(new_params, adapters)``: ``new_params`` has ``W0 - s a b`` in each adapted
        kernel (so ``lora_merge(new_params, adapters) == params`` up to rounding);
        ``adapters`` maps paths to :class:`LoraPair` ``a = c U[:, :r]``,
        ``b = c V[:, r:2r]^T`` with ``grad = U S V^T``.

    Raises:
        ValueError: mismatched ``grads``, a bad ``rank`` or ``gamma``.

    References:
        Wang, Yu & Li, NeurIPS 2024, section 3.2–3.3 (Algorithm 1).
    """
    if not gamma > 0:
        raise ValueError(f"lora_ga_init: gamma must be > 0, got {gamma!r}")
    if jax.tree_util.tree_structure(params) != jax.tree_util.tree_structure(grads):  # type: ignore[operator]  # jaxlib ships no stub for PyTreeDef
        raise ValueError("lora_ga_init: grads must have the tree structure of params")
    targets = lora_targets(params, predicate)
    flat_grads = {path_str(p): g for p, g in jax.tree_util.tree_flatten_with_path(grads)[0]}
    adapters = {}
    for name, (fan_in, fan_out) in targets.items():
        if isinstance(rank, bool) or not isinstance(rank, int) or not 1 <= 2 * rank <= min(fan_in, fan_out):
            raise ValueError(f"lora_ga_init: rank must be an int with 2 * rank <= {min(fan_in, fan_out)} for "
                             f"{name!r} of shape {(fan_in, fan_out)}, got {rank!r}")  # fmt: skip
        g = jnp.asarray(flat_grads[name])
        if g.shape != (fan_in, fan_out):
            raise ValueError(f"lora_ga_init: grads[{name!r}] must have shape {(fan_in, fan_out)}, got {g.shape}")
        u, _, vh = jnp.linalg.svd(g.astype(jnp.promote_types(g.dtype, jnp.float32)), full_matrices=False)
        c = fan_out**0.25 / math.sqrt(gamma)
        adapters[name] = LoraPair(a=(c * u[:, :rank]).astype(g.dtype), b=(c * vh[rank : 2 * rank]).astype(g.dtype))

    def offset(path, leaf):
        pair = adapters.get(path_str(path))
        return leaf if pair is None else (leaf - scale * _mm(pair.a, pair.b)).astype(leaf.dtype)

    return jax.tree_util.tree_map_with_path(offset, params), adapters


def lora_equivalent_gradient(pair: LoraPair, grad: LoraPair, *, scale: float) -> jax.Array:
    """``s (g_a b + a g_b)`` ``(in, out)``: the first-order change of ``W`` per unit step of ``-grad``."""
    return scale * (_mm(grad.a, pair.b) + _mm(pair.a, grad.b))


def _spd_inverse_and_eig(m, ridge):
    """Eigendecomposition of the SPD ``m + eps I`` (``eps = ridge * mean eigenvalue + tiny``) and its inverse."""
    r = m.shape[-1]
    eps = ridge * jnp.trace(m) / r + jnp.finfo(m.dtype).tiny ** 0.5
    w, v = jnp.linalg.eigh(0.5 * (m + m.T) + eps * jnp.eye(r, dtype=m.dtype))
    return w, v, _mm(v / w, v.T)


def _pro_adjust(a, b, ga, gb, s, ridge):
    """LoRA-Pro's adjusted ``(g_a', g_b')`` from plain adapter gradients ``(g_a, g_b)`` (see module docstring)."""
    wa, va, ata_inv = _spd_inverse_and_eig(_mm(a.T, a), ridge)  # (r, r)
    wb, vb, bbt_inv = _spd_inverse_and_eig(_mm(b, b.T), ridge)
    ga0 = _mm(ga, bbt_inv) / s**2  # (in, r)
    gb_full = _mm(ata_inv, gb) / s**2  # (r, out)
    gb0 = gb_full - _mm(_mm(gb_full, b.T), _mm(bbt_inv, b))  # right-multiply by (I - P_b)
    rhs = -_mm(a.T, ga0)  # (r, r)
    # (a^T a) Z + Z (b b^T) = rhs  <=>  in the eigenbases: (wa_i + wb_j) Zt_ij = (va^T rhs vb)_ij
    z = _mm(_mm(va, _mm(_mm(va.T, rhs), vb) / (wa[:, None] + wb[None, :])), vb.T)
    return ga0 + _mm(a, z), gb0 - _mm(z, b)


def lora_pro_gradients(adapters, grads, *, scale: float, ridge: float = 1e-6):
    """LoRA-Pro adjustment of every :class:`LoraPair` gradient in ``grads`` (other leaves pass through).

    The equivalent gradient of the result is ``G P_b + P_a G (I - P_b)``, the
    orthogonal projection of the full gradient onto ``{a X + Y b}``; among the
    pairs with that property it is the one closest to the plain gradients.

    Args:
        adapters: a tree holding :class:`LoraPair` nodes (the current ``a``, ``b``).
        grads: the gradients, same structure.
        scale: LoRA scale ``s``.
        ridge: relative Tikhonov term in ``(a^T a)^{-1}`` and ``(b b^T)^{-1}``
            (``b = 0`` at a plain LoRA start makes ``b b^T`` singular; the result
            is then ``g_a' = 0``, ``g_b' = (a^T a)^{-1} g_b / s^2``, i.e. ``g~ = P_a G``).

    Returns:
        The adjusted gradients (structure of ``grads``).

    References:
        Wang et al., "LoRA-Pro", ICLR 2025, Theorems 2.1–2.2.
    """

    def adjust(pair, grad):
        if not _is_pair(pair):
            return grad
        f32 = jnp.promote_types(pair.a.dtype, jnp.float32)
        a, b, g_a, g_b = (t.astype(f32) for t in (pair.a, pair.b, grad.a, grad.b))
        ga, gb = _pro_adjust(a, b, g_a, g_b, scale, ridge)
        return LoraPair(a=ga.astype(grad.a.dtype), b=gb.astype(grad.b.dtype))

    return jax.tree_util.tree_map(adjust, adapters, grads, is_leaf=_is_pair)


class _EmptyState(NamedTuple):
    """No state."""


def scale_by_lora_pro(*, scale: float, ridge: float = 1e-6) -> optax.GradientTransformationExtraArgs:
    """Optax transform applying :func:`lora_pro_gradients`; ``update`` needs ``params`` (the adapters).

    Chain it before the optimizer, e.g. ``optax.chain(scale_by_lora_pro(scale=s),
    optax.sgd(lr))``: with SGD the equivalent step on ``W`` is exactly
    ``-lr`` times the projected full gradient (to first order). Before an
    element-wise adaptive optimizer (Adam) that equivalence is lost; the paper's
    AdamW variant is :func:`lora_pro_adam`.

    Raises:
        ValueError: at ``update`` time if ``params`` is None.
    """
    check_scalar("scale", scale, where="scale_by_lora_pro")

    def init_fn(params):
        del params
        return _EmptyState()

    def update_fn(updates, state, params=None, **extra):
        del extra
        if params is None:
            raise ValueError("scale_by_lora_pro: update needs params (the current adapters)")
        return lora_pro_gradients(params, updates, scale=scale, ridge=ridge), state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


class LoraProAdamState(NamedTuple):
    """State of :func:`lora_pro_adam`: step count and full-size Adam moments of each equivalent gradient."""

    count: jax.Array  # type: ignore[assignment]  # shadows tuple.count as optax's states do
    mu: dict
    nu: dict


def lora_pro_adam(
    learning_rate, *, scale: float, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8, ridge: float = 1e-6
) -> optax.GradientTransformationExtraArgs:
    """LoRA-Pro with Adam (the paper's Algorithm 2, without weight decay).

    Per adapted kernel: the equivalent gradient ``g~ = G P_b + P_a G (I - P_b)`` is
    formed (``in x out``, from ``g_a`` and ``g_b`` alone), Adam's bias-corrected
    moments of ``g~`` give a full-matrix direction ``D``, and the adapters step
    along the LoRA-Pro adjusted gradients of ``D`` — the pair whose equivalent
    update is the projection of ``D``. Leaves outside a :class:`LoraPair` get plain
    Adam. Memory: two ``in x out`` moments per kernel, as in the paper.

    Args:
        learning_rate: scalar or schedule.
        scale: LoRA scale ``s``.
        b1, b2, eps: Adam's hyperparameters.
        ridge: see :func:`lora_pro_gradients`.

    References:
        Wang et al., "LoRA-Pro", ICLR 2025, Algorithm 2.
    """
    check_scalar("learning_rate", learning_rate, where="lora_pro_adam", schedule=True)

    def full_shape(node):
        if _is_pair(node):
            return jnp.zeros((node.a.shape[0], node.b.shape[1]), jnp.promote_types(node.a.dtype, jnp.float32))
        return jnp.zeros_like(node)

    def init_fn(params):
        zeros = jax.tree_util.tree_map(full_shape, params, is_leaf=_is_pair)
        return LoraProAdamState(count=jnp.zeros([], jnp.int32), mu=zeros, nu=zeros)

    def update_fn(updates, state, params=None, **extra):
        del extra
        if params is None:
            raise ValueError("lora_pro_adam: update needs params (the current adapters)")
        count = state.count + 1
        lr = learning_rate(state.count) if callable(learning_rate) else learning_rate
        c1, c2 = 1 - b1 ** count.astype(jnp.float32), 1 - b2 ** count.astype(jnp.float32)

        def one(pair, grad, mu, nu):
            if not _is_pair(pair):
                mu, nu = b1 * mu + (1 - b1) * grad, b2 * nu + (1 - b2) * jnp.square(grad)
                return -lr * (mu / c1) / (jnp.sqrt(nu / c2) + eps), mu, nu
            f32 = mu.dtype
            a, b, ga, gb = (t.astype(f32) for t in (pair.a, pair.b, grad.a, grad.b))
            pa, pb = _pro_adjust(a, b, ga, gb, scale, ridge)
            g_eq = lora_equivalent_gradient(LoraPair(a, b), LoraPair(pa, pb), scale=scale)  # (in, out)
            mu, nu = b1 * mu + (1 - b1) * g_eq, b2 * nu + (1 - b2) * jnp.square(g_eq)
            d = (mu / c1) / (jnp.sqrt(nu / c2) + eps)
            da, db = _pro_adjust(a, b, scale * _mm(d, b.T), scale * _mm(a.T, d), scale, ridge)
            return LoraPair(a=(-lr * da).astype(grad.a.dtype), b=(-lr * db).astype(grad.b.dtype)), mu, nu

        triples = jax.tree_util.tree_map(one, params, updates, state.mu, state.nu, is_leaf=_is_pair)
        is_triple = lambda x: isinstance(x, tuple) and not _is_pair(x) and len(x) == 3
        pick = lambda i: jax.tree_util.tree_map(lambda t: t[i], triples, is_leaf=is_triple)
        return pick(0), LoraProAdamState(count=count, mu=pick(1), nu=pick(2))

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
