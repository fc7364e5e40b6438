"""Hypothesis strategies for JAX arrays and pytrees of a fixed structure, drawn from a few shapes.

Every new input shape makes ``jit`` trace and compile again, so a property
test that draws shapes freely spends its time in XLA. Draw *values* freely
and shapes from a short list (:func:`few_shapes`), or fix the shape.

Requires hypothesis (the ``test`` extra: ``pip install jaxlab[test]``);
``import jaxlab.testing`` does not import it, import this module directly::

    from hypothesis import given
    from jaxlab.testing.strategies import arrays, few_shapes, pytrees

    @given(x=arrays(few_shapes((2, 8, 16), (1, 3, 16)), "bfloat16", min_value=-4, max_value=4))
    def test_layer_keeps_the_shape(x): ...

Floats are drawn without NaN, infinities or subnormals by default (XLA on
CPU flushes subnormals to zero, NumPy does not), with bounds rounded inward
to the dtype. bfloat16 values are float32 draws rounded to bfloat16.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

__all__ = ["MAX_SHAPES", "arrays", "few_shapes", "prng_keys", "pytrees"]

Shape = tuple[int, ...]
Backend = Literal["jax", "numpy"]

MAX_SHAPES = 4  # more distinct shapes than this compile more than they test
FLOAT_BOUNDS = (-1.0, 1.0)
INT_BOUNDS = (-100, 100)


def few_shapes(*shapes: Sequence[int]) -> st.SearchStrategy[Shape]:
    """A strategy drawing one of at most :data:`MAX_SHAPES` given shapes (each is one compilation).

    Args:
      *shapes: the shapes, e.g. ``few_shapes((2, 8), (1, 3))``.

    Raises:
      ValueError: with no shape, more than :data:`MAX_SHAPES`, or a negative size.
    """
    if not 1 <= len(shapes) <= MAX_SHAPES:
        raise ValueError(f"few_shapes takes 1 to {MAX_SHAPES} shapes (each one recompiles); got {len(shapes)}")
    return st.sampled_from([_check_shape(s) for s in shapes])


def arrays(
    shape: Sequence[int] | st.SearchStrategy[Shape],
    dtype: Any = np.float32,
    *,
    min_value: float | None = None,
    max_value: float | None = None,
    allow_nan: bool = False,
    allow_infinity: bool = False,
    backend: Backend = "jax",
) -> st.SearchStrategy[Any]:
    """A strategy of arrays of a fixed (or drawn) shape and dtype with bounded elements.

    Args:
      shape: a shape, or a strategy of shapes (e.g. :func:`few_shapes`).
      dtype: a floating (float16, bfloat16, float32, float64), integer,
        unsigned or bool dtype, as a dtype or its name.
      min_value: smallest element; [-1, 1] for floats and [-100, 100]
        (clipped to the dtype's range) for integers by default. Rounded
        inward to the nearest representable value.
      max_value: largest element.
      allow_nan: also draw NaN (floats only).
      allow_infinity: also draw ±inf (floats only; ignores the bounds).
      backend: ``"jax"`` for ``jax.Array`` (the default), ``"numpy"`` for ``np.ndarray``.

    Returns:
      A hypothesis strategy.

    Raises:
      ValueError: on a bad shape, an unknown backend, empty bounds, or
        a 64-bit dtype with the jax backend while ``jax_enable_x64`` is off.
    """
    dtype = np.dtype(dtype)
    if backend not in ("jax", "numpy"):
        raise ValueError(f"backend must be 'jax' or 'numpy'; got {backend!r}")
    elements, draw_dtype = _elements(dtype, min_value, max_value, allow_nan, allow_infinity)
    if backend == "jax" and dtype.itemsize == 8 and not jax.config.read("jax_enable_x64"):
        raise ValueError(f"{dtype} arrays need jax_enable_x64 with backend='jax' (use backend='numpy')")
    shapes = shape if isinstance(shape, st.SearchStrategy) else st.just(_check_shape(shape))
    convert = (lambda a: jnp.asarray(a.astype(dtype))) if backend == "jax" else (lambda a: a.astype(dtype))
    return hnp.arrays(draw_dtype, shapes, elements=elements).map(convert)


def pytrees(
    spec: Any,
    *,
    min_value: float | None = None,
    max_value: float | None = None,
    backend: Backend = "jax",
) -> st.SearchStrategy[Any]:
    """A strategy of pytrees with ``spec``'s structure whose leaves are :func:`arrays` of the leaves' shapes and dtypes.

    Args:
      spec: a pytree whose leaves have ``.shape`` and ``.dtype``:
        ``jax.ShapeDtypeStruct`` (e.g. ``jax.eval_shape(model.init, key, x)``,
        random parameters without running ``init``), arrays, or
        ``jax.ShapeDtypeStruct`` built by hand.
      min_value: element bounds of every leaf (see :func:`arrays`; integer
        leaves use the integers inside the bounds).
      max_value: see ``min_value``.
      backend: ``"jax"`` or ``"numpy"`` leaves.

    Returns:
      A hypothesis strategy of pytrees with the structure of ``spec``.
    """
    leaves, treedef = jax.tree.flatten(spec)
    for leaf in leaves:
        if not (hasattr(leaf, "shape") and hasattr(leaf, "dtype")):
            raise ValueError(f"`spec` leaves must have .shape and .dtype; got {type(leaf).__name__}")
    strategies = []
    for leaf in leaves:
        integral = not jnp.issubdtype(leaf.dtype, jnp.floating)
        low = None if min_value is None or not integral else math.ceil(min_value)
        high = None if max_value is None or not integral else math.floor(max_value)
        bounds = (low, high) if integral else (min_value, max_value)
        strategies.append(arrays(tuple(leaf.shape), leaf.dtype, min_value=bounds[0], max_value=bounds[1], backend=backend))
    return st.tuples(*strategies).map(lambda drawn: jax.tree.unflatten(treedef, list(drawn)))


def prng_keys(impl: str | None = None) -> st.SearchStrategy[jax.Array]:
    """A strategy of typed PRNG keys ``jax.random.key(seed, impl=impl)`` (seed a uint32)."""
    return st.integers(0, 2**32 - 1).map(lambda seed: jax.random.key(seed, impl=impl))


def _check_shape(shape: Sequence[int]) -> Shape:
    shape = tuple(shape)
    if not all(isinstance(n, (int, np.integer)) and n >= 0 for n in shape):
        raise ValueError(f"a shape must be a tuple of non-negative ints; got {shape!r}")
    return tuple(int(n) for n in shape)


def _elements(dtype: np.dtype, low: float | None, high: float | None, allow_nan: bool, allow_infinity: bool) -> tuple[st.SearchStrategy[Any], np.dtype]:
    """The element strategy and the dtype hypothesis draws in (float32 for bfloat16)."""
    if dtype == np.bool_:
        return st.booleans(), dtype
    if jnp.issubdtype(dtype, jnp.integer):
        info = np.iinfo(dtype)
        low = max(INT_BOUNDS[0], info.min) if low is None else low
        high = min(INT_BOUNDS[1], info.max) if high is None else high
        if not info.min <= low <= high <= info.max:
            raise ValueError(f"integer bounds [{low}, {high}] must be ordered and inside {dtype}'s range")
        return st.integers(int(low), int(high)), dtype
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"dtype must be floating, integer or bool; got {dtype}")
    low = FLOAT_BOUNDS[0] if low is None else low
    high = FLOAT_BOUNDS[1] if high is None else high
    low, high = _inward(low, dtype, up=True), _inward(high, dtype, up=False)
    if not low <= high:
        raise ValueError(f"float bounds [{low:.6g}, {high:.6g}] are empty in {dtype}")
    draw_dtype = np.dtype(np.float32) if dtype.itemsize == 2 and dtype != np.float16 else dtype  # bfloat16
    width = 8 * draw_dtype.itemsize
    floats = st.floats(
        None if allow_infinity else low,
        None if allow_infinity else high,
        allow_nan=allow_nan,
        allow_infinity=allow_infinity,
        allow_subnormal=False,
        width=width,  # type: ignore[arg-type]  # an int; hypothesis rejects widths other than 16/32/64 on draw (float8)
    )
    return floats, draw_dtype


def _inward(value: float, dtype: np.dtype, *, up: bool) -> float:
    """The nearest value of ``dtype`` at or inside the bound (rounding up a lower, down an upper bound)."""
    rounded = np.asarray(value, np.float64).astype(dtype)
    if up and float(rounded) < value:
        rounded = np.nextafter(rounded, np.asarray(np.inf, dtype))
    elif not up and float(rounded) > value:
        rounded = np.nextafter(rounded, np.asarray(-np.inf, dtype))
    return float(rounded)
