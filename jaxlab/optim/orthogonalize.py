"""Orthogonalize many matrix stacks at once, batching those of equal shape into one ``msign`` call.

Two layouts of the work:

* **replicated** (``sharded=False``): each group runs where XLA's partitioner
  puts it. Under an FSDP mesh it gathers every matrix (and its iterates) again
  for most Newton–Schulz matmuls: about 17 all-gathers per group, 4-11 times
  the parameter bytes per step, while splitting only part of the flops.
* **owner computes** (``sharded=True``): equal-shaped matrices are stacked to
  ``(b, m, n)``, ``b`` is padded to a multiple of the mesh size and the stack is
  split over every mesh axis along ``b``, so each device holds ``b / size``
  whole matrices and orthogonalizes only those; the results are then laid back
  out like the inputs. XLA moves each matrix about twice (one all-to-all in,
  one out under FSDP; an all-gather out for replicated inputs) and each
  device runs ``1 / size`` of the iterations (plus the padding).

Under ``Auto`` axes the input layouts are unknown while tracing, so the way
back is a hint to XLA's propagation (``shard_alike`` with a copy of the stack
in the inputs' layout, then with each input): when equal-shaped inputs of one
group are laid out differently, a result may keep the group's common layout
unless the caller's ``out_shardings`` fix it (:func:`jaxlab.train.train`'s
do). Under ``Explicit`` axes every result is resharded to its input's type.

References:
    Liu et al., "Muon is Scalable for LLM Training" (Distributed Muon), 2025.
    https://arxiv.org/abs/2502.16982

    Ahn et al., "Dion: Distributed Orthonormalized Updates" (orthonormalize on
    the device that owns the matrix), 2025. https://arxiv.org/abs/2504.05295
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental.shard_alike import shard_alike

from jaxlab.linalg import msign

__all__ = ["orthogonalize_matrices", "stack_axes"]

# On CPU, one batched call wins only for small matrices (fewer, larger ops); for
# large ones separate 2-D calls let XLA overlap independent work and run ~10 %
# faster. On accelerators batching always wins (fewer kernel launches).
_CPU_GROUP_MAX_ELEMENTS = 1 << 16


def _groupable(shape: tuple[int, ...]) -> bool:
    return jax.default_backend() != "cpu" or shape[-2] * shape[-1] <= _CPU_GROUP_MAX_ELEMENTS


def _wide(x: jax.Array) -> jax.Array:
    return jnp.swapaxes(x, -1, -2) if x.shape[-2] > x.shape[-1] else x


def _msign_stack(y: jax.Array, **kwargs) -> jax.Array:
    """msign of a ``(b, m, n)`` stack; a stack of one runs as a plain 2-D problem."""
    if y.shape[0] == 1:
        return msign(y[0], **kwargs)[None]  # batched dots of batch 1 are slower on CPU
    return msign(y, **kwargs)


def stack_axes() -> tuple[tuple[str, ...], int, bool]:
    """``(axes, size, explicit)`` of the mesh the caller is traced under (``jax.sharding.get_abstract_mesh``).

    ``axes`` are its non-manual axes (inside ``shard_map`` the manual ones are
    already split by hand), ``size`` the number of devices they span (1 without
    a mesh) and ``explicit`` whether any of them has ``AxisType.Explicit``.
    """
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return (), 1, False
    kinds = dict(zip(mesh.axis_names, mesh.axis_types, strict=True))
    axes = tuple(a for a in mesh.axis_names if kinds[a] != jax.sharding.AxisType.Manual)
    explicit = any(kinds[a] == jax.sharding.AxisType.Explicit for a in axes)
    return axes, math.prod(mesh.shape[a] for a in axes), explicit


def _wide_spec(x: jax.Array) -> tuple:
    """``x``'s explicit partition spec in the orientation of :func:`_wide`, stack axis unsplit."""
    spec = tuple(jax.typeof(x).sharding.spec)
    spec = spec + (None,) * (x.ndim - len(spec))
    return (None, spec[2], spec[1]) if x.shape[-2] > x.shape[-1] else (None, *spec[1:])


def _unsplit(x: jax.Array) -> jax.Array:
    """Pins the stack axis of ``(b, m, n)`` ``x`` unsplit under ``Auto`` axes, leaving its matrix axes to XLA.

    Else XLA's propagation spreads the stack's split onto the members and results
    (padded 8-way splits of a size-1 axis) and moves every matrix several times.
    """
    return jax.lax.with_sharding_constraint(x, jax.P(None, jax.P.UNCONSTRAINED, jax.P.UNCONSTRAINED))


def _stack(wide: list[jax.Array], size: int) -> jax.Array:
    """``(b, m, n)`` stacks concatenated and padded to a multiple of ``size`` with zero matrices (which map to zeros)."""
    x = jnp.concatenate(wide, axis=0) if len(wide) > 1 else wide[0]
    return jnp.pad(x, ((0, -x.shape[0] % size), (0, 0), (0, 0))) if x.shape[0] % size else x


def _owner_computes(mats: Sequence[jax.Array], **msign_kwargs) -> list[jax.Array]:
    """The ``sharded=True`` path: one padded, stack-sharded ``msign`` per (shape, dtype) group."""
    axes, size, explicit = stack_axes()
    buckets: dict[tuple, list[int]] = {}
    for i, x in enumerate(mats):  # by shape and dtype only: the inputs' shardings are undone by the stack constraint
        buckets.setdefault((_wide(x).shape[-2:], jnp.dtype(x.dtype)), []).append(i)
    results: dict[int, jax.Array] = {}
    for idxs in buckets.values():
        wide = [_wide(mats[i]) for i in idxs]
        b = sum(w.shape[0] for w in wide)
        if size > 1 and explicit:  # explicit types must agree to concatenate, and to slice off the padding below
            common = jax.P(*_wide_spec(mats[idxs[0]]))
            wide = [jax.sharding.reshard(w, common) for w in wide]
        elif size > 1:
            wide = [_unsplit(w) for w in wide]
        stacked = _stack(wide, size)
        if size > 1:
            spec = jax.P(axes, None, None)  # each device holds (b + pad) / size whole matrices
            if explicit:
                stacked = jax.sharding.reshard(stacked, spec)
            else:  # a second copy in the members' layout, for the results to return to in one move
                anchor = _unsplit(_stack(wide, size))
                stacked = jax.lax.with_sharding_constraint(stacked, spec)
        out = msign(stacked, **msign_kwargs) if stacked.shape[0] > 1 else _msign_stack(stacked, **msign_kwargs)
        if size > 1:  # one reshard of the whole stack (an all-to-all, or an all-gather for replicated inputs)
            out = jax.sharding.reshard(out, common) if explicit else shard_alike(_unsplit(out), anchor)[0]
        bounds = np.cumsum([w.shape[0] for w in wide])[:-1]
        for i, part in zip(idxs, jnp.split(out[:b], bounds, axis=0), strict=True):
            part = jnp.swapaxes(part, -1, -2) if mats[i].shape[-2] > mats[i].shape[-1] else part
            if size > 1:  # exactly the input's layout
                part = jax.sharding.reshard(part, jax.typeof(mats[i]).sharding.spec) if explicit else shard_alike(part, mats[i])[0]
            results[i] = part
    return [results[i] for i in range(len(mats))]


def orthogonalize_matrices(mats: Sequence[jax.Array], *, group: bool = True, sharded: bool = False, **msign_kwargs) -> list[jax.Array]:
    """``msign`` of each ``(b_i, m_i, n_i)`` stack in ``mats``.

    With ``group=True``, tall stacks are transposed to wide ones and the stacks
    that then share ``(m, n, dtype, sharding)`` are concatenated
    along the batch axis and orthogonalized by one batched call (one set of large
    matmuls instead of many small ones), then split back. On CPU only matrices of
    at most 2^16 entries are grouped (larger ones run faster as separate calls).

    With ``sharded=True`` (owner computes, see the module docstring) every
    ``(m, n, dtype)`` group is stacked whatever its size or the inputs' shardings
    (``group`` is not consulted), padded with zero matrices to a multiple of the
    size of the mesh the call is traced under (:func:`stack_axes`), split over
    all its axes along the stack axis, orthogonalized, and each result is
    constrained to its input's sharding (``shard_alike`` under ``Auto`` axes,
    a hint, see the module docstring; ``reshard`` under ``Explicit`` ones).
    Without a mesh of several devices it only groups. The values equal the
    single-device ones (bit for bit on CPU, where the per-matrix work is the
    same; the replicated layout's partial sums round differently).

    Args:
        mats: stacks of matrices, each of shape ``(b_i, m_i, n_i)``.
        group: batch equal-shaped stacks together (replicated path).
        sharded: orthogonalize each matrix on one device of the current mesh.
        **msign_kwargs: forwarded to :func:`jaxlab.linalg.msign`.

    Returns:
        The orthogonalized stacks, in order, with the input shapes.

    References:
        Liu et al., "Muon is Scalable for LLM Training", 2025; Ahn et al., "Dion", 2025.
    """
    if sharded:
        return _owner_computes(mats, **msign_kwargs)
    results: dict[int, jax.Array] = {}
    buckets: dict[tuple, list[int]] = {}
    for i, x in enumerate(mats):
        if group and _groupable(x.shape):
            key = (_wide(x).shape[-2:], jnp.dtype(x.dtype), getattr(jax.typeof(_wide(x)), "sharding", None))
            buckets.setdefault(key, []).append(i)
        else:
            results[i] = _msign_stack(x, **msign_kwargs)  # msign handles tall matrices itself
    if buckets:
        wide = {i: _wide(mats[i]) for idxs in buckets.values() for i in idxs}
        for idxs in buckets.values():
            stacked = jnp.concatenate([wide[i] for i in idxs], axis=0) if len(idxs) > 1 else wide[idxs[0]]
            out = _msign_stack(stacked, **msign_kwargs)
            bounds = np.cumsum([wide[i].shape[0] for i in idxs])[:-1]
            for i, part in zip(idxs, jnp.split(out, bounds, axis=0), strict=True):
                results[i] = jnp.swapaxes(part, -1, -2) if mats[i].shape[-2] > mats[i].shape[-1] else part
    return [results[i] for i in range(len(mats))]
