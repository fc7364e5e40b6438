"""scale_by_muon / muon: oracle updates, dimension numbers, weight decay, options under inject_hyperparams, bad input (the shared contract: test_common.py)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

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
    dims = lambda t: {"layers": jo.DimensionNumbers(1, 2), "a": None, "b": None}
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


def test_decoupled_weight_decay_reaches_only_the_muon_leaves():
    """A zero gradient leaves -lr * wd * W on the Muon leaves and nothing on the AdamW ones."""
    params = _tree()
    tx = jo.muon(0.1, weight_decay=0.01)
    out, _ = jax.jit(tx.update)(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
    np.testing.assert_allclose(out["Dense_0"]["kernel"], -0.1 * 0.01 * params["Dense_0"]["kernel"], atol=1e-7)
    np.testing.assert_allclose(out["Embed_0"]["embedding"], 0.0, atol=1e-7)  # AdamW branch, no decay


def test_a_repeated_gradient_keeps_its_direction_and_the_step_follows_the_learning_rate():
    """The same gradient twice with the rate halved halves the step (msign is scale invariant); the first is -lr s UVᵀ."""
    params = _tree()
    tx = jo.muon(lambda count: jnp.where(count == 0, 0.1, 0.05))
    update, state = jax.jit(tx.update), tx.init(params)
    u1, state = update(params, state, params)
    u2, _ = update(params, state, params)
    kernel = lambda u: u["Dense_0"]["kernel"]
    # same gradient twice: the momentum direction is unchanged, so the step halves
    np.testing.assert_allclose(kernel(u2), 0.5 * kernel(u1), atol=1e-5)
    exact = -0.1 * np.sqrt(40 / 16) * msign_svd(params["Dense_0"]["kernel"])
    np.testing.assert_allclose(kernel(u1), exact, atol=0.15 * 0.1 * np.sqrt(40 / 16))


def test_muon_solves_a_least_squares_problem_with_a_schedule():
    a, b = normal(11, (32, 8)), normal(12, (32, 6))
    params = {"w": jnp.zeros((8, 6))}
    loss = lambda p: jnp.mean((a @ p["w"] - b) ** 2)
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
        (
            lambda: jo.muon(0.1, normalize="spectral"),
            r"muon: normalize must be one of \('power', 'frobenius'\), got 'spectral'",
        ),
        (lambda: jo.muon(0.1, normalize=None), "normalize"),
        (lambda: jo.muon(0.1, normalize_eps=-1.0), "normalize_eps must be >= 0, got -1.0"),
        (lambda: jo.scale_by_muon(normalize_eps="tiny"), "normalize_eps"),
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
    force = lambda p: jax.tree_util.tree_map_with_path(lambda path, x: "muon" if "bias" in jax.tree_util.keystr(path) or x.ndim == 2 else "adam", p)
    with pytest.raises(ValueError, match="Dense_0/bias"):
        jo.muon(0.1, labels=force).init(params)
    with pytest.raises(ValueError, match="label of leaf 'Conv_0/kernel'"):
        jo.muon(0.1, labels=jax.tree.map(lambda _: "sgd", params)).init(params)
    with pytest.raises(ValueError, match="Dense_0/bias"):
        jo.scale_by_muon().init({"Dense_0": {"bias": jnp.ones(3)}})


# --- reproducing optax.contrib.muon -------------------------------------------------------------


def gpt2_tree(d, vocab, layers=2, dtype=jnp.float32):
    """GPT-2-shaped parameters: wte (vocab, d); per layer c_attn (d, 3d), attn c_proj (d, d),
    c_fc (d, 4d), mlp c_proj (4d, d), their biases, and layer-norm scales and biases."""
    ln = {"scale": (d,), "bias": (d,)}
    block = {
        "ln_1": ln,
        "attn": {"c_attn": {"kernel": (d, 3 * d), "bias": (3 * d,)}, "c_proj": {"kernel": (d, d), "bias": (d,)}},
        "ln_2": ln,
        "mlp": {"c_fc": {"kernel": (d, 4 * d), "bias": (4 * d,)}, "c_proj": {"kernel": (4 * d, d), "bias": (d,)}},
    }
    shapes = {"wte": {"embedding": (vocab, d)}, **{f"h_{i}": block for i in range(layers)}, "ln_f": ln}
    leaves, treedef = jax.tree.flatten(shapes, is_leaf=lambda s: isinstance(s, tuple))
    keys = jax.random.split(jax.random.key(0), len(leaves))
    return jax.tree.unflatten(treedef, [(0.02 * normal_f32(k, s)).astype(dtype) for k, s in zip(keys, leaves, strict=True)])


def normal_f32(key, shape):
    """float32 draws whatever the x64 mode, so float32 and float64 runs see the same numbers."""
    return jax.random.normal(key, shape, jnp.float32)


def optax_routing(params):
    """optax.contrib.muon's default routing: every 2-D leaf (the embedding too) to Muon, the rest to AdamW."""
    return jax.tree.map(lambda x: "muon" if x.ndim == 2 else "adam", params)


def muon_leaf_updates(tx, params, grads):
    """Per-step updates of the 2-D leaves, as float64 NumPy arrays keyed by path."""
    update, state, out = jax.jit(tx.update), tx.init(params), []
    for g in grads:
        u, state = update(g, state, params)
        flat = jax.tree_util.tree_flatten_with_path(u)[0]
        out.append({jax.tree_util.keystr(p): np.asarray(x, np.float64) for p, x in flat if x.ndim == 2})
    return out


def rel_err(a, b):
    return max(np.linalg.norm(a[k] - b[k]) / np.linalg.norm(b[k]) for k in b)


OPTAX_RECIPE = dict(coeffs="keller", normalize="frobenius", normalize_eps=1e-8, bias_correction=True, nesterov=True)


@pytest.mark.parametrize(("d", "vocab"), [(128, 256), pytest.param(768, 1024, marks=pytest.mark.slow)], ids=["gpt2-shaped-128", "gpt2-768"])
def test_keller_frobenius_recipe_reproduces_optax_contrib_muon(d, vocab):
    """Same gradients, lr, momentum, no weight decay, 3 steps: the 2-D leaves get optax's updates.

    float64 is the equality check (the algorithms agree to round-off). In float32 both
    implementations carry ~1e-5 of their own round-off (Keller's polynomial does not
    converge, so round-off is not damped), so there jaxlab must be as close to the exact
    (float64) optax update as optax's own float32 update is.
    """
    lr, beta, steps = 0.02, 0.95, 3

    def updates(dtype, recipe):
        params = gpt2_tree(d, vocab, dtype=dtype)
        leaves, treedef = jax.tree.flatten(params)
        keys = jax.random.split(jax.random.key(1), (steps, len(leaves)))
        grads = [jax.tree.unflatten(treedef, [((1.0 + t) * normal_f32(k, x.shape)).astype(dtype) for x, k in zip(leaves, ks)]) for t, ks in enumerate(keys)]
        ours = jo.muon(lr, beta=beta, labels=optax_routing, **recipe)
        ref = optax.contrib.muon(lr, beta=beta, nesterov=True)  # its defaults: Keller's coefficients, 5 steps
        return muon_leaf_updates(ours, params, grads), muon_leaf_updates(ref, params, grads)

    with jax.enable_x64(True):
        ours64, ref64 = updates(jnp.float64, OPTAX_RECIPE)
    ours32, ref32 = updates(jnp.float32, OPTAX_RECIPE)
    assert len(ref64[0]) == 1 + 2 * 4  # wte and four kernels per layer
    for t in range(steps):
        assert rel_err(ours64[t], ref64[t]) < 1e-10
        assert rel_err(ours32[t], ref64[t]) < 3 * rel_err(ref32[t], ref64[t]) < 1e-4


def test_each_optax_option_is_needed():
    """Dropping one option of the recipe makes the updates differ from optax's (so the test above can fail)."""
    params = {"w": 0.1 * normal(30, (16, 40)), "b": jnp.zeros(40)}
    grads = [{"w": normal(31 + t, (16, 40)), "b": normal(41 + t, (40,))} for t in range(2)]
    ref = muon_leaf_updates(optax.contrib.muon(0.02, nesterov=True), params, grads)
    err = lambda **change: [rel_err(u, r) for u, r in zip(muon_leaf_updates(jo.muon(0.02, **(OPTAX_RECIPE | change)), params, grads), ref)]
    assert max(err()) < 1e-5
    no_bias_correction = err(bias_correction=False)
    assert no_bias_correction[0] < 1e-5 and no_bias_correction[1] > 1e-3  # the first direction is g either way
    assert min(err(normalize="power")) > 0.1


def test_frobenius_normalization_and_bias_correction_oracle():
    """scale_by_muon with the optax options against the formula, msign replaced by its SVD-free definition."""
    g1, g2 = {"w": normal(20, (6, 10))}, {"w": normal(21, (6, 10))}
    beta = 0.9
    with jax.enable_x64(True):
        g1, g2 = jax.tree.map(lambda x: x.astype(jnp.float64), (g1, g2))
        (_, u2), state = run(jo.scale_by_muon(beta=beta, **OPTAX_RECIPE), g1, g2)
        mu2 = beta * (1 - beta) * g1["w"] + (1 - beta) * g2["w"]
        direction = beta * mu2 / (1 - beta**3) + (1 - beta) * g2["w"] / (1 - beta**2)
        y = direction / (jnp.linalg.norm(direction) + 1e-8)
        for _ in range(5):  # Keller's quintic, X <- aX + (bA + cA^2)X
            a_mat = y @ y.T
            y = 3.4445 * y + (-4.7750 * a_mat + 2.0315 * a_mat @ a_mat) @ y
        np.testing.assert_allclose(u2["w"], np.sqrt(10 / 6) * y, rtol=1e-10, atol=1e-12)
        assert int(state.count) == 2


def test_normalize_under_inject_hyperparams():
    params = _tree()
    grads = jax.tree.map(lambda x: 0.3 * x + 0.1, params)
    kwargs = dict(learning_rate=0.1, coeffs="keller", normalize="frobenius", normalize_eps=1e-8, bias_correction=True)
    tx = optax.inject_hyperparams(jo.muon)(**kwargs)  # the strings and the bool are static, normalize_eps injected
    state = tx.init(params)
    assert "normalize_eps" in state.hyperparams and "normalize" not in state.hyperparams

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(grads, state):
        return tx.update(grads, state, params)

    u, state1 = step(grads, state)
    plain = jo.muon(**kwargs)
    chex.assert_trees_all_close(u, jax.jit(plain.update)(grads, plain.init(params), params)[0], atol=1e-6)
    state1.hyperparams["normalize_eps"] = jnp.asarray(1e6, jnp.float32)  # dominates |X|_F: a far smaller step
    u2, _ = step(grads, state1)
    kernel = lambda u: u["Dense_0"]["kernel"]
    assert float(jnp.linalg.norm(kernel(u2))) < 0.01 * float(jnp.linalg.norm(kernel(u)))


# --- optax.contrib.muon's argument names ----------------------------------------------------------


def _attn_tree():
    return _tree() | {"attn": {"query": {"kernel": normal(50, (16, 2, 4))}, "out": {"kernel": normal(51, (2, 4, 16))}}}


@pytest.mark.filterwarnings("ignore::jaxlab.optim.MuonFallbackWarning")  # attn/query/kernel: dims None
def test_optax_names_give_the_same_updates_as_jaxlab_names():
    params = _attn_tree()
    grads = [jax.tree.map(lambda x, t=t: (1.0 + t) * x + 0.01 * t, params) for t in range(2)]
    spec, optax_spec = jo.DimensionNumbers((0, 1), 2), optax.contrib.MuonDimensionNumbers((0, 1), 2)
    dims = {"attn": {"query": {"kernel": None}, "out": {"kernel": spec}}}
    optax_dims = {"attn": {"query": {"kernel": None}, "out": {"kernel": optax_spec}}}  # optax's type is converted
    ours = jo.muon(
        0.02, steps=3, coeffs="keller", normalize="frobenius", normalize_eps=1e-6, adam_eps=1e-6,
        shape_scaling="moonlight", update_rms=0.3, dimension_numbers=dims,
    )  # fmt: skip
    theirs = jo.muon(
        0.02, ns_steps=3, ns_coeffs="standard", preconditioning="frobenius", eps=1e-6, consistent_rms=0.3,
        muon_weight_dimension_numbers=optax_dims, adaptive=False, adam_eps_root=0.0,
    )  # fmt: skip

    def run(tx):  # every leaf's updates over the steps
        update, state, out = jax.jit(tx.update), tx.init(params), []
        for g in grads:
            u, state = update(g, state, params)
            out.append(u)
        return out

    chex.assert_trees_all_close(run(ours), run(theirs), atol=0, rtol=0)
    sigma = np.linalg.svd(np.asarray(run(theirs)[0]["attn"]["out"]["kernel"]).reshape(8, 16), compute_uv=False)
    assert sigma.max() < 2 * sigma.min()  # a Muon step of the (8, 16) view (AdamW: about 3)
    # a (k, 3) table: optax runs each row once, so ns_coeffs alone sets steps = k
    table = [[3.4445, -4.7750, 2.0315]] * 2
    chex.assert_trees_all_close(run(jo.muon(0.02, ns_coeffs=table)), run(jo.muon(0.02, coeffs=table, steps=2)))


def test_optax_names_swap_for_optax_contrib_muon():
    """optax's call, plus the one option jaxlab has off by default, gives optax's Muon updates."""
    params = {"w": 0.1 * normal(30, (16, 40)), "b": jnp.zeros(40)}
    grads = [{"w": normal(31 + t, (16, 40)), "b": normal(41 + t, (40,))} for t in range(2)]
    kwargs = dict(ns_coeffs="standard", ns_steps=5, beta=0.95, eps=1e-8, preconditioning="frobenius")
    ref = muon_leaf_updates(optax.contrib.muon(0.02, **kwargs), params, grads)
    ours = muon_leaf_updates(jo.muon(0.02, bias_correction=True, **kwargs), params, grads)
    assert max(rel_err(u, r) for u, r in zip(ours, ref, strict=True)) < 1e-5


@pytest.mark.parametrize(
    ("kwargs", "both"),
    [
        (dict(steps=4, ns_steps=4), ("ns_steps", "steps")),
        (dict(coeffs="keller", ns_coeffs="standard"), ("ns_coeffs", "coeffs")),
        (dict(normalize_eps=1e-6, eps=1e-8), ("eps", "normalize_eps")),
        (dict(adam_eps=1e-6, eps=1e-8), ("eps", "adam_eps")),
        (dict(normalize="frobenius", preconditioning="frobenius"), ("preconditioning", "normalize")),
        (dict(shape_scaling="moonlight", consistent_rms=0.2), ("consistent_rms", "shape_scaling")),
        (dict(update_rms=0.3, consistent_rms=0.2), ("consistent_rms", "update_rms")),
        (dict(dimension_numbers={}, muon_weight_dimension_numbers={}), ("muon_weight_", "dimension_numbers")),
    ],
)
def test_both_spellings_raise(kwargs, both):
    with pytest.raises(TypeError, match=rf"got both '{both[0]}.*' \(optax.contrib.muon's name\) and '{both[1]}'"):
        jo.muon(0.1, **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(adaptive=True), "adaptive=True has no jaxlab equivalent"),
        (dict(adam_eps_root=1e-8), "adam_eps_root=1e-08 has no jaxlab equivalent"),
        (dict(preconditioning="aol"), "preconditioning='aol' has no jaxlab equivalent"),
    ],
)
def test_optax_options_without_an_equivalent_raise(kwargs, match):
    with pytest.raises(TypeError, match=match):
        jo.muon(0.1, **kwargs)
    with pytest.raises(ValueError, match="ns_coeffs preset 'dion'"):
        jo.muon(0.1, ns_coeffs="dion")


def test_optax_names_under_inject_hyperparams():
    params = _tree()
    tx = optax.inject_hyperparams(jo.muon)(learning_rate=0.1, ns_steps=3, eps=1e-6)  # both injected
    state = tx.init(params)
    assert {"ns_steps", "eps"} <= set(state.hyperparams)
    u, _ = jax.jit(tx.update)(params, state, params)
    plain = jo.muon(0.1, steps=3, normalize_eps=1e-6, adam_eps=1e-6)
    chex.assert_trees_all_close(u, plain.update(params, plain.init(params), params)[0], atol=1e-6)
