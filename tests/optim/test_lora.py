"""LoRA, LoRA+, LoRA-GA, LoRA-Pro: oracles are hand-written factored forwards, autodiff, NumPy SVD/lstsq."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxlab.optim import (
    LORA_A,
    LORA_B,
    LoraPair,
    lora_apply,
    lora_equivalent_gradient,
    lora_ga_init,
    lora_init,
    lora_labels,
    lora_merge,
    lora_plus,
    lora_pro_adam,
    lora_pro_gradients,
    lora_scale,
    lora_targets,
    scale_by_lora_pro,
)
from jaxlab.testing import assert_close_up_to_rounding


class MLP(nn.Module):
    @nn.compact
    def __call__(self, x):  # (b, 6) -> (b, 4)
        x = nn.tanh(nn.Dense(9, name="Dense_0")(x))
        return nn.Dense(4, name="head")(x)


NET = MLP()
X = jax.random.normal(jax.random.key(1), (16, 6))
Y = jax.random.randint(jax.random.key(2), (16,), 0, 4)
PARAMS = NET.init(jax.random.key(0), X)
K0, K1 = "params/Dense_0/kernel", "params/head/kernel"


def random_adapters(rank, seed=3):
    adapters = lora_init(PARAMS, rank, key=jax.random.key(seed))
    return {k: LoraPair(p.a, jax.random.normal(jax.random.key(seed + i + 10), p.b.shape))
            for i, (k, p) in enumerate(adapters.items())}  # fmt: skip


def loss_dense(params, x=X, y=Y):
    return optax.softmax_cross_entropy_with_integer_labels(NET.apply(params, x), y).mean()


# --------------------------------------------------------------------------- plain LoRA


def test_targets_default_to_2d_kernels_and_accept_a_mask():
    assert lora_targets(PARAMS) == {K0: (6, 9), K1: (9, 4)}
    mask = jax.tree_util.tree_map_with_path(lambda p, _: "head" in jax.tree_util.keystr(p), PARAMS)
    mask = jax.tree_util.tree_map_with_path(lambda p, m: m and p[-1].key == "kernel", mask)
    assert lora_targets(PARAMS, mask) == {K1: (9, 4)}
    with pytest.raises(ValueError, match="must be a 2-D kernel"):
        lora_targets(PARAMS, lambda path, leaf: path.endswith("bias"))


@pytest.mark.parametrize("rslora", [False, True])
@pytest.mark.parametrize("jit", [False, True])
def test_wrapped_model_equals_merged_model_and_a_hand_written_factored_forward(rslora, jit):
    s = lora_scale(2, alpha=3.0, rslora=rslora)
    assert s == (3.0 / np.sqrt(2) if rslora else 1.5)
    adapters = random_adapters(2)
    wrapped = lora_apply(NET.apply, PARAMS, scale=s)
    if jit:
        wrapped = jax.jit(wrapped)
    merged = NET.apply(lora_merge(PARAMS, adapters, scale=s), X)
    p = jax.tree_util.tree_map(np.asarray, PARAMS["params"])
    ad = {k: jax.tree_util.tree_map(np.asarray, v) for k, v in adapters.items()}
    x = np.asarray(X, np.float64)
    h = np.tanh(x @ p["Dense_0"]["kernel"] + s * (x @ ad[K0].a) @ ad[K0].b + p["Dense_0"]["bias"])
    oracle = h @ p["head"]["kernel"] + s * (h @ ad[K1].a) @ ad[K1].b + p["head"]["bias"]
    # Merged and factored kernels contract 6 then 9 inputs in a different order.
    assert_close_up_to_rounding(wrapped(adapters, X), merged, terms=6 + 9)
    np.testing.assert_allclose(merged, oracle, rtol=1e-4, atol=1e-5)


def test_fresh_adapters_leave_the_model_unchanged_and_have_the_documented_init():
    adapters = lora_init(PARAMS, 3, key=jax.random.key(0))
    chex.assert_shape([adapters[K0].a, adapters[K0].b, adapters[K1].a, adapters[K1].b],
                      [(6, 3), (3, 9), (9, 3), (3, 4)])  # fmt: skip
    assert all(np.all(np.asarray(p.b) == 0) for p in adapters.values())
    np.testing.assert_array_equal(lora_apply(NET.apply, PARAMS, scale=2.0)(adapters, X), NET.apply(PARAMS, X))
    big = lora_init({"kernel": jnp.zeros((400, 300))}, 50, key=jax.random.key(0))["kernel"].a
    assert abs(float(jnp.std(big)) * np.sqrt(400) - 1) < 0.02  # a ~ N(0, 1/in)


def test_adapter_gradients_are_the_chain_rule_of_the_dense_gradient():
    s, adapters = 0.7, random_adapters(2)
    loss = lambda ad: loss_dense(lora_merge(PARAMS, ad, scale=s))
    grads = jax.jit(jax.grad(loss))(adapters)
    dense = jax.jit(jax.grad(loss_dense))(lora_merge(PARAMS, adapters, scale=s))["params"]
    for k, layer in ((K0, "Dense_0"), (K1, "head")):
        g = np.asarray(dense[layer]["kernel"])
        np.testing.assert_allclose(grads[k].a, s * g @ np.asarray(adapters[k].b).T, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(grads[k].b, s * np.asarray(adapters[k].a).T @ g, rtol=1e-4, atol=1e-6)
    wrapped = lora_apply(NET.apply, PARAMS, scale=s)
    frozen_grad = jax.grad(lambda p: wrapped(adapters, X).sum())(PARAMS)  # W0 is frozen under the wrapper
    assert all(np.all(np.asarray(g) == 0) for g in jax.tree_util.tree_leaves(frozen_grad))


def test_lora_plus_gives_b_ratio_times_the_learning_rate_of_a():
    adapters = random_adapters(2)
    tree = {"lora": adapters, "bias": jnp.ones(3)}
    assert lora_labels(tree)["lora"][K0] == LoraPair(LORA_A, LORA_B) and lora_labels(tree)["bias"] == "other"
    grads = jax.tree_util.tree_map(jnp.ones_like, tree)
    for lr in (0.01, optax.constant_schedule(0.01)):
        opt = lora_plus(optax.sgd, lr, ratio=16.0)
        updates, _ = jax.jit(opt.update)(grads, opt.init(tree), tree)
        np.testing.assert_allclose(updates["lora"][K0].a, -0.01)
        np.testing.assert_allclose(updates["lora"][K0].b, -0.16)
        np.testing.assert_allclose(updates["bias"], -0.01)
    with pytest.raises(ValueError, match="ratio"):
        lora_plus(optax.sgd, 0.1, ratio=0.0)


# --------------------------------------------------------------------------- LoRA-GA


def test_lora_ga_keeps_the_initial_output_and_its_first_step_is_the_rank_2r_gradient():
    rank, s, gamma, lr = 2, lora_scale(2, 4.0), 4.0, 1e-4
    grads = jax.grad(loss_dense)(PARAMS)
    new_params, adapters = lora_ga_init(PARAMS, grads, rank, scale=s, gamma=gamma)
    wrapped = lora_apply(NET.apply, new_params, scale=s)
    np.testing.assert_allclose(wrapped(adapters, X), NET.apply(PARAMS, X), atol=1e-5)
    assert float(jnp.abs(new_params["params"]["head"]["kernel"] - PARAMS["params"]["head"]["kernel"]).max()) > 1e-3

    loss = lambda ad: loss_dense(lora_merge(new_params, ad, scale=s))
    g_ad = jax.grad(loss)(adapters)
    stepped = jax.tree_util.tree_map(lambda p, g: p - lr * g, adapters, g_ad)
    for k, layer in ((K0, "Dense_0"), (K1, "head")):
        delta = np.asarray(lora_merge(new_params, {k: stepped[k]}, scale=s)["params"][layer]["kernel"]
                           - lora_merge(new_params, {k: adapters[k]}, scale=s)["params"][layer]["kernel"])  # fmt: skip
        g = np.asarray(grads["params"][layer]["kernel"], np.float64)
        u, sv, vh = np.linalg.svd(g, full_matrices=False)
        g2r = (u[:, : 2 * rank] * sv[: 2 * rank]) @ vh[: 2 * rank]
        c2 = np.sqrt(g.shape[1]) / gamma  # c^2 = out^(1/2) / gamma
        np.testing.assert_allclose(delta, -lr * s**2 * c2 * g2r, atol=2e-3 * np.abs(lr * s**2 * c2 * g2r).max())
        cosine = np.sum(delta * -g) / (np.linalg.norm(delta) * np.linalg.norm(g))
        assert cosine > 0.9 * np.linalg.norm(g2r) / np.linalg.norm(g)  # aligned with full fine-tuning's step


def test_lora_ga_validates_rank_and_grads():
    grads = jax.grad(loss_dense)(PARAMS)
    with pytest.raises(ValueError, match=r"2 \* rank <= 4"):
        lora_ga_init(PARAMS, grads, 3, scale=1.0)
    with pytest.raises(ValueError, match="tree structure"):
        lora_ga_init(PARAMS, {"params": {}}, 1, scale=1.0)


# --------------------------------------------------------------------------- LoRA-Pro


def tangent_projection(a, b, g):
    """Least-squares projection of g onto {a X + Y b} (independent oracle, float64)."""
    n_in, r = a.shape
    n_out = b.shape[1]
    cols = []
    for i in range(r):
        for j in range(n_out):
            e = np.zeros((r, n_out))
            e[i, j] = 1
            cols.append((a @ e).ravel())
    for i in range(n_in):
        for j in range(r):
            e = np.zeros((n_in, r))
            e[i, j] = 1
            cols.append((e @ b).ravel())
    m = np.stack(cols, 1)
    coef = np.linalg.lstsq(m, g.ravel(), rcond=None)[0]
    return (m @ coef).reshape(g.shape)


@pytest.mark.parametrize("seed", [0, 1])
def test_lora_pro_equivalent_gradient_is_the_projection_onto_the_tangent_space(seed):
    rng = np.random.default_rng(seed)
    n_in, n_out, r, s = 7, 5, 2, 1.7
    a, b, g = rng.standard_normal((n_in, r)), rng.standard_normal((r, n_out)), rng.standard_normal((n_in, n_out))
    pair = LoraPair(jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32))
    plain = LoraPair(jnp.asarray(s * g @ b.T, jnp.float32), jnp.asarray(s * a.T @ g, jnp.float32))
    adjusted = lora_pro_gradients({"w": pair}, {"w": plain}, scale=s, ridge=0.0)["w"]
    equivalent = np.asarray(lora_equivalent_gradient(pair, adjusted, scale=s), np.float64)
    expected = tangent_projection(a, b, g)
    np.testing.assert_allclose(equivalent, expected, atol=2e-4 * np.abs(expected).max())
    assert np.linalg.matrix_rank(equivalent, tol=1e-3 * np.abs(equivalent).max()) <= 2 * r
    u, sv, vh = np.linalg.svd(g)
    assert np.linalg.norm(expected - (u[:, :4] * sv[:4]) @ vh[:4]) > 0.1 * np.linalg.norm(g)  # not a truncated SVD
    # Sylvester choice: among pairs with this equivalent gradient (g_a + a E, g_b - E b), closest to the plain ones.
    dist = lambda e: (np.sum((np.asarray(adjusted.a) + a @ e - s * g @ b.T) ** 2)
                      + np.sum((np.asarray(adjusted.b) - e @ b - s * a.T @ g) ** 2))  # fmt: skip
    base = dist(np.zeros((r, r)))
    for _ in range(5):
        assert dist(1e-2 * rng.standard_normal((r, r))) > base


def test_lora_pro_with_zero_b_reduces_to_the_input_side_projection_and_runs_in_a_chain():
    rng = np.random.default_rng(2)
    a, g = rng.standard_normal((6, 2)), rng.standard_normal((6, 4))
    params = {"w": LoraPair(jnp.asarray(a, jnp.float32), jnp.zeros((2, 4))), "c": jnp.ones(3)}
    grads = {"w": LoraPair(jnp.zeros((6, 2)), jnp.asarray(a.T @ g, jnp.float32)), "c": jnp.full(3, 2.0)}
    opt = optax.chain(scale_by_lora_pro(scale=1.0), optax.sgd(0.5))
    updates, _ = jax.jit(opt.update)(grads, opt.init(params), params)
    np.testing.assert_allclose(updates["c"], -1.0)
    equivalent = lora_equivalent_gradient(params["w"], jax.tree_util.tree_map(lambda u: -u / 0.5, updates["w"]),
                                          scale=1.0)  # fmt: skip
    p_a = a @ np.linalg.solve(a.T @ a, a.T)
    np.testing.assert_allclose(equivalent, p_a @ g, atol=1e-4)
    with pytest.raises(ValueError, match="needs params"):
        opt.update(grads, opt.init(params))


def test_lora_pro_adam_first_step_is_the_projection_of_the_adam_direction():
    rng = np.random.default_rng(3)
    a, b, g = rng.standard_normal((7, 2)), rng.standard_normal((2, 5)), rng.standard_normal((7, 5))
    s, lr = 2.0, 0.1
    params = {"w": LoraPair(jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32))}
    grads = {"w": LoraPair(jnp.asarray(s * g @ b.T, jnp.float32), jnp.asarray(s * a.T @ g, jnp.float32))}
    opt = lora_pro_adam(lr, scale=s, ridge=0.0)
    state = opt.init(params)
    chex.assert_shape(state.mu["w"], (7, 5))
    updates, state = jax.jit(opt.update)(grads, state, params)
    equivalent = np.asarray(lora_equivalent_gradient(params["w"], updates["w"], scale=s))
    g_eq = tangent_projection(a, b, g)
    direction = g_eq / (np.abs(g_eq) + 1e-8)  # Adam's first bias-corrected step
    np.testing.assert_allclose(equivalent, -lr * tangent_projection(a, b, direction), atol=1e-4)
    assert int(state.count) == 1
