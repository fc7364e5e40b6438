"""Optax labels for SSM parameters: a smaller learning rate and no weight decay.

The S4 recipe trains the parameters of the state-space dynamics (step size Δ,
eigenvalues Λ, input vector B and low-rank factor P) with a reduced learning
rate and without weight decay, and everything else (C, D, dense layers,
norms, embeddings) with the base optimizer.

References:
    Gu, Goel, Ré. "Efficiently Modeling Long Sequences with Structured State
    Spaces." ICLR 2022 (Appendix D.2: optimizer settings of the SSM
    parameters).
    Gu et al. "On the Parameterization and Initialization of Diagonal State
    Space Models." NeurIPS 2022 (Appendix C).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import jax
import optax

SSM_PARAM_NAMES = frozenset({"log_step", "lambda_log_neg_re", "lambda_im", "B", "P"})


def _key_name(key) -> str | None:
    for attr in ("key", "name"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return None


def ssm_param_labels(params, names: Iterable[str] = SSM_PARAM_NAMES):
    """Label each leaf ``"ssm"`` if its own name is in ``names``, else ``"default"``.

    Args:
        params: a parameter pytree (e.g. Linen ``variables["params"]``).
        names: leaf names of SSM parameters (default: those created by
            :class:`jaxlab.ssm.SSM`).

    Returns:
        A pytree of the same structure with string labels, for
        ``optax.multi_transform``.

    References:
        Gu, Goel, Ré. S4 (ICLR 2022), Appendix D.2.
    """
    names = frozenset(names)

    def label(path, _):
        return "ssm" if path and _key_name(path[-1]) in names else "default"

    return jax.tree_util.tree_map_with_path(label, params)


def ssm_multi_transform(
    default: optax.GradientTransformation,
    ssm: optax.GradientTransformation,
    *,
    names: Iterable[str] = SSM_PARAM_NAMES,
) -> optax.GradientTransformationExtraArgs:
    """``optax.multi_transform`` routing SSM parameters to ``ssm`` and the rest to ``default``.

    Args:
        default: transformation for all other parameters.
        ssm: transformation for the leaves named in ``names``.
        names: leaf names of SSM parameters.

    Returns:
        The combined gradient transformation.

    References:
        Gu, Goel, Ré. S4 (ICLR 2022), Appendix D.2.
    """
    names = frozenset(names)
    return optax.multi_transform({"default": default, "ssm": ssm}, lambda p: ssm_param_labels(p, names))


def ssm_adamw(
    learning_rate: float | Callable,
    weight_decay: float = 0.01,
    ssm_lr_scale: float = 0.1,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
) -> optax.GradientTransformationExtraArgs:
    """AdamW for the network, Adam at ``ssm_lr_scale × learning_rate`` without weight decay for SSM parameters.

    All arguments are numeric (or a schedule for ``learning_rate``), so the
    factory works under ``optax.inject_hyperparams``.

    Args:
        learning_rate: base learning rate or schedule.
        weight_decay: decoupled weight decay of the non-SSM parameters.
        ssm_lr_scale: learning-rate multiplier of the SSM parameters.
        b1, b2, eps: Adam moments and epsilon (shared).

    Returns:
        An ``optax.GradientTransformationExtraArgs``.

    References:
        Loshchilov, Hutter. "Decoupled Weight Decay Regularization." ICLR 2019;
        Gu, Goel, Ré. S4 (ICLR 2022), Appendix D.2.
    """
    ssm_lr: float | Callable
    if callable(learning_rate):
        base = learning_rate

        def scaled_lr(step):
            return ssm_lr_scale * base(step)

        ssm_lr = scaled_lr
    else:
        ssm_lr = ssm_lr_scale * learning_rate
    return ssm_multi_transform(
        optax.adamw(learning_rate, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay),
        optax.adam(ssm_lr, b1=b1, b2=b2, eps=eps),
    )
