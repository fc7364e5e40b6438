"""TARFLOW: invertibility, exact log-determinants, causality, the inverses, denoising, guidance, plain networks."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from jaxlab.generative import (
    TarFlow,
    block_forward,
    invert_cached,
    invert_jacobi,
    invert_recompute,
    patchify,
    supports_cache,
    tarflow_denoise,
    tarflow_forward,
    tarflow_inverse,
    tarflow_log_prob,
    tarflow_sampling,
    unpatchify,
)
from jaxlab.nn import CausalTransformer

LENGTH, FEATURES, CLASSES = 4, 2, 3
NET = CausalTransformer(out_features=2 * FEATURES, max_len=LENGTH, width=16, depth=1, num_heads=2, num_classes=CLASSES)
LABELS = jnp.array([0, 1, 2, 3], jnp.int32)  # 3 is the null class


def perturbed(params, key, scale=0.3):
    """Moves the parameters off their zero-output initialization so every block is a non-trivial map."""
    flat, unravel = ravel_pytree(params)  # one draw for all leaves: fast to compile
    return unravel(flat + scale * jax.random.normal(jax.random.fold_in(key, 1), flat.shape))


@functools.cache
def blocks(num_blocks: int = 2):
    init = jax.jit(lambda key: perturbed(NET.init(key, jnp.zeros((1, LENGTH, FEATURES)), LABELS[:1]), key))
    return tuple(init(jax.random.key(k)) for k in range(num_blocks))


def sequence(seed=0, batch=4):
    return jax.random.normal(jax.random.key(seed), (batch, LENGTH, FEATURES))


@functools.cache
def encoded():
    x, params = sequence(), blocks()
    z, log_det = jax.jit(lambda x: tarflow_forward(NET.apply, params, x, LABELS))(x)
    return x, z, log_det


def test_a_fresh_network_is_the_identity_flow_and_denoising_is_then_tweedie():
    """Zero-initialized heads give z = x: the model is N(0, I), whose score is −x, so the step gives (1 − σ²)·x."""
    params = jax.jit(NET.init)(jax.random.key(0), sequence(), LABELS)
    z, log_det = jax.jit(lambda p, x: block_forward(NET.apply, p, x, LABELS))(params, sequence())
    np.testing.assert_array_equal(z, sequence())
    np.testing.assert_array_equal(log_det, 0.0)
    x = sequence(4)
    denoised = jax.jit(lambda x: tarflow_denoise(NET.apply, (params,), x, LABELS, noise_std=0.3))(x)
    np.testing.assert_allclose(denoised, (1 - 0.09) * x, rtol=1e-5)


def test_the_flow_is_not_trivial():
    x, z, log_det = encoded()
    assert float(jnp.max(jnp.abs(z - x))) > 0.1 and float(jnp.max(jnp.abs(log_det))) > 0.1


@pytest.mark.parametrize("sampler", ["auto", "cached", "recompute", "jacobi", "gs_jacobi"])
def test_inverse_of_forward_is_the_identity(sampler):
    (x, z, _), params = encoded(), blocks()
    run = jax.jit(lambda z: tarflow_inverse(NET.apply, params, z, LABELS, sampler=sampler, tol=0.0, segments=2))
    recovered, passes = run(z)
    np.testing.assert_allclose(recovered, x, atol=1e-4)
    assert passes.shape == (2,)
    bound = LENGTH if sampler in ("auto", "cached", "recompute") else LENGTH + 2  # Jacobi: exact after L passes (+1 per segment to see it)
    assert (np.asarray(passes) <= bound).all()


def test_log_determinant_equals_autodiff_jacobian():
    (x, _, log_det), params = encoded(), blocks()

    def flat_forward(v, label):
        z, _ = tarflow_forward(NET.apply, params, v.reshape(1, LENGTH, FEATURES), label[None])
        return z.reshape(-1)

    jacobians = jax.jit(jax.vmap(jax.jacfwd(flat_forward)))(x.reshape(x.shape[0], -1), LABELS)  # (b, 8, 8)
    _, expected = np.linalg.slogdet(np.asarray(jacobians, np.float64))
    np.testing.assert_allclose(log_det, expected, atol=1e-4)


@pytest.mark.parametrize("flip", [False, True])
def test_each_block_is_autoregressive_in_its_own_order(flip):
    """∂z_i/∂x_j = 0 for j after i in the block's order (a triangular Jacobian) — and not for j before i."""
    params = blocks()[0]
    order = (lambda v: v[:, ::-1]) if flip else (lambda v: v)

    def block(v):
        z, _ = block_forward(NET.apply, params, order(v.reshape(1, LENGTH, FEATURES)), LABELS[1:2])
        return order(z).reshape(LENGTH, FEATURES)

    jacobian = np.asarray(jax.jit(jax.jacfwd(block))(sequence()[0].reshape(-1))).reshape(LENGTH, FEATURES, LENGTH, FEATURES)
    for i in range(LENGTH):
        for j in range(LENGTH):
            later = (j < i) if flip else (j > i)
            magnitude = np.abs(jacobian[i, :, j, :]).max()
            if later:
                assert magnitude == 0.0, (i, j)
            elif i != j:
                assert magnitude > 0.0, (i, j)


def test_transformer_is_causal_and_decoding_with_a_cache_matches_the_full_pass():
    params = blocks()[1]
    x = sequence(1)
    full_pass = jax.jit(lambda x: NET.apply(params, x, LABELS, return_cache=True))
    decode = jax.jit(lambda token, cache, i: NET.apply(params, token, LABELS, cache=cache, position=i))
    full, cache_full = full_pass(x)
    changed, _ = full_pass(x.at[:, 2:].set(7.0))
    np.testing.assert_allclose(changed[:, :2], full[:, :2], atol=1e-6)
    assert not np.allclose(changed[:, 2:], full[:, 2:])
    cache = jax.tree.map(jnp.zeros_like, cache_full)
    for position in range(LENGTH):
        out, cache = decode(x[:, position : position + 1], cache, position)
        np.testing.assert_allclose(out[:, 0], full[:, position], atol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), cache, cache_full)


def test_cached_sampling_equals_uncached_recompute_with_guidance():
    """Without guidance both invert the flow exactly (test above); with it they must still agree, and differ from w = 0."""
    z, params = sequence(2), blocks()[0]

    @jax.jit
    def run(z, traced_weight):
        cached = invert_cached(NET.apply, params, z, LABELS, 2.0)
        reference = invert_recompute(NET.apply, params, z, LABELS, traced_weight)  # a traced w takes the guided path
        return cached, reference, invert_cached(NET.apply, params, z, LABELS, 0.0)

    cached, reference, unguided = run(z, jnp.float32(2.0))
    np.testing.assert_allclose(cached, reference, atol=1e-5)
    np.testing.assert_allclose(run(z, jnp.float32(0.0))[1], unguided, atol=1e-5)  # traced w = 0 is no guidance
    assert float(jnp.max(jnp.abs(cached[:3] - unguided[:3]))) > 1e-2  # labelled rows are guided
    np.testing.assert_allclose(cached[3], unguided[3], atol=1e-5)  # the null-label row: r_c = r_∅, no effect


def test_jacobi_converges_to_the_sequential_result():
    z = sequence(3)
    params = blocks()[0]
    reference = jax.jit(lambda z: invert_recompute(NET.apply, params, z, LABELS))(z)
    jacobi = jax.jit(
        lambda z, tol, cap, parts: invert_jacobi(NET.apply, params, z, LABELS, tol=tol, max_iters=cap, segments=parts),
        static_argnums=(2, 3),  # tol stays traced: one compilation per (max_iters, segments)
    )
    for segments in (1, 2):
        loose, loose_iters = jacobi(z, 1e-2, None, segments)
        tight, tight_iters = jacobi(z, 1e-6, None, segments)
        np.testing.assert_allclose(tight, reference, atol=1e-5)
        assert float(jnp.max(jnp.abs(loose - reference))) < 0.1
        assert int(loose_iters) <= int(tight_iters) <= LENGTH + segments
    capped, iters = jacobi(z, 0.0, 1, 1)
    assert int(iters) == 1 and float(jnp.max(jnp.abs(capped - reference))) > 1e-3  # one pass is not enough


def test_log_prob_integrates_to_one_on_a_grid():
    """A 2-D flow (two 1-D patches, two blocks): ∫ p = 1 by a Riemann sum on [-12, 12]²."""
    net = CausalTransformer(out_features=2, max_len=2, width=16, depth=1, num_heads=2)
    init = jax.jit(lambda key: perturbed(net.init(key, jnp.zeros((1, 2, 1))), key, 0.15))
    params = tuple(init(jax.random.key(k)) for k in range(2))
    grid = jnp.linspace(-12, 12, 241)
    points = jnp.stack(jnp.meshgrid(grid, grid), axis=-1).reshape(-1, 2, 1)
    density = jnp.exp(jax.jit(lambda p: tarflow_log_prob(net.apply, params, p))(points))
    assert float(jnp.max(density)) > 0.25  # not the standard normal (peak 1/2π ≈ 0.16)
    assert float(jnp.sum(density) * (grid[1] - grid[0]) ** 2) == pytest.approx(1.0, abs=2e-3)


def test_patchify_round_trip_and_layout():
    images = jnp.arange(2 * 4 * 4 * 3, dtype=jnp.float32).reshape(2, 4, 4, 3)
    seq = patchify(images, 2)
    assert seq.shape == (2, 4, 12)
    np.testing.assert_array_equal(seq[0, 1].reshape(2, 2, 3), images[0, 0:2, 2:4])  # second patch: top right
    np.testing.assert_array_equal(unpatchify(seq, (4, 4, 3), 2), images)
    vectors = jnp.arange(12.0).reshape(2, 6)
    np.testing.assert_array_equal(unpatchify(patchify(vectors, 3), (6,), 3), vectors)


def adapter(**overrides):
    net = CausalTransformer(out_features=8, max_len=4, width=16, depth=1, num_heads=2, num_classes=CLASSES)
    fields = {"data_shape": (4, 4, 1), "patch_size": 2, "num_blocks": 1, "num_classes": CLASSES, **overrides}
    return TarFlow(net.apply, net.init, **fields)


def test_adapter_loss_is_the_negative_log_likelihood_per_dimension_and_samples_have_finite_likelihood():
    method = adapter(label_dropout=0.0)
    x = jax.random.normal(jax.random.key(5), (4, 4, 4, 1))
    batch = {"x": x, "label": jnp.array([0, 1, 2, 0], jnp.int32)}
    params = jax.jit(lambda key: perturbed(method.init(key, batch), key, 0.2))(jax.random.key(0))
    loss, aux = jax.jit(lambda p: method.loss(p, batch, key=jax.random.key(1), ctx=None))(params)  # no noise: exact NLL
    log_prob = jax.jit(method.log_prob)
    expected = -jnp.mean(log_prob(params, x, batch["label"])) / 16
    assert float(loss) == pytest.approx(float(expected), rel=1e-5)
    assert set(aux) == {"nll_per_dim", "log_det_per_dim"}
    samples = jax.jit(lambda p: method.sample(p, key=jax.random.key(2), num=4))(params)
    assert samples.shape == (4, 4, 4, 1)
    assert np.isfinite(np.asarray(log_prob(params, samples, jnp.array([0, 1, 2, 0], jnp.int32)))).all()


def test_bad_inputs_name_the_argument():
    method = adapter()
    batch = {"x": jnp.zeros((4, 4, 4, 1)), "label": jnp.zeros(4, jnp.int32)}
    with pytest.raises(ValueError, match=r"x must have shape \(batch, 4, 4, 1\), got \(4, 4, 4\)"):
        method.init(jax.random.key(0), {"x": jnp.zeros((4, 4, 4)), "label": batch["label"]})
    with pytest.raises(ValueError, match=r"needs labels of shape \(4,\)"):
        method.init(jax.random.key(0), {"x": batch["x"]})
    with pytest.raises(ValueError, match=r"labels must be an int array of shape \(4,\), got \(4,\) float32"):
        method.init(jax.random.key(0), {"x": batch["x"], "label": jnp.zeros(4)})
    with pytest.raises(ValueError, match="sampler must be one of"):
        adapter(sampler="newton")
    with pytest.raises(ValueError, match="denoise=True needs noise_std > 0"):
        adapter(denoise=True)
    with pytest.raises(ValueError, match="patch_size 3 must divide data_shape"):
        adapter(patch_size=3)
    with pytest.raises(ValueError, match="segments must divide the sequence length 4, got 3"):
        invert_jacobi(NET.apply, blocks()[0], sequence(), LABELS, segments=3)


def plain_net(params, u, labels):
    """A hand-written causal conditioner with only the plain call: output i sees u_{≤i} through a running mean."""
    del labels
    running_mean = jnp.cumsum(u, axis=1) / jnp.arange(1, u.shape[1] + 1)[:, None]
    return jnp.tanh(running_mean @ params["w"] + params["b"])  # (b, L, 2D)


def plain_init(key, u, labels=None):
    del labels
    w_key, b_key = jax.random.split(key)
    features = u.shape[-1]
    return {"w": jax.random.normal(w_key, (features, 2 * features)), "b": 0.5 * jax.random.normal(b_key, (2 * features,))}


def test_a_plain_apply_fn_inverts_with_the_default_sampler_and_cached_says_why_not():
    x = sequence(6)
    params = [plain_init(jax.random.key(k), x) for k in range(2)]
    z, _ = tarflow_forward(plain_net, params, x)
    assert float(jnp.max(jnp.abs(z - x))) > 0.1  # a non-trivial flow
    recovered, passes = jax.jit(lambda z: tarflow_inverse(plain_net, params, z))(z)  # the default call
    np.testing.assert_allclose(recovered, x, atol=1e-4)
    np.testing.assert_array_equal(passes, [LENGTH, LENGTH])  # sequential and exact
    assert not supports_cache(plain_net, params[0], z) and supports_cache(NET.apply, blocks()[0], z, LABELS)
    with pytest.raises(TypeError, match=r"sampler='cached' needs an apply_fn with the KV-cache protocol"):
        tarflow_inverse(plain_net, params, z, sampler="cached")
    with pytest.raises(TypeError, match="KV-cache protocol"):
        invert_cached(plain_net, params[0], z, None)


def test_the_adapter_samples_with_a_plain_apply_fn_by_default():
    method = TarFlow(plain_net, plain_init, data_shape=(4,), patch_size=2, num_blocks=2)
    params = method.init(jax.random.key(0), {"x": jnp.zeros((3, 4))})
    samples = jax.jit(lambda p: method.sample(p, key=jax.random.key(1), num=3))(params)
    chex.assert_shape(samples, (3, 4))
    assert np.isfinite(np.asarray(method.log_prob(params, samples))).all()


def test_the_default_sampler_uses_the_cache_when_the_network_has_one(monkeypatch):
    calls = []
    original = tarflow_sampling.invert_cached
    monkeypatch.setattr(tarflow_sampling, "invert_cached", lambda *args: calls.append(1) or original(*args))
    jax.eval_shape(lambda z: tarflow_inverse(NET.apply, blocks(), z, LABELS), sequence())
    assert len(calls) == 2  # one cached inverse per block


def test_block_params_must_be_a_sequence_of_blocks():
    params, z = blocks()[0], sequence()
    with pytest.raises(TypeError, match=r"block_params must be a list or tuple .* got dict .*pass \[params\]"):
        tarflow_inverse(NET.apply, params, z, LABELS)
    with pytest.raises(TypeError, match="block_params must be a list or tuple"):
        tarflow_forward(NET.apply, params, z, LABELS)
    with pytest.raises(TypeError, match="block_params must be a list or tuple"):
        tarflow_log_prob(plain_net, {"block_0": plain_init(jax.random.key(0), z)}, z)
    with pytest.raises(ValueError, match="at least one block"):
        tarflow_inverse(NET.apply, [], z, LABELS)


def test_a_bfloat16_network_gives_a_float32_log_prob_close_to_the_float32_one():
    fields = dict(out_features=4, max_len=4, width=16, depth=1, num_heads=2)
    net32, net16 = CausalTransformer(**fields), CausalTransformer(**fields, dtype="bfloat16")
    flow32 = TarFlow(net32.apply, net32.init, data_shape=(8,), patch_size=2, num_blocks=2)
    flow16 = TarFlow(net16.apply, net16.init, data_shape=(8,), patch_size=2, num_blocks=2)
    x = jax.random.normal(jax.random.key(4), (3, 8))
    params = jax.jit(lambda key: perturbed(flow32.init(key, {"x": x}), key, 0.2))(jax.random.key(0))
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(flow16.init(jax.random.key(0), {"x": x})))
    log_p32, log_p16 = flow32.log_prob(params, x), flow16.log_prob(params, x)
    assert log_p16.dtype == log_p32.dtype == jnp.float32
    assert not np.allclose(log_p16, log_p32, rtol=1e-6, atol=0)  # the network really ran in bfloat16
    np.testing.assert_allclose(log_p16, log_p32, rtol=2e-2, atol=0.05)
    loss, _ = flow16.loss(params, {"x": x}, key=jax.random.key(1), ctx=None)
    assert loss.dtype == jnp.float32


def test_log_determinants_are_summed_in_float32_even_for_a_bfloat16_network_output():
    x, _, log_det = encoded()
    bf16_net = lambda p, u, y: NET.apply(p, u, y).astype(jnp.bfloat16)  # a network whose outputs are 16-bit
    z16, log_det16 = jax.jit(lambda x: tarflow_forward(bf16_net, blocks(), x, LABELS))(x)
    assert z16.dtype == log_det16.dtype == jnp.float32
    np.testing.assert_allclose(log_det16, log_det, rtol=2e-2, atol=0.05)
