"""Which axes of a weight are its matrix rows (reduction) and columns (output), and the matrix view.

A Flax ``Dense`` kernel ``(fan_in, fan_out)`` is already a matrix. A ``Conv``
kernel ``(*window, in, out)`` or a ``DenseGeneral`` kernel such as an attention
projection ``(embed, heads, head_dim)`` is viewed as a matrix by flattening its
reduction axes into rows and its output axes into columns; any remaining axes
(stacked or scanned layers) are batch axes, each slice orthogonalized on its own.

Leaves are named by :func:`path_str`, which drops the ``value`` attribute of a
Flax NNX ``Variable``: ``nnx.Optimizer`` initializes on ``Variable`` leaves and
updates on plain arrays, and both must get the same names.

References:
    Jordan, "Muon: An optimizer for hidden layers in neural networks", 2024
    (convolution filters are orthogonalized as ``(out, in * window)`` matrices).
    https://kellerjordan.github.io/posts/muon/
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, cast

import jax

__all__ = [
    "DimensionNumbers",
    "MatrixView",
    "attention_dimension_numbers",
    "attention_layout",
    "conv_dimension_numbers",
    "dense_general_dimension_numbers",
    "flax_dimension_numbers",
    "matrix_view",
    "path_str",
    "resolve_dimension_numbers",
]


def path_str(path) -> str:
    """``'params/Dense_0/kernel'`` for a JAX key path.

    An attribute key ``value`` (how an NNX ``Variable`` exposes its array) is
    dropped, so ``layer/kernel/value`` in an ``nnx.State`` of ``Variable`` leaves and
    ``layer/kernel`` in its pure-array form (what ``nnx.Optimizer.update``
    passes) get the same name. Dict keys named ``value`` (a Linen attention's
    ``value`` projection) are kept.
    """
    keys = tuple(k for k in path if not (isinstance(k, jax.tree_util.GetAttrKey) and k.name == "value"))
    return jax.tree_util.keystr(keys, simple=True, separator="/")


def _axes(value, field: str) -> tuple[int, ...]:
    axes = (value,) if isinstance(value, int) else tuple(value)
    if not axes or not all(isinstance(a, int) and not isinstance(a, bool) for a in axes):
        raise ValueError(f"DimensionNumbers: {field} must be an int or a non-empty tuple of ints, got {value!r}")
    return axes


@dataclasses.dataclass(frozen=True)
class DimensionNumbers:
    """Reduction (matrix row) and output (matrix column) axes of a weight.

    Hashable and a pytree *leaf*, so a tree of ``DimensionNumbers`` (with ``None``
    for "no spec") can mirror a parameter tree. Negative axes count from the end.

    Attributes:
        reduction: axis or axes contracted with the layer input (rows, ``fan_in``).
        output: axis or axes producing the layer output (columns, ``fan_out``).
    """

    reduction: int | tuple[int, ...] = 0
    output: int | tuple[int, ...] = 1

    def __post_init__(self):
        object.__setattr__(self, "reduction", _axes(self.reduction, "reduction"))
        object.__setattr__(self, "output", _axes(self.output, "output"))

    def normalize(self, shape: tuple[int, ...], path: str) -> tuple[tuple[int, ...], ...]:
        """Returns ``(batch_axes, reduction_axes, output_axes)`` as non-negative axes.

        Raises:
            ValueError: naming ``path`` if the axes do not fit a leaf of this shape.
        """
        ndim = len(shape)
        # __post_init__ stores both as tuples
        red, out = cast(tuple[int, ...], self.reduction), cast(tuple[int, ...], self.output)
        if ndim < 2 or not all(-ndim <= a < ndim for a in red + out):
            raise ValueError(
                f"leaf {path!r}: {self} does not match its rank {ndim} (shape {tuple(shape)}); expected axes in [-{ndim}, {ndim}) on a leaf of rank >= 2"
            )
        red = tuple(a % ndim for a in red)
        out = tuple(a % ndim for a in out)
        if len(set(red + out)) != len(red) + len(out):
            raise ValueError(f"leaf {path!r}: {self} repeats an axis for shape {tuple(shape)}")
        batch = tuple(a for a in range(ndim) if a not in red + out)
        return batch, red, out


@dataclasses.dataclass(frozen=True)
class MatrixView:
    """Maps a leaf to a stack of matrices ``(batch, fan_in, fan_out)`` and back."""

    perm: tuple[int, ...]
    permuted_shape: tuple[int, ...]
    batch: int
    fan_in: int
    fan_out: int

    def to_matrices(self, x: jax.Array) -> jax.Array:
        return x.transpose(self.perm).reshape(self.batch, self.fan_in, self.fan_out)

    def from_matrices(self, y: jax.Array) -> jax.Array:
        inverse = tuple(sorted(range(len(self.perm)), key=self.perm.__getitem__))
        return y.reshape(self.permuted_shape).transpose(inverse)


def matrix_view(shape: tuple[int, ...], dims: DimensionNumbers | None, path: str) -> MatrixView:
    """The matrix view of a leaf; ``dims=None`` means a plain ``(fan_in, fan_out)`` matrix.

    Raises:
        ValueError: naming ``path`` for a leaf of rank < 2, a leaf of rank > 2
            without dimension numbers, or dimension numbers of the wrong rank.
    """
    shape = tuple(shape)
    if dims is None:
        if len(shape) != 2:
            raise ValueError(
                f"leaf {path!r} of shape {shape} was routed to Muon, which needs a rank-2 leaf or "
                "DimensionNumbers for rank > 2; route it to AdamW (see muon_labels) or pass dimension_numbers"
            )
        dims = DimensionNumbers()
    batch, red, out = dims.normalize(shape, path)
    perm = batch + red + out
    prod = lambda axes: math.prod(shape[a] for a in axes)
    return MatrixView(perm, tuple(shape[a] for a in perm), prod(batch), prod(red), prod(out))


def conv_dimension_numbers(ndim: int) -> DimensionNumbers:
    """Flax ``Conv`` kernel ``(*window, in_features // groups, out_features)``: all but the last axis are rows."""
    if ndim < 2:
        raise ValueError(f"conv_dimension_numbers: expected a kernel rank >= 2, got {ndim}")
    return DimensionNumbers(tuple(range(ndim - 1)), (ndim - 1,))


def dense_general_dimension_numbers(ndim: int, *, num_in_axes: int = 1, num_batch_axes: int = 0) -> DimensionNumbers:
    """Flax ``DenseGeneral`` kernel ``(*batch_dims, *in_axes, *features)``.

    Args:
        ndim: rank of the kernel.
        num_in_axes: number of contracted input axes (``len(axis)`` of the module).
        num_batch_axes: number of leading ``batch_dims`` axes (kept as batch).

    Returns:
        The dimension numbers; the remaining trailing axes are the output features.
    """
    if num_in_axes < 1 or num_batch_axes < 0 or num_batch_axes + num_in_axes >= ndim:
        raise ValueError(
            f"dense_general_dimension_numbers: need num_batch_axes ({num_batch_axes}) + num_in_axes ({num_in_axes}) < ndim ({ndim}) with num_in_axes >= 1"
        )
    red = tuple(range(num_batch_axes, num_batch_axes + num_in_axes))
    return DimensionNumbers(red, tuple(range(num_batch_axes + num_in_axes, ndim)))


def _module_name(name: str) -> str:
    return re.sub(r"_\d+$", "", name).lower()


_ATTENTION_LAYOUTS = {
    "query": ("(in, heads, head_dim)", DimensionNumbers(0, (1, 2))),
    "key": ("(in, heads, head_dim)", DimensionNumbers(0, (1, 2))),
    "value": ("(in, heads, head_dim)", DimensionNumbers(0, (1, 2))),
    "out": ("(heads, head_dim, out)", DimensionNumbers((0, 1), 2)),
}


def attention_layout(path: str, shape) -> tuple[DimensionNumbers, str] | None:
    """The known layout of a Flax attention projection kernel, or ``None``.

    Linen ``MultiHeadDotProductAttention`` and NNX ``MultiHeadAttention`` keep
    rank-3 ``kernel`` leaves under sub-modules named ``query``, ``key`` and
    ``value`` ``(in, heads, head_dim)``, viewed as ``(in, heads * head_dim)``
    matrices, and ``out`` ``(heads, head_dim, out)``, viewed as
    ``(heads * head_dim, out)``.

    Args:
        path: ``'/'``-separated leaf path (see :func:`path_str`).
        shape: the leaf's shape.

    Returns:
        ``(dimension_numbers, description)`` for such a kernel, else ``None``.
    """
    names = [_module_name(n) for n in path.split("/")]
    if len(shape) != 3 or len(names) < 2 or names[-1] != "kernel" or names[-2] not in _ATTENTION_LAYOUTS:
        return None
    layout, dims = _ATTENTION_LAYOUTS[names[-2]]
    return dims, f"Flax attention {names[-2]} kernel {layout}"


def attention_dimension_numbers(params):
    """Dimension numbers for Flax attention projection kernels only (see :func:`attention_layout`).

    This is what :func:`jaxlab.optim.muon`, :func:`jaxlab.optim.muon_labels` and
    :func:`jaxlab.optim.scale_by_muon` use when ``dimension_numbers`` is ``None``;
    every other leaf gets ``None`` (rank-2 leaves are matrices as they are).

    Args:
        params: a parameter (or update) tree, Linen or NNX.

    Returns:
        A tree of the structure of ``params`` with ``DimensionNumbers`` or ``None``.
    """

    def rule(path, leaf):
        found = attention_layout(path_str(path), tuple(getattr(leaf, "shape", ())))
        return None if found is None else found[0]

    return jax.tree_util.tree_map_with_path(rule, params)


def flax_dimension_numbers(params, *, dense_general_in_axes: int = 1):
    """Dimension numbers for the ``kernel`` leaves of a Flax (Linen or NNX) parameter tree.

    Rules, by the name of the module owning the kernel (Flax's ``_<n>`` suffix
    removed, lower-cased): rank-2 kernels are ``(fan_in, fan_out)``; ``Conv*``
    kernels use :func:`conv_dimension_numbers`; rank-3 ``query``/``key``/``value``
    and ``out`` projections of an attention layer follow :func:`attention_layout`
    (other ranks: ``query``/``key``/``value`` contract their first axis, ``out``
    all but its last); other ``DenseGeneral*`` modules contract
    ``dense_general_in_axes`` leading axes. Every other leaf gets ``None``
    (stacked/scanned layers need an explicit tree: their layer axis is a batch
    axis that names cannot reveal).

    Args:
        params: a parameter (or update) tree; masked subtrees are passed through.
        dense_general_in_axes: input axes of kernels owned by ``DenseGeneral*``.

    Returns:
        A tree of the structure of ``params`` with ``DimensionNumbers`` or ``None``.
    """

    def rule(path, leaf):
        names = [_module_name(n) for n in path_str(path).split("/")]
        ndim = getattr(leaf, "ndim", 0)
        if names[-1] != "kernel" or ndim < 2:
            return None
        owner = names[-2] if len(names) > 1 else ""
        if ndim == 2:
            return DimensionNumbers()
        if owner.startswith("conv") and owner != "convlocal":
            return conv_dimension_numbers(ndim)
        attention = attention_layout(path_str(path), leaf.shape)
        if attention is not None:
            return attention[0]
        if owner in ("query", "key", "value"):
            return dense_general_dimension_numbers(ndim, num_in_axes=1)
        if owner == "out":
            return dense_general_dimension_numbers(ndim, num_in_axes=ndim - 1)
        if owner.startswith("densegeneral") and dense_general_in_axes < ndim:
            return dense_general_dimension_numbers(ndim, num_in_axes=dense_general_in_axes)
        return None

    return jax.tree_util.tree_map_with_path(rule, params)


def _is_optax_spec(x: Any) -> bool:
    """``optax.contrib.MuonDimensionNumbers`` (a NamedTuple, so it must be stopped at when flattening)."""
    return isinstance(x, tuple) and getattr(x, "_fields", None) == ("reduction_axis", "output_axis")


def _is_spec_leaf(x: Any) -> bool:
    return x is None or isinstance(x, DimensionNumbers) or _is_optax_spec(x)


def resolve_dimension_numbers(spec, tree, *, fn: str) -> dict[str, DimensionNumbers | None]:
    """Per-path dimension numbers from ``None``, a tree, or a callable ``tree -> tree``.

    Paths are matched by name, so a spec computed for the full parameter tree also
    serves a masked branch of ``optax.partition``; paths absent from the spec get
    ``None``. ``spec=None`` means :func:`attention_dimension_numbers`.
    ``optax.contrib.MuonDimensionNumbers`` leaves are accepted and converted.

    Raises:
        ValueError: if the spec (or what the callable returns) holds anything other
            than ``DimensionNumbers`` or ``None``.
    """
    if spec is None:
        spec = attention_dimension_numbers
    if callable(spec) and not isinstance(spec, DimensionNumbers):
        spec = spec(tree)
    if _is_optax_spec(spec):
        spec = DimensionNumbers(spec.reduction_axis, spec.output_axis)
    if isinstance(spec, DimensionNumbers):
        return {path_str(p): spec for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]}
    flat, _ = jax.tree_util.tree_flatten_with_path(spec, is_leaf=_is_spec_leaf)
    out = {}
    for p, value in flat:
        if not _is_spec_leaf(value):
            raise ValueError(f"{fn}: dimension_numbers at {path_str(p)!r} must be DimensionNumbers or None, got {value!r}")
        out[path_str(p)] = DimensionNumbers(value.reduction_axis, value.output_axis) if _is_optax_spec(value) else value
    return out
