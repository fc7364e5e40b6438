"""A causality check: perturbing later positions must leave earlier outputs unchanged.

A causal sequence map f (autoregressive attention, a causal convolution, a
recurrent scan) satisfies: output position i depends on input positions
≤ i only. :func:`assert_causal` tests exactly that, with no knowledge of
how f is built: for each checked i it replaces the input at positions > i
by different values and compares outputs at positions ≤ i. It catches an
off-by-one mask (a query seeing its successor), a bidirectional layer left
in a causal stack, padding or normalization that mixes across time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from numpy.typing import ArrayLike

__all__ = ["assert_causal"]

Perturb = Callable[[np.random.Generator, np.ndarray], np.ndarray]


def assert_causal(
    fn: Callable[[Any], Any],
    x: ArrayLike,
    *,
    axis: int = 1,
    out_axis: int | None = None,
    positions: int | Sequence[int] | None = None,
    perturb: Perturb | None = None,
    rtol: float = 1e-5,
    atol: float = 1e-6,
    seed: int = 0,
    jit: bool = True,
) -> None:
    """Asserts that ``fn(x)`` at positions ≤ i does not change when ``x`` at positions > i does.

    Args:
      fn: a function of one array returning an array or a pytree of arrays
        that all carry the sequence on ``out_axis`` (``None`` leaves are
        ignored). Close over parameters: ``lambda x: layer.apply(params, x)[0]``.
      x: the input, e.g. (b, t, d) features or (b, t) integer tokens.
      axis: the sequence axis of ``x``.
      out_axis: the sequence axis of the outputs (``axis`` by default).
      positions: which i to check: ``None`` for every i in [0, t − 2] (one
        call of ``fn`` each), an int n for n of them drawn at random (always
        including 0 and t − 2), or an explicit sequence.
      perturb: ``perturb(rng, later) -> replacement`` for the slice of ``x``
        after i (a NumPy array, same shape and dtype). By default floats get
        ``later + N(0, 1)·max(1, std(x))`` and integers a different value
        in [min(x), max(x)] — pass your own for tokens from a vocabulary.
      rtol: relative tolerance of the comparison (0 for bitwise equality).
      atol: absolute tolerance of the comparison.
      seed: seed of the positions drawn and of the perturbations.
      jit: ``jax.jit`` ``fn`` first (one compilation for all the calls).

    Raises:
      AssertionError: naming the first i, the output leaf and the largest
        change, when an output at positions ≤ i changed.
      ValueError: on a bad axis, fewer than two positions, or an integer ``x``
        whose values are all equal (nothing to perturb to) without ``perturb``.
    """
    x = np.asarray(x)
    if not -x.ndim <= axis < x.ndim:
        raise ValueError(f"`axis` {axis} is out of range for x of shape {x.shape}")
    axis %= x.ndim
    out_axis = axis if out_axis is None else out_axis
    t = x.shape[axis]
    if t < 2:
        raise ValueError(f"x needs at least 2 positions along axis {axis}; got shape {x.shape}")
    rng = np.random.default_rng(seed)
    checked = _positions(positions, t, rng)
    perturb = _default_perturb(x) if perturb is None else perturb
    call = jax.jit(fn) if jit else fn
    reference = _leaves(call(x))
    for i in checked:
        later = [slice(None)] * x.ndim
        later[axis] = slice(i + 1, None)
        changed = x.copy()
        replacement = np.asarray(perturb(rng, x[tuple(later)]))
        if replacement.shape != changed[tuple(later)].shape:
            raise ValueError(f"`perturb` must keep the shape {changed[tuple(later)].shape}; got {replacement.shape}")
        changed[tuple(later)] = replacement
        for (path, before), (_, after) in zip(reference, _leaves(call(changed))):
            earlier = [slice(None)] * before.ndim
            earlier[out_axis] = slice(0, i + 1)
            a, b = after[tuple(earlier)], before[tuple(earlier)]
            if not np.allclose(a, b, rtol=rtol, atol=atol, equal_nan=True):
                diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
                where = np.unravel_index(np.nanargmax(diff), diff.shape)
                raise AssertionError(
                    f"not causal: perturbing input positions > {i} (axis {axis}) changed output{path} at positions "
                    f"<= {i} (axis {out_axis}); max change {np.nanmax(diff):.3e} at index {tuple(map(int, where))} "
                    f"(rtol={rtol}, atol={atol})"
                )


def _positions(positions: int | Sequence[int] | None, t: int, rng: np.random.Generator) -> list[int]:
    if positions is None:
        return list(range(t - 1))
    if isinstance(positions, (int, np.integer)):
        if positions < 1:
            raise ValueError(f"`positions` as a count must be >= 1; got {positions}")
        inner = rng.permutation(np.arange(1, t - 2))[: max(int(positions) - 2, 0)]
        return sorted({0, t - 2, *map(int, inner)})
    checked = sorted({int(i) for i in positions})
    if not all(0 <= i <= t - 2 for i in checked):
        raise ValueError(f"`positions` must lie in [0, {t - 2}] (position t - 1 has no later ones); got {checked}")
    return checked


def _default_perturb(x: np.ndarray) -> Perturb:
    if np.issubdtype(x.dtype, np.integer):
        low, high = int(x.min()), int(x.max())
        if low == high:
            raise ValueError("integer x has a single value: pass `perturb` to say which values may replace it")

        def integers(rng: np.random.Generator, later: np.ndarray) -> np.ndarray:
            shift = rng.integers(1, high - low + 1, size=later.shape)  # never 0: every entry changes
            return ((later.astype(np.int64) - low + shift) % (high - low + 1) + low).astype(x.dtype)

        return integers
    if not np.issubdtype(x.dtype, np.floating) and x.dtype.kind != "V":  # "V": bfloat16 and other ml_dtypes
        raise ValueError(f"x must be floating or integer for the default perturbation; got {x.dtype}")
    scale = max(1.0, float(np.std(x.astype(np.float64))))

    def floats(rng: np.random.Generator, later: np.ndarray) -> np.ndarray:
        return (later.astype(np.float64) + scale * rng.standard_normal(later.shape)).astype(x.dtype)

    return floats


def _leaves(tree: Any) -> list[tuple[str, np.ndarray]]:
    with_path, _ = jax.tree_util.tree_flatten_with_path(tree)
    leaves = [(jax.tree_util.keystr(path), np.asarray(leaf)) for path, leaf in with_path]
    return [(path, leaf.astype(np.float32) if leaf.dtype.kind == "V" else leaf) for path, leaf in leaves]  # bfloat16
