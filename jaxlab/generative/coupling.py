"""Minibatch optimal-transport coupling of data and noise, solved on the device.

Flow matching pairs each data point x0 with an independent noise draw x1, so
the straight lines between pairs cross and the marginal velocity field
averages over them: its paths curve, and its regression target is noisy.
Pairing the batch instead by the optimal assignment,

    π* = argmin_π Σ_i |x0_{π(i)} − x1_i|²   over permutations π of the batch,

keeps the marginals (every x0 and every x1 is still used once) while the
pairs approach the optimal-transport coupling as the batch grows, which
makes the paths straighter and the targets less noisy. For shortcut models
the straighter paths are what the large-step levels have to learn, and the
improved shortcut models (iSM) use such an OT coupling for that reason.

**Solver.** The assignment is solved inside the jitted step by Bertsekas'
auction algorithm with ε-scaling, written in ``jax.lax`` loops: no host
callback, so the step stays on the device and the batch keeps its sharding.
The auction was chosen over a shortest-augmenting-path method (Hungarian,
Jonker–Volgenant) because its unit of sequential work is a *round* in which
many unassigned rows bid at once with O(rows·b) vectorized work, while an
augmenting-path search advances one column per O(b) step, about b² steps in
all on the geometric costs of a minibatch — a poor fit for an accelerator's
loop overhead, and no better in lax loops on a CPU. Each round lets up to
:data:`BIDDERS` unassigned rows bid (Jacobi bidding over a fixed-size
slice), so a round's work stays O(BIDDERS·b) when only a few rows are left.
Between ε phases the pairs that still satisfy ε-complementary slackness are
kept, and the prices are warm-started. On a CPU the compiled loops are
slower than scipy's C solver (``experiments/benchmarks/coupling.py`` measures
both); what the device solve buys is a step with no host round-trip, no
cost matrix pinned to one device, and per-device groups.

**Guarantee.** The costs are quantized to integers q on a grid of
δ = (max − min) / 2²² (:data:`LEVELS`; non-finite entries count as the
largest cost), and the auction runs in exact int32 arithmetic down to ε = 1,
so it terminates and its permutation π satisfies
Σ q_{iπ(i)} ≤ min_σ Σ q_{iσ(i)} + b (Bertsekas 1988, ε-CS). In the float32
costs given, Σ_i cost[i, π(i)] ≤ optimum + 2·b·δ (rounding to the grid moves
each total by at most b·δ/2), up to the float32 rounding of the grid
(about one step per entry near the top of the range). Relative to the total
cost of a minibatch that is about 2⁻²¹ · (max − min) / mean cost, far below
the float32 noise of the distances themselves. On random costs the optimum
is usually hit exactly.

**Groups.** ``minibatch_ot_pairing(..., groups=G)`` splits the batch into G
equal consecutive groups and pairs each within itself (vmapped on
accelerators; in turn on a CPU, where lock-step loops cost the slowest
group's rounds for all). By default
G is the number of devices the batch axis is split over (the mesh in context
and the ``"batch"`` logical-axis rule, as the trainer sets them), and the
group axis carries the ``"batch"`` name, so each device builds and solves
only its own rows' (g, g) costs: no cost matrix or batch crosses devices,
only the loops' termination tests (one boolean all-reduce per round). The
auction's work grows superlinearly in the group size, so groups are cheaper
in total as well. Outside a mesh G is 1 (one assignment of the whole batch).

The permutation is discrete: no gradient flows through it.

References:
  Bertsekas 1988, "The auction algorithm: a distributed relaxation method for
  the assignment problem" (Annals of Operations Research 14); Bertsekas and
  Castañon 1991, "Parallel synchronous and asynchronous implementations of
  the auction algorithm" (Parallel Computing 17) for Jacobi bidding.
  Tong, Fatras, Malkin, Huguet, Zhang, Rector-Brooks, Wolf, Bengio 2024,
  "Improving and generalizing flow-based generative models with minibatch
  optimal transport" (TMLR; arXiv:2302.00482).
  Pooladian, Ben-Hamu, Domingo-Enrich, Amos, Lipman, Chen 2023, "Multisample
  Flow Matching" (arXiv:2304.14772).
  Nguyen, Nguyen, Vu, Dao, Tran, Tran, Tran 2025, "Improved Training
  Technique for Shortcut Models" (NeurIPS; arXiv:2510.21250).
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import Array

from jaxlab.linalg.distances import pairwise_sq_distances
from jaxlab.nn.sharding import BATCH, constrain

LEVELS = 2**22  # integer cost grid; prices stay far below int32's 2^31 (≤ phases·(LEVELS + ε) apart)
BIDDERS = 32  # unassigned rows bidding per round: more rounds at a phase start, cheap rounds in the tail
UNROLL = 4  # bid rounds per loop iteration
SCALING = 4  # ε shrinks by this factor per phase (Bertsekas suggests 4–10)
_NONE = jnp.iinfo(jnp.int32).min // 4  # "minus infinity" that int32 sums cannot overflow from


def _quantized_costs(cost: Array) -> Array:
    """``cost`` on the integer grid of :data:`LEVELS` steps from its least to its largest finite entry.

    Args:
      cost: (b, b) floating costs.

    Returns:
      (b, b) int32 in ``[0, LEVELS]``; non-finite entries map to ``LEVELS``.
    """
    cost = cost.astype(jnp.float32)
    finite = jnp.isfinite(cost)
    low = jnp.min(jnp.where(finite, cost, jnp.inf))
    span = jnp.max(jnp.where(finite, cost, -jnp.inf)) - low
    scale = jnp.where(jnp.isfinite(span) & (span > 0), LEVELS / span, 0.0)  # all-equal costs: one level
    grid = jnp.clip(jnp.round((cost - low) * scale), 0, LEVELS)
    return jnp.where(finite, grid, LEVELS).astype(jnp.int32)


def _bid_round(benefit: Array, eps: Array, state: tuple[Array, Array, Array]) -> tuple[Array, Array, Array]:
    """One Jacobi round: up to BIDDERS unassigned rows bid for their best column, each column takes its top bid."""
    prices, owner, assigned = state  # (b,) column prices, column → row (−1 free), row → column (−1 free)
    b = benefit.shape[0]
    columns = jnp.arange(b)
    who = jnp.nonzero(assigned < 0, size=min(b, BIDDERS), fill_value=b)[0]  # (k,) bidding rows, b = empty slot
    active = who < b
    values = benefit[jnp.minimum(who, b - 1)] - prices  # (k, b)
    best = jnp.argmax(values, axis=1)  # (k,)
    first = jnp.max(values, axis=1)
    second = jnp.max(jnp.where(columns == best[:, None], _NONE, values), axis=1)
    # The bid raises the price until the row is indifferent to its second choice, plus ε.
    bid = jnp.where(active, prices[best] + (first - second) + eps, _NONE)  # (k,)
    top = jnp.full(b, _NONE).at[best].max(bid)  # (b,) highest bid per column
    winner = jnp.full(b, b).at[best].min(jnp.where(active & (bid == top[best]), who, b))  # ties: lowest row
    won = winner < b
    assigned = assigned.at[jnp.where(won & (owner >= 0), owner, b)].set(-1, mode="drop")  # outbid owners
    assigned = assigned.at[jnp.where(won, winner, b)].set(columns, mode="drop")
    return jnp.where(won, top, prices), jnp.where(won, winner, owner), assigned


def _phase(benefit: Array, state: tuple[Array, Array, Array, Array]) -> tuple[Array, Array, Array, Array]:
    """One ε phase: keep the pairs that are ε-optimal, auction the rest, then shrink ε."""
    prices, owner, assigned, eps = state
    b = benefit.shape[0]
    values = benefit - prices  # (b, b)
    mine = jnp.take_along_axis(values, jnp.maximum(assigned, 0)[:, None], axis=1)[:, 0]
    keep = (assigned >= 0) & (mine >= jnp.max(values, axis=1) - eps)
    assigned = jnp.where(keep, assigned, -1)
    owner = jnp.full(b, -1).at[jnp.where(keep, assigned, b)].set(jnp.arange(b), mode="drop")
    prices = prices - jnp.min(prices)  # only price differences matter; this keeps them far from overflow

    def rounds(state: tuple[Array, Array, Array]) -> tuple[Array, Array, Array]:
        # Several rounds per loop test: a round without free rows changes nothing, and each test costs a reduction (and a sync on GPUs).
        for _ in range(UNROLL):
            state = _bid_round(benefit, eps, state)
        return state

    prices, owner, assigned = jax.lax.while_loop(lambda s: jnp.any(s[2] < 0), rounds, (prices, owner, assigned))
    return prices, owner, assigned, eps // SCALING


def _auction(cost: Array) -> Array:
    """(b,) int32 row → column permutation of a (b, b) cost matrix, within 2·b·δ of optimal (module docstring)."""
    b = cost.shape[0]
    if b == 1:
        return jnp.zeros((1,), jnp.int32)
    benefit = -_quantized_costs(cost)  # (b, b) the auction maximizes
    start = (jnp.zeros(b, jnp.int32), jnp.full(b, -1), jnp.full(b, -1), jnp.int32(LEVELS // SCALING))
    _, _, assigned, _ = jax.lax.while_loop(lambda s: s[3] >= 1, lambda s: _phase(benefit, s), start)
    return assigned.astype(jnp.int32)


def _check_cost(cost: Array) -> None:
    if not hasattr(cost, "ndim") or cost.ndim != 2 or cost.shape[0] != cost.shape[1]:
        raise ValueError(f"cost must be a square (b, b) matrix, got shape {getattr(cost, 'shape', type(cost).__name__)}")
    if cost.shape[0] == 0:
        raise ValueError("cost must have at least one row, got shape (0, 0)")
    if not jnp.issubdtype(cost.dtype, jnp.floating):
        raise ValueError(f"cost must be floating, got dtype {cost.dtype}")


def optimal_assignment(cost: Array) -> Array:
    """The permutation minimizing ``Σ_i cost[i, perm[i]]``, solved on the device (jittable).

    Bertsekas' ε-scaling auction on costs quantized to :data:`LEVELS` steps:
    the total is within ``2·b·(max − min)/LEVELS`` of the optimum (see the
    module docstring). No gradient flows through the permutation.

    Args:
      cost: (b, b) floating cost matrix.

    Returns:
      (b,) int32 permutation: row i is matched to column ``perm[i]``.

    Raises:
      ValueError: if ``cost`` is not a non-empty square floating matrix.
    """
    _check_cost(cost)
    return _auction(jax.lax.stop_gradient(cost))


def _batch_mesh_axes() -> tuple[str, ...]:
    """The mesh axes the ``"batch"`` logical axis is split over in the context being traced (``()`` if none).

    They come from the abstract mesh in context and the active Flax
    logical-axis rules (as :func:`jaxlab.train.train` traces its step);
    axes already split by hand (``shard_map``'s manual axes) do not count.
    """
    mesh = jax.sharding.get_abstract_mesh()
    rules = nn.get_logical_axis_rules()
    if mesh.empty or not rules:
        return ()
    spec = nn.logical_to_mesh_axes((BATCH,), rules)
    entry = None if spec is None else spec[0]
    axes = (entry,) if isinstance(entry, str) else tuple(entry or ())
    kinds = dict(zip(mesh.axis_names, mesh.axis_types, strict=True))
    return tuple(a for a in axes if a in kinds and kinds[a] != jax.sharding.AxisType.Manual)


def _resolve_groups(b: int, groups: int | None) -> tuple[int, bool]:
    """``(groups, whether to lay them along the batch's mesh axes)``: only when they split evenly over those axes."""
    axes = _batch_mesh_axes()
    ways = math.prod(jax.sharding.get_abstract_mesh().shape[a] for a in axes) if axes else 1
    if groups is None:
        groups = ways if b % ways == 0 else 1
    elif isinstance(groups, bool) or not isinstance(groups, int) or groups < 1 or b % groups:
        raise ValueError(f"groups must be a positive integer dividing the batch size {b}, got {groups!r}")
    return groups, ways > 1 and groups % ways == 0


def _pair_groups(x0: Array, x1: Array, split: bool) -> Array:
    """(G, g) within-group permutations of (G, g, f) data and noise."""
    cost = jax.lax.stop_gradient(jax.vmap(pairwise_sq_distances)(x1, x0))  # (G, g, g): noise i, data j
    if split or cost.shape[0] == 1:
        return jax.vmap(_auction)(cost)  # a split group axis must stay a batch axis for XLA to partition it
    # A vmapped loop runs every group for as many rounds as the slowest one needs: a CPU does better in turn.
    return jax.lax.platform_dependent(cost, cpu=lambda c: jax.lax.map(_auction, c), default=jax.vmap(_auction))


def minibatch_ot_pairing(x0: Array, x1: Array, *, groups: int | None = None) -> Array:
    """The permutation of ``x0`` that pairs it with ``x1`` at least total squared distance.

    Args:
      x0: ``(b, *features)`` data.
      x1: ``(b, *features)`` noise.
      groups: split the batch into this many equal consecutive groups and pair
        each within itself. ``None``: the number of devices the batch is split
        over (the mesh and logical-axis rules in context), each device solving
        its own rows; 1 outside a mesh.

    Returns:
      (b,) int32 permutation ``perm``; ``x0[perm][i]`` is the data point paired
      with ``x1[i]``, and ``perm`` maps each group onto itself.

    Raises:
      ValueError: if the shapes differ or are not ``(b, *features)``, or if
        ``groups`` does not divide ``b``.
    """
    if x0.ndim < 2 or x0.shape != x1.shape:
        raise ValueError(f"x0 and x1 must have one shape (b, *features), got {x0.shape} and {x1.shape}")
    b = x0.shape[0]
    groups, split = _resolve_groups(b, groups)
    size = b // groups
    x0 = x0.reshape(groups, size, -1).astype(jnp.float32)  # (G, g, f)
    x1 = x1.reshape(groups, size, -1).astype(jnp.float32)
    if split:
        # The group axis follows the batch's split: each device builds and solves only its own groups' costs.
        x0, x1 = constrain(x0, (BATCH, None, None)), constrain(x1, (BATCH, None, None))
    local = _pair_groups(x0, x1, split)  # (G, g)
    if split:
        local = constrain(local, (BATCH, None))
    offsets = size * jnp.arange(groups, dtype=jnp.int32)[:, None]  # (G, 1) first row of each group
    return (local + offsets).reshape(b)
