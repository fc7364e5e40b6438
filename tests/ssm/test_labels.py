"""Optax labels: SSM parameters at 0.1× learning rate and without weight decay."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxlab.ssm import ssm_adamw, ssm_multi_transform, ssm_param_labels

PARAMS = {
    "encoder": {"kernel": jnp.ones((3, 4)), "bias": jnp.ones(4)},
    "blocks_0": {
        "ssm": {
            "log_step": jnp.ones(4),
            "lambda_log_neg_re": jnp.ones((4, 2)),
            "lambda_im": jnp.ones((4, 2)),
            "B": jnp.ones((4, 2, 2)),
            "P": jnp.ones((4, 2, 2)),
            "C": jnp.ones((4, 2, 2)),
            "D": jnp.ones(4),
        },
        "norm": {"scale": jnp.ones(4)},
    },
}
SSM_LEAVES = {"log_step", "lambda_log_neg_re", "lambda_im", "B", "P"}


def test_labels():
    labels = ssm_param_labels(PARAMS)
    for name, label in labels["blocks_0"]["ssm"].items():
        assert label == ("ssm" if name in SSM_LEAVES else "default"), name
    assert labels["encoder"] == {"kernel": "default", "bias": "default"}
    assert ssm_param_labels(PARAMS, names={"C"})["blocks_0"]["ssm"]["C"] == "ssm"


def _first_update(tx, params):
    grads = jax.tree.map(jnp.ones_like, params)
    updates, _ = jax.jit(tx.update)(grads, tx.init(params), params)
    return updates


def test_ssm_group_gets_scaled_lr_and_no_weight_decay():
    lr, wd = 1e-2, 0.5
    # Adam's first step moves every parameter by ±lr (gradient sign), plus decoupled decay.
    updates = _first_update(ssm_adamw(lr, weight_decay=wd, ssm_lr_scale=0.1), PARAMS)
    ssm = updates["blocks_0"]["ssm"]
    for name in SSM_LEAVES:
        np.testing.assert_allclose(ssm[name], -0.1 * lr, rtol=1e-4)
    for leaf in (ssm["C"], ssm["D"], updates["encoder"]["kernel"]):
        np.testing.assert_allclose(leaf, -lr * (1 + wd), rtol=1e-4)


def test_schedule_and_inject_hyperparams():
    schedule = optax.linear_schedule(1e-2, 0.0, 10)
    updates = _first_update(ssm_adamw(schedule, weight_decay=0.0), PARAMS)
    np.testing.assert_allclose(updates["blocks_0"]["ssm"]["B"], -1e-3, rtol=1e-4)
    tx = optax.inject_hyperparams(ssm_adamw)(learning_rate=1e-2, weight_decay=0.0)
    updates = _first_update(tx, PARAMS)
    np.testing.assert_allclose(updates["blocks_0"]["ssm"]["log_step"], -1e-3, rtol=1e-4)
    np.testing.assert_allclose(updates["encoder"]["bias"], -1e-2, rtol=1e-4)


def test_multi_transform_custom_pair():
    tx = ssm_multi_transform(optax.sgd(1.0), optax.set_to_zero())
    updates = _first_update(tx, PARAMS)
    assert float(jnp.abs(updates["blocks_0"]["ssm"]["lambda_im"]).max()) == 0.0
    np.testing.assert_allclose(updates["blocks_0"]["ssm"]["D"], -1.0)
