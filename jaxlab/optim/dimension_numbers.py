"""Which axes of a weight are its matrix rows (reduction) and columns (output), and the matrix view.

A Flax ``Dense`` kernel ``(fan_in, fan_out)`` is already a matrix. A ``Conv``
kernel ``(*window, in, out)`` or a ``DenseGeneral`` kernel such as an attention
projection ``(embed, heads, head_dim)`` is viewed as a matrix by flattening its
reduction axes into rows and its output axes into columns; any remaining axes
(stacked or scanned layers) are batch axes, each slice orthogonalized on its own.

References:
    Jordan, "Muon: An optimizer for hidden layers in neural networks", 2024
    (convolution filters are orthogonalized as ``(out, in * window)`` matrices).
    https://kellerjordan.github.io/posts/muon/
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable
from typing import Any

import jax

__all__ = [
    "DimensionNumbers",
    "MatrixView",
    "conv_dimension_numbers",
    "dense_general_dimension_numbers",
    "flax_dimension_numbers",
    "matrix_view",
    "path_str",
    "resolve_dimension_numbers",
]


def path_str(path) -> str:
    """``'params/Dense_0/kernel'`` for a JAX key path."""
    return jax.tree_util.keystr(tuple(path), simple=True, separator="/")


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
        red, out = self.reduction, self.output
        if ndim < 2 or not all(-ndim <= a < ndim for a in red + out):
            raise ValueError(
                f"leaf {path!r}: {self} does not match its rank {ndim} (shape {tuple(shape)}); "
                f"expected axes in [-{ndim}, {ndim}) on a leaf of rank >= 2"
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
    prod = lambda axes: math.prod(shape[a] for a in axes)  # noqa: E731
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
            f"dense_general_dimension_numbers: need num_batch_axes ({num_batch_axes}) + num_in_axes "
            f"({num_in_axes}) < ndim ({ndim}) with num_in_axes >= 1"
        )
    red = tuple(range(num_batch_axes, num_batch_axes + num_in_axes))
    return DimensionNumbers(red, tuple(range(num_batch_axes + num_in_axes, ndim)))


def _module_name(name: str) -> str:
    return re.sub(r"_\d+$", "", name).lower()


def flax_dimension_numbers(params, *, dense_general_in_axes: int = 1):
    """Dimension numbers for the ``kernel`` leaves of a Flax Linen parameter tree.

    Rules, by the name of the module owning the kernel (Flax's ``_<n>`` suffix
    removed, lower-cased): rank-2 kernels are ``(fan_in, fan_out)``; ``Conv*``
    kernels use :func:`conv_dimension_numbers`; the ``query``/``key``/``value``
    projections of ``MultiHeadDotProductAttention`` contract their first axis and
    ``out`` all but its last; other ``DenseGeneral*`` modules contract
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
        if owner in ("query", "key", "value"):
            return dense_general_dimension_numbers(ndim, num_in_axes=1)
        if owner == "out":
            return dense_general_dimension_numbers(ndim, num_in_axes=ndim - 1)
        if owner.startswith("densegeneral") and dense_general_in_axes < ndim:
            return dense_general_dimension_numbers(ndim, num_in_axes=dense_general_in_axes)
        return None

    return jax.tree_util.tree_map_with_path(rule, params)


def _is_spec_leaf(x: Any) -> bool:
    return x is None or isinstance(x, DimensionNumbers)


def resolve_dimension_numbers(spec, tree, *, fn: str) -> dict[str, DimensionNumbers | None]:
    """Per-path dimension numbers from ``None``, a tree, or a callable ``tree -> tree``.

    Paths are matched by name, so a spec computed for the full parameter tree also
    serves a masked branch of ``optax.partition``; paths absent from the spec get
    ``None``.

    Raises:
        ValueError: if the spec (or what the callable returns) holds anything other
            than ``DimensionNumbers`` or ``None``.
    """
    if spec is None:
        return {}
    if isinstance(spec, Callable) and not isinstance(spec, DimensionNumbers):
        spec = spec(tree)
    if isinstance(spec, DimensionNumbers):
        return {path_str(p): spec for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]}
    flat, _ = jax.tree_util.tree_flatten_with_path(spec, is_leaf=_is_spec_leaf)
    out = {}
    for p, value in flat:
        if not _is_spec_leaf(value):
            raise ValueError(
                f"{fn}: dimension_numbers at {path_str(p)!r} must be DimensionNumbers or None, got {value!r}"
            )
        out[path_str(p)] = value
    return out
