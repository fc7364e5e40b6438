"""TARFLOW's autoregressive affine block and its inverses (the sampling direction).

One TARFLOW block acts on a sequence ``u`` (b, L, D) already put in the
block's order. A causal network gives raw outputs (b, L, 2D); shifted by one
position (position 0 gets zeros), they are the per-position log-scale ``a_i``
and shift ``m_i``, functions of ``u_{<i}`` only. The data-to-noise map is

    z_i = (u_i − m_i(u_{<i})) · exp(−a_i(u_{<i})),     log|det| = −Σ_i Σ_d a_{i,d},

and its inverse runs position by position, ``u_i = z_i · exp(a_i) + m_i``.
This module holds the block's conditioner and four ways to invert it:

* ``"cached"``: sequential, one single-token step per position, reading and
  writing a KV cache — L cheap network steps. It needs the network's *cache
  protocol* (that of :class:`~jaxlab.nn.CausalTransformer`:
  ``apply_fn(params, u, labels, return_cache=True) -> (out, cache)`` and
  ``apply_fn(params, token, labels, cache=cache, position=i) -> (out, cache)``);
  a plain ``apply_fn(params, u, labels)`` gets a ``TypeError``.
* ``"recompute"``: sequential, a full causal pass per position — the uncached
  reference (L full passes).
* ``"jacobi"``: the fixed-point iteration ``u ← z·exp(a(u)) + m(u)`` on all
  positions at once, stopped when the largest change is below ``tol``. It is
  exact after at most L iterations (after k of them positions < k are final).
* ``"gs_jacobi"``: Gauss–Seidel over ``segments`` equal segments of the
  sequence, Jacobi inside each segment.

Every inverse returns the number of network passes it made (L for the
sequential ones), so samplers can be compared. The default sampler
``"auto"`` is ``"cached"`` when the network follows the cache protocol and
``"recompute"`` (exact as well) otherwise, so any causal ``apply_fn`` with the
plain call works out of the box.

Classifier-free guidance (``guidance = w``) mixes the conditional and the
null-label raw outputs as ``r_c + w·(r_c − r_∅)`` before the shift is applied.
A Python ``0.0`` (or no labels) skips the null-label pass; any other value,
including a traced array, runs both, so one compiled sampler serves a sweep
of guidance weights.

References:
  Zhai et al. 2024, "Normalizing Flows are Capable Generative Models"
  (TARFLOW, arXiv:2412.06329), Sec. 2–3.
  Kingma et al. 2016, "Improved Variational Inference with Inverse
  Autoregressive Flow"; Papamakarios et al. 2017, "Masked Autoregressive Flow".
  Song et al. 2021, "Accelerating Feedforward Computation via Parallel
  Nonlinear Equation Solving" (Jacobi / Gauss–Seidel–Jacobi for autoregressive
  inversion); Liu et al. 2025, "Accelerate TarFlow Sampling with GS-Jacobi
  Iteration" (arXiv:2505.12849).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, cast

import jax
import jax.numpy as jnp
from jax import Array

from jaxlab.nn.causal_transformer import empty_cache

ApplyFn = Callable[..., Any]  # apply_fn(params, u (b, L, D), labels) -> (b, L, 2D); see CausalTransformer
Params = Any
Sampler = Literal["auto", "cached", "recompute", "jacobi", "gs_jacobi"]
SAMPLERS = ("auto", "cached", "recompute", "jacobi", "gs_jacobi")


def check_block_params(block_params: Any) -> None:
    """Raises unless ``block_params`` is a non-empty list or tuple of per-block parameter trees.

    Raises:
      TypeError: for a dict (e.g. one block's parameters, or the
        ``{"block_k": ...}`` tree of :class:`~jaxlab.generative.TarFlow`) or
        any other non-sequence.
      ValueError: for an empty sequence.
    """
    if isinstance(block_params, (Mapping, str, bytes)) or not isinstance(block_params, Sequence):
        hint = ""
        if isinstance(block_params, Mapping):
            keys = list(block_params)[:4]
            hint = (
                f" (a {type(block_params).__name__} with keys {keys}: pass [params] for a single block, or "
                "[params[f'block_{k}'] for k in range(num_blocks)] for a TarFlow adapter's parameters)"
            )
        raise TypeError(f"block_params must be a list or tuple of parameter trees, one per block; got {type(block_params).__name__}" + hint)
    if not block_params:
        raise ValueError("block_params must hold the parameters of at least one block; got an empty sequence")


def _cache_protocol_error(apply_fn: ApplyFn, params: Params, z: Array, labels: Array | None) -> TypeError | None:
    """None if ``apply_fn`` builds a KV cache (the ``return_cache=True`` call), else the TypeError saying why not."""
    shape = cast(tuple[int, int, int], z.shape)  # (b, L, D); another rank fails the call below with a TypeError
    try:
        jax.eval_shape(lambda p: empty_cache(apply_fn, p, *shape, labels), params)
    except TypeError as error:
        name = getattr(apply_fn, "__qualname__", type(apply_fn).__name__)
        message = (
            f"sampler='cached' needs an apply_fn with the KV-cache protocol of jaxlab.nn.CausalTransformer "
            "(apply_fn(params, u, labels, return_cache=True) -> (out, cache) and "
            "apply_fn(params, token, labels, cache=cache, position=i) -> (out, cache)); "
            f"apply_fn {name} does not ({error}). For a plain apply_fn(params, u, labels) use "
            "sampler='auto' (the default), 'recompute', 'jacobi' or 'gs_jacobi'."
        )
        return TypeError(message)
    return None


def supports_cache(apply_fn: ApplyFn, params: Params, z: Array, labels: Array | None = None) -> bool:
    """Whether ``apply_fn`` follows the cache protocol needed by ``sampler="cached"`` (checked abstractly).

    Args:
      apply_fn: the block's network.
      params: one block's parameters.
      z: (b, L, D) an array (or ShapeDtypeStruct) of the sequence's shape.
      labels: (b,) int labels or None.
    """
    return _cache_protocol_error(apply_fn, params, z, labels) is None


def order(u: Array, flip: bool) -> Array:
    """The block's sequence order: identity, or reversed along the length axis (its own inverse)."""
    return u[:, ::-1] if flip else u


def shifted_affine(raw: Array) -> tuple[Array, Array]:
    """Raw outputs (b, L, 2D) -> (log_scale, shift), each (b, L, D), moved one position later.

    Position i receives the network's output at i − 1, which saw ``u_{≤i−1}``;
    position 0 receives zeros (the identity map).
    """
    shifted = jnp.concatenate([jnp.zeros_like(raw[:, :1]), raw[:, :-1]], axis=1)
    log_scale, shift = jnp.split(shifted, 2, axis=-1)
    return log_scale, shift


def guided(raw_conditional: Array, raw_null: Array, guidance: float | Array) -> Array:
    """Classifier-free guidance on the raw outputs: ``r_c + w·(r_c − r_∅)``."""
    return raw_conditional + guidance * (raw_conditional - raw_null)


def uses_guidance(labels: Array | None, guidance: float | Array) -> bool:
    """Whether the null-label pass is needed: labels are given and w is not the Python number 0."""
    return labels is not None and not (isinstance(guidance, (int, float)) and guidance == 0)


def conditioner(apply_fn: ApplyFn, params: Params, u: Array, labels: Array | None, guidance: float | Array = 0.0) -> Array:
    """Raw outputs (b, L, 2D) of the block's network on ``u`` (b, L, D), guided when ``guidance != 0``."""
    raw = apply_fn(params, u, labels)
    if not uses_guidance(labels, guidance):
        return raw
    return guided(raw, apply_fn(params, u, None), guidance)


def block_forward(apply_fn: ApplyFn, params: Params, u: Array, labels: Array | None) -> tuple[Array, Array]:
    """Data-to-noise map of one block in its own order.

    Args:
      apply_fn: the causal network, ``(params, u, labels) -> (b, L, 2D)``.
      params: its parameters.
      u: (b, L, D) input sequence.
      labels: (b,) int labels or None.

    Returns:
      ``(z, log_det)``: z (b, L, D) and the log-determinant (b,).
    """
    log_scale, shift = shifted_affine(apply_fn(params, u, labels))
    z = (u - shift) * jnp.exp(-log_scale)
    return z, -jnp.sum(log_scale, axis=(1, 2))


def _step_inverse(z_i: Array, raw_i: Array) -> Array:
    """``u_i = z_i·exp(a_i) + m_i`` for one position; z_i (b, D), raw_i (b, 2D) already shifted."""
    log_scale, shift = jnp.split(raw_i, 2, axis=-1)
    return z_i * jnp.exp(log_scale) + shift


def invert_cached(apply_fn: ApplyFn, params: Params, z: Array, labels: Array | None, guidance: float | Array = 0.0) -> Array:
    """Sequential inverse with a KV cache: L single-token network steps. z (b, L, D) -> u (b, L, D).

    Raises:
      TypeError: if ``apply_fn`` does not follow the cache protocol (see the
        module docstring); use :func:`invert_recompute` for a plain network.
    """
    error = _cache_protocol_error(apply_fn, params, z, labels)
    if error is not None:
        raise error
    batch, length, features = z.shape
    guide = uses_guidance(labels, guidance)
    caches = {"c": empty_cache(apply_fn, params, batch, length, features, labels)}
    if guide:
        caches["u"] = empty_cache(apply_fn, params, batch, length, features, None)

    def step(carry, inputs):
        caches, raw_i = carry  # raw_i (b, 2D): the (shifted) output for this position
        position, z_i = inputs
        u_i = _step_inverse(z_i, raw_i)  # (b, D)
        out_c, cache_c = apply_fn(params, u_i[:, None], labels, cache=caches["c"], position=position)
        new_caches, out = {"c": cache_c}, out_c[:, 0]
        if guide:
            out_u, new_caches["u"] = apply_fn(params, u_i[:, None], None, cache=caches["u"], position=position)
            out = guided(out, out_u[:, 0], guidance)
        return (new_caches, out.astype(z.dtype)), u_i

    init = (caches, jnp.zeros((batch, 2 * features), z.dtype))
    _, u = jax.lax.scan(step, init, (jnp.arange(length), jnp.swapaxes(z, 0, 1)))
    return jnp.swapaxes(u, 0, 1)


def invert_recompute(apply_fn: ApplyFn, params: Params, z: Array, labels: Array | None, guidance: float | Array = 0.0) -> Array:
    """Sequential inverse without a cache: a full causal pass per position (the reference)."""

    def step(position, u):
        log_scale, shift = shifted_affine(conditioner(apply_fn, params, u, labels, guidance))
        u_i = z[:, position] * jnp.exp(log_scale[:, position]) + shift[:, position]
        return u.at[:, position].set(u_i)

    return jax.lax.fori_loop(0, z.shape[1], step, jnp.zeros_like(z))


def _jacobi_segment(apply_fn, params, z, labels, guidance, u, mask, *, tol, max_iters):
    """Jacobi iterations on the positions where ``mask`` (L,) is true; returns (u, iterations)."""
    mask = mask[None, :, None]

    def update(u):
        log_scale, shift = shifted_affine(conditioner(apply_fn, params, u, labels, guidance))
        return jnp.where(mask, z * jnp.exp(log_scale) + shift, u)

    def keep_going(state):
        _, iterations, change = state
        return (iterations < max_iters) & (change > tol)

    def body(state):
        u, iterations, _ = state
        new = update(u)
        return new, iterations + 1, jnp.max(jnp.abs(new - u))

    u, iterations, _ = jax.lax.while_loop(keep_going, body, (u, jnp.int32(0), jnp.asarray(jnp.inf, z.dtype)))
    return u, iterations


def invert_jacobi(
    apply_fn: ApplyFn,
    params: Params,
    z: Array,
    labels: Array | None,
    guidance: float | Array = 0.0,
    *,
    tol: float = 1e-5,
    max_iters: int | None = None,
    segments: int = 1,
) -> tuple[Array, Array]:
    """Parallel (Gauss–Seidel–)Jacobi inverse.

    ``segments = 1`` is plain Jacobi over the whole sequence. With
    ``segments = s`` the sequence is cut into s equal parts solved in order
    (Gauss–Seidel), each by Jacobi iterations on its own positions.

    Args:
      apply_fn, params, labels, guidance: as in :func:`conditioner`.
      z: (b, L, D) the block's output.
      tol: stop a segment when the largest absolute update is at most this.
      max_iters: cap on iterations per segment; default the segment length
        (+1 to observe convergence), which makes the result exact.
      segments: number of Gauss–Seidel segments, dividing L.

    Returns:
      ``(u, iterations)``: u (b, L, D) and the total number of network passes.
    """
    length = z.shape[1]
    if length % segments:
        raise ValueError(f"segments must divide the sequence length {length}, got {segments}")
    size = length // segments
    cap = size + 1 if max_iters is None else max_iters
    u, total = jnp.zeros_like(z), jnp.int32(0)
    positions = jnp.arange(length)
    for segment in range(segments):
        mask = (positions >= segment * size) & (positions < (segment + 1) * size)
        u, iterations = _jacobi_segment(apply_fn, params, z, labels, guidance, u, mask, tol=tol, max_iters=cap)
        total = total + iterations
    return u, total


def tarflow_inverse(
    apply_fn: ApplyFn,
    block_params: Sequence[Params],
    z: Array,
    labels: Array | None = None,
    *,
    sampler: Sampler = "auto",
    guidance: float | Array = 0.0,
    tol: float = 1e-5,
    max_iters: int | None = None,
    segments: int = 4,
) -> tuple[Array, Array]:
    """Noise-to-data map of a stack of blocks (block k reads the sequence reversed when k is odd).

    Args:
      apply_fn: the causal network shared by all blocks' parameters,
        ``apply_fn(params, u (b, L, D), labels) -> (b, L, 2D)``.
      block_params: a list or tuple of the parameters of blocks 0..K−1 (data side first).
      z: (b, L, D) noise sequence.
      labels: (b,) int labels or None.
      sampler: ``"auto"`` (``"cached"`` if ``apply_fn`` follows the cache
        protocol, else ``"recompute"``), ``"cached"`` (needs the protocol),
        ``"recompute"``, ``"jacobi"`` or ``"gs_jacobi"``.
      guidance: classifier-free guidance weight w (0 = none; may be a traced scalar).
      tol, max_iters: Jacobi stopping rule (see :func:`invert_jacobi`).
      segments: Gauss–Seidel segments for ``"gs_jacobi"``.

    Returns:
      ``(x, passes)``: x (b, L, D) and the network passes per block (K,)
      int32, in block order (L for the sequential samplers).

    Raises:
      TypeError: if ``block_params`` is not a list or tuple, or
        ``sampler="cached"`` is asked of a network without the cache protocol.
      ValueError: on an unknown sampler or a z not of rank 3.
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
    check_block_params(block_params)
    if z.ndim != 3:
        raise ValueError(f"z must have shape (batch, length, features), got {z.shape}")
    if sampler == "auto":
        sampler = "cached" if supports_cache(apply_fn, block_params[0], z, labels) else "recompute"
    x, passes = z, []
    for k in reversed(range(len(block_params))):
        zk = order(x, flip=k % 2 == 1)
        if sampler == "cached":
            u, count = invert_cached(apply_fn, block_params[k], zk, labels, guidance), jnp.int32(z.shape[1])
        elif sampler == "recompute":
            u, count = invert_recompute(apply_fn, block_params[k], zk, labels, guidance), jnp.int32(z.shape[1])
        else:
            parts = 1 if sampler == "jacobi" else segments
            u, count = invert_jacobi(apply_fn, block_params[k], zk, labels, guidance, tol=tol, max_iters=max_iters, segments=parts)
        x = order(u, flip=k % 2 == 1)
        passes.append(count)
    return x, jnp.stack(passes[::-1])
