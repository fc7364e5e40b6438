"""Muon: momentum orthogonalized by a matrix-sign iteration, as optax transforms.

``scale_by_muon`` keeps an EMA of the gradients (Nesterov by default), replaces
each matrix by the approximate polar factor of its momentum
(:func:`jaxlab.linalg.msign`) and rescales by a shape factor. ``muon`` adds
decoupled weight decay and the learning rate, and routes every leaf that is not
a hidden matrix to AdamW.

Other implementations' updates are reproduced by options: Keller Jordan's
Muon is ``coeffs="keller", normalize="frobenius", normalize_eps=1e-7`` (he
iterates in bfloat16; ``compute_dtype="bfloat16"`` is the closest, with float32
accumulation); ``optax.contrib.muon``'s defaults are the same with
``normalize_eps=1e-8, bias_correction=True`` (tested against it). :func:`muon`
also accepts ``optax.contrib.muon``'s argument names (see its table).

Under a mesh of several devices (``jax.sharding.get_abstract_mesh()``, as
:func:`jaxlab.train.train` traces its step) the matrices are orthogonalized as
in Distributed Muon (Liu et al. 2025) and Dion (Ahn et al. 2025): stacked by
shape, split whole over the devices, each device running Newton–Schulz on its
share only, and laid back out like the parameters (``sharded``, see
:func:`jaxlab.optim.orthogonalize.orthogonalize_matrices`).

References:
    Jordan, "Muon: An optimizer for hidden layers in neural networks", 2024.
    https://kellerjordan.github.io/posts/muon/

    Liu et al., "Muon is Scalable for LLM Training" (Moonlight), 2025.
    https://arxiv.org/abs/2502.16982

    Ahn et al., "Dion: Distributed Orthonormalized Updates", 2025.
    https://arxiv.org/abs/2504.05295

    Amsel et al., "The Polar Express: Optimal Matrix Sign Methods and Their
    Application to the Muon Algorithm", 2025. https://arxiv.org/abs/2505.16932
"""

from __future__ import annotations

import inspect
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxlab._checks import check_choice, check_scalar, check_steps
from jaxlab.linalg.polar_coeffs import coefficient_table
from jaxlab.optim._optax_names import resolve_optax_names
from jaxlab.optim.dimension_numbers import matrix_view, path_str, resolve_dimension_numbers
from jaxlab.optim.labels import ADAM, MUON, check_labels, muon_labels
from jaxlab.optim.orthogonalize import orthogonalize_matrices, stack_axes
from jaxlab.optim.spectral_decay import spectral_decay

__all__ = ["MuonState", "muon", "scale_by_muon", "shape_scale"]

_DEFAULT_STEPS = 5
_SHAPE_SCALINGS = ("keller", "moonlight", "none")
_NORMALIZATIONS = ("power", "frobenius")


class MuonState(NamedTuple):
    """State of :func:`scale_by_muon`: the momentum (EMA of gradients) and the step count."""

    mu: optax.Updates
    count: jax.Array  # type: ignore[assignment]  # shadows tuple.count as optax's states do; int32 scalar, number of updates so far (for bias_correction)


def shape_scale(fan_in: int, fan_out: int, shape_scaling: str, update_rms=0.2):
    """Per-matrix factor applied to the orthogonalized update.

    ``"keller"``: ``sqrt(max(1, fan_out / fan_in))`` (Jordan 2024);
    ``"moonlight"``: ``update_rms * sqrt(max(fan_in, fan_out))``, which gives a
    full-rank update the RMS ``update_rms``, matching AdamW's (Liu et al. 2025);
    ``"none"``: 1.
    """
    if shape_scaling == "keller":
        return max(1.0, fan_out / fan_in) ** 0.5
    if shape_scaling == "moonlight":
        return update_rms * max(fan_in, fan_out) ** 0.5
    return 1.0


def scale_by_muon(
    *,
    beta=0.95,
    nesterov: bool = True,
    steps: int | None = None,
    coeffs="polar_express_jaxlab",
    normalize: str = "power",
    normalize_eps=1e-7,
    bias_correction: bool = False,
    shape_scaling: str = "keller",
    update_rms=0.2,
    dimension_numbers=None,
    mu_dtype=None,
    compute_dtype=None,
    group_shapes: bool = True,
    sharded: bool | None = None,
) -> optax.GradientTransformationExtraArgs:
    """Momentum, orthogonalization by ``msign`` and shape scaling (no learning rate).

    ``mu <- beta mu + (1 - beta) g``; the direction is ``beta mu + (1 - beta) g``
    with Nesterov, else ``mu``; its matrix view (see ``dimension_numbers``) is
    replaced by ``msign`` and multiplied by :func:`shape_scale`. ``msign`` is
    scale invariant, so bias correction is off by default; with
    ``bias_correction`` the direction is, as in ``optax.contrib.muon``,
    ``beta mu / (1 - beta^(t+1)) + (1 - beta) g / (1 - beta^t)`` (Nesterov) or
    ``mu / (1 - beta^t)`` at step ``t``, which changes the mix of ``mu`` and
    ``g`` over the first steps.

    Every leaf must be a matrix or have dimension numbers; route the others with
    :func:`muon` (or ``optax.partition``). Equal-shaped matrices (after putting
    the short side first) are orthogonalized in one batched call.

    Args:
        beta: momentum EMA decay (scalar or injected).
        nesterov: use the Nesterov direction.
        steps: ``msign`` iterations (``None`` → 5). Keep it a Python int under
            ``optax.inject_hyperparams`` (``static_args=("steps",)``) for the fast
            unrolled path; an injected value falls back to a ``fori_loop``.
        coeffs: ``"polar_express_jaxlab"`` (alias ``"polar_express"``),
            ``"polar_express_paper"``, ``"keller"``, or a ``(3,)``/``(k, 3)``
            table (see :mod:`jaxlab.linalg.polar_coeffs`).
        normalize: how ``msign`` scales each matrix before iterating:
            ``"power"`` (a tight power-iteration bound on ``sigma_1``, fewest
            wasted steps) or ``"frobenius"`` (``X / (|X|_F + normalize_eps)``,
            Keller Jordan's and optax's choice). A string, so static under
            ``optax.inject_hyperparams``.
        normalize_eps: added to ``|X|_F`` by ``"frobenius"`` (Keller: ``1e-7``,
            optax: ``1e-8``); ignored by ``"power"``. May be injected.
        bias_correction: divide the momentum and gradient terms by
            ``1 - beta^t`` as ``optax.contrib.muon`` does (static).
        shape_scaling: ``"keller"``, ``"moonlight"`` or ``"none"``.
        update_rms: target update RMS for ``"moonlight"``.
        dimension_numbers: ``None`` (rank-2 leaves, and Flax attention kernels by
            their layout: :func:`jaxlab.optim.attention_dimension_numbers`), a tree
            of ``DimensionNumbers``/``None`` or a callable ``updates -> tree``
            (called on the possibly masked update tree).
        mu_dtype: dtype of the momentum (``None``: the gradient's).
        compute_dtype: ``msign`` matmul operand dtype, e.g. ``"bfloat16"`` (float32
            accumulation). ``None`` is :func:`jaxlab.linalg.msign`'s default:
            float32 on CPU, bfloat16 operands with float32 accumulation on
            GPU/TPU (float64 momentum stays float64).
        group_shapes: batch equal-shaped matrices into one ``msign`` call (on CPU
            only small ones, see :func:`jaxlab.optim.orthogonalize.orthogonalize_matrices`).
            Not consulted when ``sharded``.
        sharded: distributed Muon ("owner computes"): stack the equal-shaped
            matrices (after putting the short side first; a leaf with batch
            dimension numbers counts as several matrices), split each stack over
            all axes of the mesh the update is traced under so that every device
            orthogonalizes ``1 / size`` of the matrices whole, and lay each result
            out like its input: about two all-to-alls of the matrices per step
            instead of an all-gather per Newton–Schulz matmul. ``None``
            (default): on when traced under a mesh
            (``jax.sharding.get_abstract_mesh()``, as :func:`jaxlab.train.train`
            does) of more than one device; ``False``: the replicated layout,
            unchanged. Same result up to float rounding.

    Returns:
        An ``optax.GradientTransformationExtraArgs`` with state :class:`MuonState`.

    Raises:
        ValueError: for hyperparameters of the wrong form, or — naming the leaf
            path — a leaf that is not a matrix and has no (fitting) dimension numbers.
        TypeError: ``sharded`` not ``True``, ``False`` or ``None``.

    References:
        Jordan, "Muon", 2024; Liu et al., "Muon is Scalable for LLM Training", 2025;
        Ahn et al., "Dion: Distributed Orthonormalized Updates", 2025
        (https://arxiv.org/abs/2504.05295).
    """
    fn = "scale_by_muon"
    _check_sharded(fn, sharded)
    check_scalar("beta", beta, where=fn)
    check_scalar("update_rms", update_rms, where=fn)
    check_steps("steps", steps, where=fn)
    check_choice("shape_scaling", shape_scaling, _SHAPE_SCALINGS, where=fn)
    check_choice("normalize", normalize, _NORMALIZATIONS, where=fn)
    check_scalar("normalize_eps", normalize_eps, where=fn)
    if isinstance(normalize_eps, (int, float)) and normalize_eps < 0:
        raise ValueError(f"{fn}: normalize_eps must be >= 0, got {normalize_eps}")
    coefficient_table(coeffs, f"{fn}: coeffs")
    msign_kwargs = dict(
        steps=_DEFAULT_STEPS if steps is None else steps,
        coeffs=coeffs,
        dtype=compute_dtype,
        normalization=normalize,
        eps=normalize_eps,
    )

    def views(tree):
        dims = resolve_dimension_numbers(dimension_numbers, tree, fn=fn)
        flat, treedef = jax.tree_util.tree_flatten_with_path(tree)
        out = [matrix_view(jnp.shape(x), dims.get(path_str(p)), path_str(p)) for p, x in flat]
        return [x for _, x in flat], out, treedef

    def init_fn(params):
        views(params)  # validates every leaf, naming its path
        return MuonState(mu=optax.tree.zeros_like(params, dtype=mu_dtype), count=jnp.zeros([], jnp.int32))

    def update_fn(updates, state, params=None):
        del params
        count = optax.safe_increment(state.count)
        mu = jax.tree.map(lambda m, g: (beta * m + (1 - beta) * g).astype(m.dtype), state.mu, updates)
        if bias_correction:  # as optax.tree.bias_correction: divide by 1 - beta^t
            c_mu, c_g = 1 - beta ** (optax.safe_increment(count) if nesterov else count), 1 - beta**count
            if nesterov:
                direction = jax.tree.map(lambda m, g: beta * (m / c_mu) + (1 - beta) * (g / c_g), mu, updates)
            else:
                direction = jax.tree.map(lambda m: m / c_mu, mu)
        elif nesterov:
            direction = jax.tree.map(lambda m, g: beta * m + (1 - beta) * g, mu, updates)
        else:
            direction = mu
        leaves, leaf_views, treedef = views(direction)
        mats = [v.to_matrices(x) for v, x in zip(leaf_views, leaves, strict=True)]
        shard = stack_axes()[1] > 1 if sharded is None else sharded  # decided at trace time, under the caller's mesh
        orth = orthogonalize_matrices(mats, group=group_shapes, sharded=shard, **msign_kwargs)
        grads = jax.tree.leaves(updates)
        new = [
            (v.from_matrices(o) * shape_scale(v.fan_in, v.fan_out, shape_scaling, update_rms)).astype(g.dtype)
            for v, o, g in zip(leaf_views, orth, grads, strict=True)
        ]
        return jax.tree_util.tree_unflatten(treedef, new), MuonState(mu=mu, count=count)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _check_sharded(fn: str, sharded) -> None:
    if sharded is not None and not isinstance(sharded, bool):
        raise TypeError(f"{fn}: sharded must be True, False or None, got {sharded!r}")


def _labels_fn(labels, dimension_numbers):
    if labels is None:
        return lambda params: muon_labels(params, dimension_numbers)
    if callable(labels):
        return lambda params: check_labels(labels(params), "muon")
    return check_labels(labels, "muon")


def muon(
    learning_rate,
    *,
    beta=0.95,
    nesterov: bool = True,
    steps: int | None = None,
    coeffs="polar_express_jaxlab",
    normalize: str = "power",
    normalize_eps=1e-7,
    bias_correction: bool = False,
    shape_scaling: str = "keller",
    update_rms=0.2,
    weight_decay=0.0,
    weight_decay_mask=None,
    spectral_decay_rate=None,
    labels=None,
    dimension_numbers=None,
    adam_learning_rate=None,
    adam_b1=0.9,
    adam_b2=0.999,
    adam_eps=1e-8,
    adam_weight_decay=0.0,
    mu_dtype=None,
    compute_dtype=None,
    group_shapes: bool = True,
    sharded: bool | None = None,
    ns_steps=None,
    ns_coeffs=None,
    eps=None,
    preconditioning=None,
    consistent_rms=None,
    muon_weight_dimension_numbers=None,
    adaptive=None,
    adam_eps_root=None,
) -> optax.GradientTransformationExtraArgs:
    """Muon for hidden matrices and AdamW for everything else.

    The Muon branch is ``scale_by_muon`` → decoupled weight decay
    (``weight_decay * param``) → optional :func:`spectral_decay` →
    ``-learning_rate``. The AdamW branch is ``optax.adamw``. Which leaf takes
    which branch is :func:`muon_labels` (print :func:`describe_routing` to see it).

    ``optax.contrib.muon``'s argument names are accepted (keyword-only) so one
    can replace the other; giving an optax name and the jaxlab option it sets
    raises ``TypeError`` naming both. The defaults differ:

    ==================  ===========================================  ==============================================
    what                jaxlab ``muon`` (default)                    ``optax.contrib.muon`` (default → jaxlab)
    ==================  ===========================================  ==============================================
    coefficients        ``coeffs="polar_express_jaxlab"``            ``ns_coeffs="standard"`` → ``coeffs="keller"``
    iterations          ``steps=5``                                  ``ns_steps=5`` → ``steps``; a ``(k, 3)`` table
                                                                     runs ``k`` steps
    normalization       ``normalize="power"`` (bound on sigma_1)     ``preconditioning="frobenius"`` →
                                                                     ``normalize="frobenius"``
    eps                 ``normalize_eps=1e-7``, ``adam_eps=1e-8``    ``eps=1e-8`` → both
    bias correction     off (``bias_correction=False``)              on (pass ``bias_correction=True``)
    shape scaling       ``shape_scaling="keller"``                   same; ``consistent_rms=r`` →
                                                                     ``shape_scaling="moonlight", update_rms=r``
    Nesterov            ``nesterov=True``, Muon branch only          ``nesterov=True``, also NAdamW for the rest
    weight decay        ``weight_decay=0``, ``adam_weight_decay=0``  same (both scaled by the learning rate)
    routing             :func:`muon_labels` (names, bias, SSM,       every rank-2 leaf, or the non-``None`` leaves
                        attention layouts; rank>2 → AdamW, warned)   of ``muon_weight_dimension_numbers``
    dimension numbers   ``dimension_numbers``                        ``muon_weight_dimension_numbers`` (its
                                                                     ``MuonDimensionNumbers`` are converted)
    ==================  ===========================================  ==============================================

    ``beta``, ``weight_decay_mask``, ``mu_dtype``, ``adam_b1``, ``adam_b2``,
    ``adam_weight_decay`` and ``adam_learning_rate`` have the same names.
    ``adaptive=True``, ``preconditioning`` other than ``"frobenius"`` and
    ``adam_eps_root`` other than ``0`` have no jaxlab equivalent (``TypeError``).

    ``beta``, ``nesterov``, ``steps``, ``coeffs``, ``normalize``,
    ``normalize_eps``, ``bias_correction``, ``shape_scaling``, ``update_rms``,
    ``mu_dtype``, ``compute_dtype``, ``group_shapes`` and ``sharded`` are those of
    :func:`scale_by_muon`; ``ns_steps``, ``ns_coeffs``, ``eps``,
    ``preconditioning``, ``consistent_rms``, ``muon_weight_dimension_numbers``,
    ``adaptive`` and ``adam_eps_root`` are ``optax.contrib.muon``'s names (table
    above; ``None``: not given).

    Args:
        learning_rate: scalar or schedule for the Muon branch.
        weight_decay: decoupled weight decay of the Muon branch.
        weight_decay_mask: optional mask (tree or callable) for ``weight_decay``.
        spectral_decay_rate: if not ``None``, add :func:`spectral_decay` with this
            rate to the Muon branch.
        labels: ``None`` (:func:`muon_labels` with ``dimension_numbers``), a tree
            of ``"muon"``/``"adam"`` or a callable ``params -> tree``. Under
            ``optax.inject_hyperparams`` list a callable in ``static_args``.
        dimension_numbers: ``None``, a tree of ``DimensionNumbers``/``None`` or a
            callable ``tree -> tree`` (e.g. :func:`flax_dimension_numbers`).
        adam_learning_rate: scalar or schedule for AdamW (``None``: ``learning_rate``).
        adam_b1, adam_b2, adam_eps, adam_weight_decay: AdamW hyperparameters.

    Returns:
        An ``optax.GradientTransformationExtraArgs``.

    Raises:
        ValueError: for a learning rate, coefficient table or other
            hyperparameter of the wrong form, an unknown label, or — naming the
            leaf path — a leaf routed to Muon that is not a matrix or whose
            dimension numbers do not fit its rank.
        TypeError: an optax name given together with the jaxlab option it sets,
            an optax option without a jaxlab equivalent, or ``sharded`` not
            ``True``, ``False`` or ``None``.

    References:
        Jordan, "Muon", 2024; Liu et al., "Muon is Scalable for LLM Training", 2025.
    """
    fn = "muon"
    _check_sharded(fn, sharded)
    given = dict(
        steps=steps, coeffs=coeffs, normalize=normalize, normalize_eps=normalize_eps, adam_eps=adam_eps,
        shape_scaling=shape_scaling, update_rms=update_rms, dimension_numbers=dimension_numbers,
    )  # fmt: skip
    optax_names = dict(
        ns_steps=ns_steps, ns_coeffs=ns_coeffs, eps=eps, preconditioning=preconditioning, consistent_rms=consistent_rms,
        muon_weight_dimension_numbers=muon_weight_dimension_numbers, adaptive=adaptive, adam_eps_root=adam_eps_root,
    )  # fmt: skip
    if any(v is not None for v in optax_names.values()):
        defaults = {k: p.default for k, p in inspect.signature(muon).parameters.items() if k in given}
        resolved = resolve_optax_names(fn, given, defaults, optax_names)
        steps, coeffs, normalize, normalize_eps, adam_eps, shape_scaling, update_rms, dimension_numbers = (resolved[k] for k in given)
    check_scalar("learning_rate", learning_rate, where=fn, schedule=True)
    if adam_learning_rate is None:
        adam_learning_rate = learning_rate
    check_scalar("adam_learning_rate", adam_learning_rate, where=fn, schedule=True)
    for name, value in (("weight_decay", weight_decay), ("adam_b1", adam_b1), ("adam_b2", adam_b2)):
        check_scalar(name, value, where=fn)
    check_scalar("adam_eps", adam_eps, where=fn)
    check_scalar("adam_weight_decay", adam_weight_decay, where=fn)
    muon_chain = [
        scale_by_muon(
            beta=beta,
            nesterov=nesterov,
            steps=steps,
            coeffs=coeffs,
            normalize=normalize,
            normalize_eps=normalize_eps,
            bias_correction=bias_correction,
            shape_scaling=shape_scaling,
            update_rms=update_rms,
            dimension_numbers=dimension_numbers,
            mu_dtype=mu_dtype,
            compute_dtype=compute_dtype,
            group_shapes=group_shapes,
            sharded=sharded,
        ),
    ]
    if not (isinstance(weight_decay, (int, float)) and weight_decay == 0):  # skip a pass over the weights
        muon_chain.append(optax.add_decayed_weights(weight_decay, weight_decay_mask))
    if spectral_decay_rate is not None:
        muon_chain.append(spectral_decay(spectral_decay_rate))
    muon_chain.append(optax.scale_by_learning_rate(learning_rate))
    adam = optax.adamw(adam_learning_rate, b1=adam_b1, b2=adam_b2, eps=adam_eps, weight_decay=adam_weight_decay, mu_dtype=mu_dtype)
    return optax.with_extra_args_support(optax.partition({MUON: optax.chain(*muon_chain), ADAM: adam}, _labels_fn(labels, dimension_numbers)))
