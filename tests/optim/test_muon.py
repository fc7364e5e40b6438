"""scale_by_muon / muon: oracle updates, dimension numbers, sharding, inject_hyperparams, bad input."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import jaxlab.optim as jo
from jaxlab.linalg import msign_svd


def normal(key, shape):
    return jax.random.normal(jax.random.key(key), shape)


def run(tx, *grads):
    """Jitted updates of ``tx`` over a sequence of gradient trees; returns the updates and the last state."""
    update, state, out = jax.jit(tx.update), tx.init(grads[0]), []
    for g in grads:
        u, state = update(g, state)
        out.append(u)
    return out, state


def test_scale_by_muon_matches_oracle_over_two_steps():
    g1, g2 = {"w": normal(0, (6, 10))}, {"w": normal(1, (6, 10))}
    (u1, u2), state = run(jo.scale_by_muon(beta=0.9, steps=8), g1, g2)
    mu1 = 0.1 * g1["w"]
    mu2 = 0.9 * mu1 + 0.1 * g2["w"]
    scale = np.sqrt(10 / 6)  # Keller: sqrt(max(1, fan_out / fan_in))
    np.testing.assert_allclose(state.mu["w"], mu2, atol=1e-6)
    np.testing.assert_allclose(u1["w"], scale * msign_svd(0.9 * mu1 + 0.1 * g1["w"]), atol=3e-3)
    np.testing.assert_allclose(u2["w"], scale * msign_svd(0.9 * mu2 + 0.1 * g2["w"]), atol=3e-3)
    # without Nesterov the direction is the momentum itself
    (_, u2), _ = run(jo.scale_by_muon(beta=0.9, steps=8, nesterov=False), g1, g2)
    np.testing.assert_allclose(u2["w"], scale * msign_svd(mu2), atol=3e-3)


def test_shape_scalings():
    g = {"w": normal(2, (8, 24))}
    assert jo.shape_scale(8, 24, "keller") == pytest.approx(3**0.5)
    assert jo.shape_scale(24, 8, "keller") == 1.0
    assert jo.shape_scale(8, 24, "moonlight", 0.2) == pytest.approx(0.2 * 24**0.5)
    assert jo.shape_scale(8, 24, "none") == 1.0
    (u,), _ = run(jo.scale_by_muon(shape_scaling="moonlight", update_rms=0.2, steps=7), g)
    # full rank: the RMS of U V^T is 1/sqrt(max(m, n)), so Moonlight's update has RMS 0.2
    assert abs(float(jnp.sqrt(jnp.mean(u["w"] ** 2))) - 0.2) < 2e-3


def test_conv_kernel_equals_its_matrix_view():
    k4 = normal(3, (3, 3, 4, 8))
    (u4,), _ = run(jo.scale_by_muon(dimension_numbers={"conv": jo.conv_dimension_numbers(4)}), {"conv": k4})
    (u2,), _ = run(jo.scale_by_muon(), {"conv": k4.reshape(36, 8)})
    np.testing.assert_allclose(u4["conv"], u2["conv"].reshape(3, 3, 4, 8), atol=1e-6)


def test_stacked_layers_per_slice_and_grouping():
    stack = normal(4, (3, 5, 9))  # (layer, fan_in, fan_out) from a scanned block
    tree = {"layers": stack, "a": normal(5, (5, 9)), "b": normal(6, (9, 5))}
    dims = lambda t: {"layers": jo.DimensionNumbers(1, 2), "a": None, "b": None}  # noqa: E731
    (u,), _ = run(jo.scale_by_muon(dimension_numbers=dims), tree)  # one batched msign over 5 matrices
    (separate,), _ = run(jo.scale_by_muon(dimension_numbers=dims, group_shapes=False), tree)
    chex.assert_trees_all_close(u, separate, atol=1e-4)
    exact = {"layers": np.sqrt(9 / 5) * msign_svd(stack), "a": np.sqrt(9 / 5) * msign_svd(tree["a"])}
    exact["b"] = msign_svd(tree["b"])  # tall: no width scaling
    chex.assert_trees_all_close(u, exact, atol=0.15 * np.sqrt(9 / 5))


def _tree():
    return {
        "Dense_0": {"kernel": normal(5, (16, 40)), "bias": normal(6, (40,))},
        "Dense_1": {"kernel": normal(7, (40, 16))},
        "Embed_0": {"embedding": normal(9, (8, 16))},
    }


def test_eight_devices_equal_one():
    assert jax.device_count() == 8
    mesh = jax.make_mesh((8,), ("data",))
    params = _tree()
    grads = jax.tree.map(lambda x: 0.1 * x + 0.01, params)
    tx = jo.muon(0.1, weight_decay=0.01)
    state = tx.init(params)
    update = jax.jit(tx.update)
    ref, _ = update(grads, state, params)
    spec = lambda x: P("data") if x.ndim and x.shape[0] % 8 == 0 else P()  # noqa: E731
    shard = lambda x: jax.device_put(x, NamedSharding(mesh, spec(x)))  # noqa: E731
    sp, sg, ss = jax.tree.map(shard, params), jax.tree.map(shard, grads), jax.tree.map(shard, state)
    out, new_state = update(sg, ss, sp)
    assert len(out["Dense_0"]["kernel"].sharding.device_set) == 8
    chex.assert_trees_all_close(out, ref, atol=2e-5)
    chex.assert_trees_all_close(new_state, update(grads, state, params)[1], atol=2e-5)
    # decoupled weight decay: a zero gradient leaves -lr * wd * W on the Muon leaves only
    out, _ = update(jax.tree.map(jnp.zeros_like, grads), state, params)
    np.testing.assert_allclose(out["Dense_0"]["kernel"], -0.1 * 0.01 * params["Dense_0"]["kernel"], atol=1e-7)
    np.testing.assert_allclose(out["Embed_0"]["embedding"], 0.0, atol=1e-7)  # AdamW branch, no decay


def test_inject_hyperparams_and_no_retrace():
    params = _tree()
    tx = optax.inject_hyperparams(jo.muon)(learning_rate=0.1, weight_decay=0.0)
    state = tx.init(params)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(grads, state):
        return tx.update(grads, state, params)

    u1, state1 = step(params, state)
    state1.hyperparams["learning_rate"] = jnp.asarray(0.05, jnp.float32)
    u2, _ = step(params, state1)
    kernel = lambda u: u["Dense_0"]["kernel"]  # noqa: E731
    # same gradient twice: the momentum direction is unchanged, so the step halves
    np.testing.assert_allclose(kernel(u2), 0.5 * kernel(u1), atol=1e-5)
    exact = -0.1 * np.sqrt(40 / 16) * msign_svd(params["Dense_0"]["kernel"])
    np.testing.assert_allclose(kernel(u1), exact, atol=0.15 * 0.1 * np.sqrt(40 / 16))


def test_muon_solves_a_least_squares_problem_with_a_schedule():
    a, b = normal(11, (32, 8)), normal(12, (32, 6))
    params = {"w": jnp.zeros((8, 6))}
    loss = lambda p: jnp.mean((a @ p["w"] - b) ** 2)  # noqa: E731
    best = loss({"w": jnp.linalg.lstsq(a, b)[0]})
    tx = jo.muon(optax.linear_schedule(0.1, 0.0, 100))
    state = tx.init(params)

    @jax.jit
    def step(params, state):
        updates, state = tx.update(jax.grad(loss)(params), state, params)
        return optax.apply_updates(params, updates), state

    start = loss(params)
    for _ in range(100):
        params, state = step(params, state)
    assert loss(params) - best < 0.05 * (start - best)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: jo.muon("fast"), "learning_rate"),
        (lambda: jo.muon(jnp.ones(3)), "learning_rate"),
        (lambda: jo.muon(0.1, adam_learning_rate=[0.1]), "adam_learning_rate"),
        (lambda: jo.muon(0.1, coeffs=[[1.0, 2.0]]), "coeffs"),
        (lambda: jo.muon(0.1, coeffs="dion"), "coeffs"),
        (lambda: jo.muon(0.1, steps=0), "steps"),
        (lambda: jo.muon(0.1, shape_scaling="mup"), "shape_scaling"),
        (lambda: jo.scale_by_muon(beta=jnp.ones(2)), "beta"),
    ],
)
def test_bad_hyperparameters(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_bad_leaves_name_their_path():
    params = _tree() | {"Conv_0": {"kernel": jnp.ones((3, 3, 2, 4))}}
    bad_dims = {"Conv_0": {"kernel": jo.DimensionNumbers((0, 1), 4)}}
    with pytest.raises(ValueError, match="Conv_0/kernel"):
        jo.muon(0.1, dimension_numbers=bad_dims).init(params)
    force = lambda p: jax.tree_util.tree_map_with_path(  # noqa: E731
        lambda path, x: "muon" if "bias" in jax.tree_util.keystr(path) or x.ndim == 2 else "adam", p
    )
    with pytest.raises(ValueError, match="Dense_0/bias"):
        jo.muon(0.1, labels=force).init(params)
    with pytest.raises(ValueError, match="label of leaf 'Conv_0/kernel'"):
        jo.muon(0.1, labels=jax.tree.map(lambda _: "sgd", params)).init(params)
    with pytest.raises(ValueError, match="Dense_0/bias"):
        jo.scale_by_muon().init({"Dense_0": {"bias": jnp.ones(3)}})
