"""LoRA: low-rank adapters on chosen matrices of any parameter tree, and LoRA+ learning rates.

**Orientation (Flax kernels).** A Flax ``Dense`` kernel ``W`` has shape
``(in, out)`` and computes ``y = x @ W``. An adapted kernel is

    ``W = W0 + scale * a @ b``,  ``a``: ``(in, r)`` (input side), ``b``: ``(r, out)`` (output side),

so ``x @ W = x @ W0 + scale * (x @ a) @ b``: ``a`` is applied first (the
paper's down-projection ``A``) and ``b`` second (the up-projection ``B``). It is
the transpose of the paper's ``W = W0 + (alpha/r) B A`` with ``W`` of shape
``(out, in)``: Flax ``a = A^T``, ``b = B^T``, so the names keep their roles —
``a`` starts random, ``b`` starts at zero (the adapted model starts equal to the
base model), and LoRA+ gives ``b`` the larger learning rate.

**Trees.** :func:`lora_init` returns the *adapters*: a flat ``dict`` from the
``'/'``-joined path of each adapted leaf (``"params/Dense_0/kernel"``) to a
:class:`LoraPair`. The adapters are the trainable parameters; the base tree
``params`` (``W0`` and every other leaf) stays frozen — it is passed around but
never differentiated. :func:`lora_merge` folds the adapters into dense weights
(the merged model is an ordinary parameter tree), and :func:`lora_apply` wraps
an ``apply_fn`` so that it takes the adapters as its parameters.

**Scale.** ``scale = alpha / r`` (Hu et al.), or ``alpha / sqrt(r)`` with
``rslora=True`` (Kalajdzievski 2023), which keeps the update size independent
of the rank.

References:
    Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models", ICLR 2022.
    https://arxiv.org/abs/2106.09685

    Kalajdzievski, "A Rank Stabilization Scaling Factor for Fine-Tuning with
    LoRA" (rsLoRA), 2023. https://arxiv.org/abs/2312.03732

    Hayou, Ghosh & Yu, "LoRA+: Efficient Low Rank Adaptation of Large Models",
    ICML 2024. https://arxiv.org/abs/2402.12354
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable
from typing import Generic, NamedTuple, TypeVar

import jax
import jax.numpy as jnp
import optax

from jaxlab.optim.dimension_numbers import path_str

__all__ = [
    "LORA_A",
    "LORA_B",
    "LoraPair",
    "default_lora_predicate",
    "lora_apply",
    "lora_init",
    "lora_labels",
    "lora_merge",
    "lora_plus",
    "lora_scale",
    "lora_targets",
]

LORA_A = "lora_a"
LORA_B = "lora_b"
_HI = jax.lax.Precision.HIGHEST

# Arrays for adapters and gradients; other leaves in trees that mirror them (labels, optimizer moments).
_Leaf = TypeVar("_Leaf")


class LoraPair(NamedTuple, Generic[_Leaf]):
    """The adapter of one kernel ``(in, out)``: ``W = W0 + scale * a @ b``.

    Attributes:
        a: ``(in, r)``, input side (applied first; Gaussian at init).
        b: ``(r, out)``, output side (zero at init).
    """

    a: _Leaf
    b: _Leaf


def _is_pair(x) -> bool:
    return isinstance(x, LoraPair)


def default_lora_predicate(path: str, leaf) -> bool:
    """Every 2-D leaf named ``kernel`` (Flax ``Dense`` kernels); not biases, embeddings' ``embedding``, convs."""
    return getattr(leaf, "ndim", 0) == 2 and path.split("/")[-1] == "kernel"


def lora_targets(params, predicate=None) -> dict[str, tuple[int, int]]:
    """The paths of the leaves to adapt and their ``(in, out)`` shapes.

    Args:
        params: parameter tree.
        predicate: ``None`` (:func:`default_lora_predicate`), a callable
            ``(path: str, leaf) -> bool``, or a tree of bools with the structure of
            ``params`` (a mask, e.g. from optax labels).

    Returns:
        ``{path: (in, out)}`` in tree order.

    Raises:
        ValueError: if a selected leaf is not 2-D, or nothing is selected.
    """
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    if predicate is None or callable(predicate):
        chosen = [(path_str(p), leaf) for p, leaf in leaves if (predicate or default_lora_predicate)(path_str(p), leaf)]
    else:
        mask = jax.tree_util.tree_leaves(predicate)
        if len(mask) != len(leaves):
            raise ValueError(f"lora: a mask must have one bool per leaf of params ({len(leaves)}), got {len(mask)}")
        chosen = [(path_str(p), leaf) for (p, leaf), m in zip(leaves, mask) if m]
    for name, leaf in chosen:
        if getattr(leaf, "ndim", 0) != 2:
            raise ValueError(f"lora: leaf {name!r} must be a 2-D kernel (in, out), got shape {jnp.shape(leaf)}")
    if not chosen:
        raise ValueError("lora: the predicate selects no leaf of params (default: 2-D leaves named 'kernel')")
    return {name: tuple(leaf.shape) for name, leaf in chosen}


def lora_scale(rank: int, alpha: float | None = None, *, rslora: bool = False) -> float:
    """``alpha / rank`` (LoRA) or ``alpha / sqrt(rank)`` (rsLoRA); ``alpha=None`` means ``alpha = rank``.

    Raises:
        ValueError: for a rank that is not a positive int, or a non-positive alpha.
    """
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ValueError(f"lora_scale: rank must be a positive int, got {rank!r}")
    alpha = float(rank) if alpha is None else alpha
    if not alpha > 0:
        raise ValueError(f"lora_scale: alpha must be > 0, got {alpha!r}")
    return alpha / (math.sqrt(rank) if rslora else rank)


def lora_init(params, rank: int, *, key: jax.Array, predicate=None, dtype=None) -> dict[str, LoraPair]:
    """Fresh adapters: ``a ~ N(0, 1/in)`` (so ``x @ a`` keeps the scale of ``x``), ``b = 0``.

    With ``b = 0`` the adapted model equals the base model at initialization.
    Each leaf's ``a`` is drawn from ``fold_in(key, crc32(path))``, so adding or
    removing another target does not change it.

    Args:
        params: the base parameter tree (only shapes, dtypes and paths are read).
        rank: adapter rank ``r``, ``1 <= r <= min(in, out)`` for every target.
        key: typed PRNG key.
        predicate: which leaves to adapt (see :func:`lora_targets`).
        dtype: adapter dtype; ``None`` uses each kernel's dtype.

    Returns:
        ``{path: LoraPair(a (in, r), b (r, out))}``.

    Raises:
        ValueError: bad ``rank`` or target; TypeError: untyped ``key``.

    References:
        Hu et al., ICLR 2022, section 4.1.
    """
    if not (isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key)):
        raise TypeError(f"lora_init: key must be a typed PRNG key (jax.random.key(seed)), got {key!r}")
    targets = lora_targets(params, predicate)
    leaves = {path_str(p): leaf for p, leaf in jax.tree_util.tree_flatten_with_path(params)[0]}
    adapters = {}
    for name, (fan_in, fan_out) in targets.items():
        if isinstance(rank, bool) or not isinstance(rank, int) or not 1 <= rank <= min(fan_in, fan_out):
            raise ValueError(f"lora_init: rank must be an int in [1, {min(fan_in, fan_out)}] for {name!r} "
                             f"of shape {(fan_in, fan_out)}, got {rank!r}")  # fmt: skip
        dt = dtype or leaves[name].dtype
        sub = jax.random.fold_in(key, zlib.crc32(name.encode()) & 0x7FFFFFFF)
        a = jax.random.normal(sub, (fan_in, rank), dt) / math.sqrt(fan_in)
        adapters[name] = LoraPair(a=a, b=jnp.zeros((rank, fan_out), dt))
    return adapters


def _check_adapters(params, adapters, fn: str) -> dict:
    leaves = {path_str(p): leaf for p, leaf in jax.tree_util.tree_flatten_with_path(params)[0]}
    for name, pair in adapters.items():
        if name not in leaves:
            raise ValueError(f"{fn}: adapter {name!r} names no leaf of params")
        if not _is_pair(pair):
            raise TypeError(f"{fn}: adapters[{name!r}] must be a LoraPair, got {type(pair).__name__}")
        shape = jnp.shape(leaves[name])
        want = ((shape[0], jnp.shape(pair.a)[-1]), (jnp.shape(pair.a)[-1], shape[-1])) if len(shape) == 2 else None
        if want is None or (jnp.shape(pair.a), jnp.shape(pair.b)) != want:
            raise ValueError(f"{fn}: adapter {name!r} for a kernel of shape {shape} must have a (in, r) and "
                             f"b (r, out), got a {jnp.shape(pair.a)} and b {jnp.shape(pair.b)}")  # fmt: skip
    return leaves


def lora_merge(params, adapters: dict[str, LoraPair], *, scale: float):
    """Dense weights ``W0 + scale * a @ b`` for every adapted leaf; other leaves unchanged.

    Differentiable in ``adapters`` (and ``params``); the result has the structure and
    dtypes of ``params``, so the merged model runs with the base ``apply_fn``.

    Raises:
        ValueError: an adapter path that is not a leaf of ``params`` or a shape mismatch.
    """
    _check_adapters(params, adapters, "lora_merge")

    def merge(path, leaf):
        pair = adapters.get(path_str(path))
        if pair is None:
            return leaf
        delta = jnp.matmul(pair.a, pair.b, precision=_HI)
        return (leaf + scale * delta).astype(leaf.dtype)

    return jax.tree_util.tree_map_with_path(merge, params)


def lora_apply(apply_fn: Callable, params, *, scale: float) -> Callable:
    """Wraps ``apply_fn(params, *args)`` into ``fn(adapters, *args)`` with ``params`` frozen.

    The kernels are merged on the fly (``W0 + scale * a @ b``; for large ``in`` and
    ``out`` a factored ``x @ W0 + scale * (x @ a) @ b`` saves memory, but the merged
    form works with any ``apply_fn``). Gradients flow only into the adapters
    (``params`` is closed over and wrapped in ``stop_gradient``).
    """
    frozen = jax.tree_util.tree_map(jax.lax.stop_gradient, params)

    def wrapped(adapters, *args, **kwargs):
        return apply_fn(lora_merge(frozen, adapters, scale=scale), *args, **kwargs)

    return wrapped


def lora_labels(tree):
    """Labels every ``LoraPair.a`` leaf :data:`LORA_A` and ``b`` leaf :data:`LORA_B`; other leaves ``"other"``.

    ``tree`` may be the adapters dict or any tree containing :class:`LoraPair` nodes
    (e.g. ``{"lora": adapters, "head_bias": ...}``); use it as ``param_labels`` of
    ``optax.multi_transform``.
    """

    def label(node):
        return LoraPair(a=LORA_A, b=LORA_B) if _is_pair(node) else "other"

    return jax.tree_util.tree_map(label, tree, is_leaf=_is_pair)


def lora_plus(
    make_optimizer: Callable[..., optax.GradientTransformation],
    learning_rate,
    *,
    ratio: float = 16.0,
    other_learning_rate=None,
) -> optax.GradientTransformationExtraArgs:
    """LoRA+: the same optimizer for ``a`` and ``b``, with ``lr_b = ratio * lr_a`` (Hayou et al. 2024).

    Built with ``optax.multi_transform`` over :func:`lora_labels`, so it applies to
    the adapters dict or any tree holding :class:`LoraPair` nodes.

    Args:
        make_optimizer: ``learning_rate -> GradientTransformation`` (e.g. ``optax.adamw``
            or ``functools.partial(optax.adamw, weight_decay=0.0)``). To inject the
            rate, pass ``optax.inject_hyperparams(optax.adam)`` here; wrapping
            ``lora_plus`` itself in ``inject_hyperparams`` would treat
            ``make_optimizer`` as a schedule.
        learning_rate: the rate of ``a`` (a scalar or a schedule ``step -> rate``).
        ratio: ``lambda = lr_b / lr_a``; the paper's default is 16 (``1`` is plain LoRA).
        other_learning_rate: rate of leaves that are not in a ``LoraPair``;
            ``None`` uses ``learning_rate``.

    Returns:
        An ``optax.GradientTransformationExtraArgs``.

    Raises:
        ValueError: for a non-positive ``ratio``.

    References:
        Hayou, Ghosh & Yu, "LoRA+", ICML 2024, Algorithm 1.
    """
    if not (isinstance(ratio, (int, float)) and ratio > 0):
        raise ValueError(f"lora_plus: ratio must be a positive number, got {ratio!r}")
    if callable(learning_rate):
        lr_b = lambda step: ratio * learning_rate(step)
    else:
        lr_b = ratio * learning_rate
    transforms = {
        LORA_A: make_optimizer(learning_rate),
        LORA_B: make_optimizer(lr_b),
        "other": make_optimizer(learning_rate if other_learning_rate is None else other_learning_rate),
    }
    return optax.with_extra_args_support(optax.multi_transform(transforms, lora_labels))
