"""Default routing of parameters between Muon and AdamW, by rank and path, and a table of it.

Muon's update is the steepest-descent direction under the spectral norm, which
suits hidden weight matrices; embeddings, output heads, gains and biases keep
AdamW (Jordan 2024; Liu et al. 2025). The parameters of ``jaxlab.ssm.SSM``'s
dynamics (step size, eigenvalues, ``B``, ``P``) keep AdamW too: they are no
weight matrices (Gu et al. 2022 train them with a smaller Adam step).

References:
    Jordan, "Muon: An optimizer for hidden layers in neural networks", 2024.
    https://kellerjordan.github.io/posts/muon/

    Liu et al., "Muon is Scalable for LLM Training", 2025.
    https://arxiv.org/abs/2502.16982

    Gu, Goel, Ré, "Efficiently Modeling Long Sequences with Structured State
    Spaces", ICLR 2022.
"""

from __future__ import annotations

import re
import warnings
from typing import NamedTuple

import jax

from jaxlab.optim.dimension_numbers import attention_layout, matrix_view, path_str, resolve_dimension_numbers

__all__ = [
    "ADAM",
    "EMBEDDING_OR_HEAD_NAMES",
    "MUON",
    "MuonFallbackWarning",
    "RoutingRow",
    "RoutingTable",
    "check_labels",
    "describe_routing",
    "is_embedding_or_head",
    "muon_labels",
]

MUON = "muon"
ADAM = "adam"
EMBEDDING_OR_HEAD_NAMES = frozenset(
    {
        # embeddings (token, position)
        "embed", "embedding", "embeddings", "emb", "wte", "wpe", "positions",
        "tok_emb", "tok_embed", "tok_embedding", "token_embed", "token_embedding", "token_embeddings",
        "pos_emb", "pos_embed", "pos_embedding", "position_embedding", "position_embeddings",
        # output heads
        "head", "lm_head", "lm_out", "lm_logits", "out_head", "output_head", "cls_head",
        "classifier", "unembed", "unembedding", "logits", "readout",
    }
)  # fmt: skip


class MuonFallbackWarning(UserWarning):
    """A leaf of rank >= 3 without dimension numbers was routed to AdamW (warned once per path pattern)."""


class RoutingRow(NamedTuple):
    """One leaf of :func:`describe_routing`: path, shape, label (``"muon"``/``"adam"``) and the rule that chose it."""

    path: str
    shape: tuple[int, ...]
    label: str
    why: str


class RoutingTable(list):
    """A list of :class:`RoutingRow` whose ``str`` is an aligned text table."""

    def __str__(self) -> str:
        header = ("path", "shape", "label", "why")
        cells = [header, *((r.path, str(tuple(r.shape)), r.label, r.why) for r in self)]
        widths = [max(len(str(row[i])) for row in cells) for i in range(3)]
        pad = lambda row: "  ".join(str(c).ljust(w) for c, w in zip(row[:3], widths, strict=True))
        return "\n".join(f"{pad(row)}  {row[3]}" for row in cells)


def _base(part: str) -> str:
    return re.sub(r"_\d+$", "", part.lower())


def _embedding_or_head_part(text: str) -> str | None:
    return next((part for part in text.split("/") if _base(part) in EMBEDDING_OR_HEAD_NAMES), None)


def is_embedding_or_head(path) -> bool:
    """Whether a path component names an embedding or an output head.

    A component matches when, lower-cased and with Flax's ``_<n>`` suffix removed,
    it equals one of :data:`EMBEDDING_OR_HEAD_NAMES` — whole components only, so
    ``MultiHeadDotProductAttention_0``, ``head_dim`` or ``embed_proj`` is not one.

    Args:
        path: a JAX key path, or a ``'/'``-separated string.
    """
    return _embedding_or_head_part(path if isinstance(path, str) else path_str(path)) is not None


def _ssm_names() -> frozenset[str]:
    # Imported when routing, not with jaxlab.optim: the jaxlab.ssm package imports Flax.
    from jaxlab.ssm.labels import SSM_PARAM_NAMES

    return SSM_PARAM_NAMES


class _Route(NamedTuple):
    label: str
    why: str
    fallback: bool = False  # rank >= 3, no dimension numbers: AdamW by default, warned about


def _route(name: str, shape: tuple[int, ...], spec, default_dims: bool) -> _Route:
    """The route of one leaf: the single source of :func:`muon_labels` and :func:`describe_routing`."""
    if spec is not None:
        spec.normalize(shape, name)  # raises on a rank mismatch
    leaf = name.split("/")[-1]
    part = _embedding_or_head_part(name)
    if len(shape) < 2:
        return _Route(ADAM, f"rank {len(shape)} < 2")
    if part is not None:
        return _Route(ADAM, f"embedding/head name {part!r}")
    if leaf in _ssm_names():
        return _Route(ADAM, f"SSM parameter {leaf!r} (jaxlab.ssm.SSM_PARAM_NAMES)")
    if leaf == "bias":
        return _Route(ADAM, "bias")
    if spec is not None:
        view = matrix_view(shape, spec, name)
        found = attention_layout(name, shape) if default_dims else None
        source = found[1] if found is not None else f"dimension_numbers {spec}"
        batch = f"{view.batch} x " if view.batch > 1 else ""
        return _Route(MUON, f"{source} as {batch}({view.fan_in}, {view.fan_out}) matrix")
    if len(shape) == 2:
        return _Route(MUON, "rank-2 matrix")
    return _Route(ADAM, f"rank {len(shape)} without dimension numbers: AdamW fallback", fallback=True)


def _routes(params, dimension_numbers, fn: str) -> dict[str, tuple[tuple[int, ...], _Route]]:
    dims = resolve_dimension_numbers(dimension_numbers, params, fn=fn)
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        name, shape = path_str(path), tuple(getattr(leaf, "shape", ()))
        out[name] = shape, _route(name, shape, dims.get(name), dimension_numbers is None)
    return out


_WARNED_PATTERNS: set[str] = set()


def _warn_fallback(name: str, shape: tuple[int, ...]) -> None:
    pattern = re.sub(r"\d+", "*", name)  # one warning for Block_0 … Block_11
    if pattern in _WARNED_PATTERNS:
        return
    _WARNED_PATTERNS.add(pattern)
    warnings.warn(
        f"muon_labels: leaf {name!r} of shape {shape} has rank {len(shape)} and no dimension numbers, so it "
        "is trained with AdamW; pass dimension_numbers (e.g. jaxlab.optim.flax_dimension_numbers) to train it "
        f"with Muon, or labels to route it explicitly (warned once per path pattern {pattern!r})",
        MuonFallbackWarning,
        stacklevel=3,
    )


def muon_labels(params, dimension_numbers=None):
    """Labels each leaf ``"muon"`` or ``"adam"`` (the default ``labels`` of :func:`muon`).

    Rules, in order: rank < 2 → ``"adam"``; a path naming an embedding or head
    (see :func:`is_embedding_or_head`) → ``"adam"``; a leaf named in
    ``jaxlab.ssm.SSM_PARAM_NAMES`` (``log_step``, ``lambda_log_neg_re``,
    ``lambda_im``, ``B``, ``P``) → ``"adam"``; a leaf named ``bias`` (a
    ``DenseGeneral`` bias such as ``(heads, head_dim)`` has rank 2 but is no
    weight matrix) → ``"adam"``; a leaf with dimension numbers → ``"muon"``;
    rank 2 → ``"muon"``; rank > 2 otherwise → ``"adam"``, with a
    :class:`MuonFallbackWarning` once per process and path pattern (digits
    replaced by ``*``). Paths are those of :func:`path_str` (NNX ``Variable``
    ``value`` parts dropped). :func:`describe_routing` shows the rule per leaf.

    Args:
        params: parameter tree, Linen or NNX (only shapes and paths are used).
        dimension_numbers: ``None`` (:func:`attention_dimension_numbers`: Flax
            attention kernels are routed by their known layout), a tree of
            ``DimensionNumbers``/``None`` mirroring ``params``, or a callable
            returning one (e.g. :func:`jaxlab.optim.flax_dimension_numbers`).

    Returns:
        A tree of the structure of ``params`` with string leaves.

    Raises:
        ValueError: naming the leaf path when given dimension numbers do not fit a
            leaf's rank.
    """
    routes = _routes(params, dimension_numbers, "muon_labels")
    for name, (shape, route) in routes.items():
        if route.fallback:
            _warn_fallback(name, shape)
    return jax.tree_util.tree_map_with_path(lambda path, _: routes[path_str(path)][1].label, params)


def describe_routing(params, dimension_numbers=None) -> RoutingTable:
    """The default Muon/AdamW routing of every leaf, with the rule that chose it.

    The same rules as :func:`muon_labels` (and so :func:`muon` without
    ``labels``), without warnings. ``print(describe_routing(params))`` prints
    a table; the rows are :class:`RoutingRow` records (``path``, ``shape``,
    ``label``, ``why``).

    Args:
        params: parameter tree, Linen or NNX (arrays or ``jax.ShapeDtypeStruct``).
        dimension_numbers: as for :func:`muon_labels`.

    Returns:
        A :class:`RoutingTable` (a list of :class:`RoutingRow`) in leaf order.

    Raises:
        ValueError: as :func:`muon_labels`.
    """
    routes = _routes(params, dimension_numbers, "describe_routing")
    return RoutingTable(RoutingRow(name, shape, route.label, route.why) for name, (shape, route) in routes.items())


def check_labels(labels, fn: str):
    """Raises ``ValueError`` naming the path of any label other than ``"muon"``/``"adam"``."""
    for path, value in jax.tree_util.tree_flatten_with_path(labels)[0]:
        if value not in (MUON, ADAM):
            raise ValueError(f"{fn}: label of leaf {path_str(path)!r} must be 'muon' or 'adam', got {value!r}")
    return labels
