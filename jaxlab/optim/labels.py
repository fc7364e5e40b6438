"""Default routing of parameters between Muon and AdamW, by rank and path.

Muon's update is the steepest-descent direction under the spectral norm, which
suits hidden weight matrices; embeddings, output heads, gains and biases keep
AdamW (Jordan 2024; Liu et al. 2025).

References:
    Jordan, "Muon: An optimizer for hidden layers in neural networks", 2024.
    https://kellerjordan.github.io/posts/muon/

    Liu et al., "Muon is Scalable for LLM Training", 2025.
    https://arxiv.org/abs/2502.16982
"""

from __future__ import annotations

import re

import jax

from jaxlab.optim.dimension_numbers import path_str, resolve_dimension_numbers

__all__ = ["EMBEDDING_OR_HEAD_NAMES", "MUON", "ADAM", "is_embedding_or_head", "muon_labels", "check_labels"]

MUON = "muon"
ADAM = "adam"
EMBEDDING_OR_HEAD_NAMES = frozenset({"embed", "embedding", "wte", "wpe", "lm_head", "head", "unembed"})


def is_embedding_or_head(path) -> bool:
    """Whether a path component names an embedding or an output head.

    A component matches when, lower-cased and with Flax's ``_<n>`` suffix removed,
    it equals one of :data:`EMBEDDING_OR_HEAD_NAMES` — whole components only, so
    ``MultiHeadDotProductAttention_0`` or ``head_dim`` is not a head.

    Args:
        path: a JAX key path, or a ``'/'``-separated string.
    """
    text = path if isinstance(path, str) else path_str(path)
    return any(re.sub(r"_\d+$", "", part.lower()) in EMBEDDING_OR_HEAD_NAMES for part in text.split("/"))


def muon_labels(params, dimension_numbers=None):
    """Labels each leaf ``"muon"`` or ``"adam"`` (the default ``param_labels`` of :func:`muon`).

    Rules: rank < 2 → ``"adam"``; a path naming an embedding or head (see
    :func:`is_embedding_or_head`) → ``"adam"``; a leaf named ``bias`` (Flax's
    name; a ``DenseGeneral`` bias such as ``(heads, head_dim)`` has rank 2 but is
    no weight matrix) → ``"adam"``; rank 2 → ``"muon"``; rank > 2 → ``"muon"``
    only if ``dimension_numbers`` gives that leaf ``DimensionNumbers``, else
    ``"adam"``.

    Args:
        params: parameter tree (only shapes and paths are used).
        dimension_numbers: ``None``, a tree of ``DimensionNumbers``/``None``
            mirroring ``params``, or a callable returning one (e.g.
            :func:`jaxlab.optim.flax_dimension_numbers`).

    Returns:
        A tree of the structure of ``params`` with string leaves.

    Raises:
        ValueError: naming the leaf path when given dimension numbers do not fit a
            leaf's rank.
    """
    dims = resolve_dimension_numbers(dimension_numbers, params, fn="muon_labels")

    def label(path, leaf):
        name = path_str(path)
        shape = tuple(getattr(leaf, "shape", ()))
        spec = dims.get(name)
        if spec is not None:
            spec.normalize(shape, name)  # raises on a rank mismatch
        if len(shape) < 2 or is_embedding_or_head(name) or name.split("/")[-1] == "bias":
            return ADAM
        if len(shape) == 2 or spec is not None:
            return MUON
        return ADAM

    return jax.tree_util.tree_map_with_path(label, params)


def check_labels(labels, fn: str):
    """Raises ``ValueError`` naming the path of any label other than ``"muon"``/``"adam"``."""
    for path, value in jax.tree_util.tree_flatten_with_path(labels)[0]:
        if value not in (MUON, ADAM):
            raise ValueError(f"{fn}: label of leaf {path_str(path)!r} must be 'muon' or 'adam', got {value!r}")
    return labels
