"""The Diffusion Transformer: adaLN-Zero init, conditioning, patch equivariance, remat/scan, bf16, parameter counts, errors."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab.nn import DiT, DiTConfig, dit_config, dit_names, patchify, sincos_2d_embedding, stack_blocks, unpatchify, unstack_blocks
from jaxlab.testing.tolerance import assert_close_up_to_rounding

CONFIG = DiTConfig(depth=2, hidden_size=32, num_heads=2, patch_size=2, in_channels=3, num_classes=5, second_time=True, time_features=16)
NULL = 5
X = jnp.asarray(np.random.default_rng(0).normal(size=(2, 8, 8, 3)), jnp.float32)
T = jnp.array([0.3, 0.7])
D = jnp.array([0.0, 0.25])
LABELS = jnp.array([1, 3])


def init(config: DiTConfig):
    return jax.jit(DiT(config).init)(jax.random.key(0, impl="rbg"), X, T, D, LABELS)  # rbg: quick to compile


def perturbed(variables, seed: int = 1, keep=lambda path: False):
    """Every leaf (but those ``keep`` names) plus 0.2·N(0, 1), so the zero-initialised layers do not hide anything."""
    rng = np.random.default_rng(seed)

    def move(path, leaf):
        noise = jnp.asarray(0.2 * rng.normal(size=leaf.shape), leaf.dtype)  # drawn for every leaf: the same seed moves the others alike
        return leaf if keep(jax.tree_util.keystr(path)) else leaf + noise

    return jax.tree_util.tree_map_with_path(move, variables)


@pytest.fixture(scope="module")
def fresh():
    return init(CONFIG)


@pytest.fixture(scope="module")
def params(fresh):
    return perturbed(fresh)


@pytest.fixture(scope="module")
def apply():
    return jax.jit(DiT(CONFIG).apply)


def test_fresh_network_outputs_exactly_zero(fresh, apply):
    out = apply(fresh, X, T, D, LABELS)
    assert out.shape == X.shape and out.dtype == jnp.float32
    np.testing.assert_array_equal(out, 0.0)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(fresh))


def test_out_channels_and_the_unets_call_without_d():
    net = DiT(dataclasses.replace(CONFIG, out_channels=6, second_time=False))  # apply(params, x, t, labels), as Diffusion calls the U-Net
    variables = jax.eval_shape(net.init, jax.random.key(0), X, T, LABELS)
    assert "d_embedder" not in variables["params"]
    assert jax.eval_shape(net.apply, variables, X, T, LABELS).shape == (2, 8, 8, 6)


def test_blocks_with_zero_gates_are_identities(fresh, apply):
    # adaLN-Zero: with every gate at zero, the attention and MLP weights cannot reach the output
    outs = [apply(perturbed(fresh, seed, keep=lambda path: "block_" in path and "adaLN" in path), X, T, D, LABELS) for seed in (1, 2)]
    untouched = perturbed(fresh, 1, keep=lambda path: "block_" in path)
    assert np.std(outs[0]) > 1e-2
    np.testing.assert_array_equal(outs[0], apply(untouched, X, T, D, LABELS))
    assert not np.allclose(outs[0], outs[1])  # the embeddings and final layer do reach it


def test_each_condition_changes_only_its_own_example(params, apply):
    base = apply(params, X, T, D, LABELS)
    changed = {
        "t": apply(params, X, jnp.array([0.9, 0.7]), D, LABELS),
        "d": apply(params, X, T, jnp.array([0.125, 0.25]), LABELS),
        "label": apply(params, X, T, D, jnp.array([4, 3])),
        "null label": apply(params, X, T, D, jnp.array([NULL, 3])),
    }
    for name, out in changed.items():
        assert np.abs(out[0] - base[0]).max() > 1e-3, name
        np.testing.assert_allclose(out[1], base[1], atol=1e-6, err_msg=name)
    np.testing.assert_array_equal(apply(params, X, T, D, labels=LABELS), base)  # keyword labels (the shortcut call)


@pytest.mark.parametrize("pos_embed", ["none", "sincos"])
def test_without_positions_the_network_is_equivariant_to_permuting_patches(pos_embed):
    # attention is full and everything else acts per token, so only the position embedding tells patches apart
    config = dataclasses.replace(CONFIG, pos_embed=pos_embed)
    apply = jax.jit(DiT(config).apply)
    variables = perturbed(init(config))
    order = np.random.default_rng(3).permutation(16)

    def permute(images):
        return unpatchify(patchify(images, 2)[:, order], 2, 8, 8)

    gap = np.abs(apply(variables, permute(X), T, D, LABELS) - permute(apply(variables, X, T, D, LABELS))).max()
    if pos_embed == "none":
        assert gap < 1e-5
    else:
        assert gap > 1e-2


def test_patchify_is_a_strided_convolution_and_unpatchify_inverts_it():
    rng = np.random.default_rng(4)
    x = jnp.asarray(rng.normal(size=(2, 8, 12, 3)), jnp.float32)
    kernel = jnp.asarray(rng.normal(size=(2 * 2 * 3, 5)), jnp.float32)  # a patch-embedding Dense kernel
    conv = jax.lax.conv_general_dilated(x, kernel.reshape(2, 2, 3, 5), (2, 2), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    np.testing.assert_allclose(patchify(x, 2) @ kernel, conv.reshape(2, 4 * 6, 5), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(unpatchify(patchify(x, 2), 2, 8, 12), x)


def test_sincos_inner_products_are_the_closed_form_of_the_offset():
    rows, cols, dim = 3, 5, 16
    e = np.asarray(sincos_2d_embedding(rows, cols, dim), np.float64)
    omega = 10_000.0 ** -(np.arange(dim // 4) / (dim // 4))
    r, c = np.divmod(np.arange(rows * cols), cols)  # patchify's row-major token order
    gram = np.cos(omega * (r[:, None, None] - r[None, :, None])).sum(-1) + np.cos(omega * (c[:, None, None] - c[None, :, None])).sum(-1)
    np.testing.assert_allclose(e @ e.T, gram, atol=1e-5)


@pytest.mark.parametrize("remat, scan", [(True, False), (False, True), (True, True)])
def test_remat_and_scan_compute_the_plain_network(params, apply, remat, scan):
    config = dataclasses.replace(CONFIG, remat=remat, scan=scan)
    converted = stack_blocks(params) if scan else params
    if scan:
        assert jax.tree.map(jnp.shape, converted) == jax.tree.map(jnp.shape, jax.eval_shape(DiT(config).init, jax.random.key(0), X, T, D, LABELS))
        jax.tree.map(np.testing.assert_array_equal, unstack_blocks(converted), params)
    out = jax.jit(DiT(config).apply)(converted, X, T, D, LABELS)
    np.testing.assert_allclose(out, apply(params, X, T, D, LABELS), rtol=1e-6, atol=1e-6)


def test_remat_scan_gradients_equal_the_plain_ones(params):
    def grads(config, variables):
        loss = lambda v: jnp.sum(DiT(config).apply(v, X, T, D, LABELS) ** 2)
        return jax.jit(jax.grad(loss))(variables)

    plain = grads(CONFIG, params)
    stacked = grads(dataclasses.replace(CONFIG, remat=True, scan=True), stack_blocks(params))
    # Each weight gradient sums over the 2 images × 16 tokens, in another order under scan.
    jax.tree.map(lambda a, b: assert_close_up_to_rounding(a, b, terms=2 * 16), unstack_blocks(stacked), plain)


def test_bfloat16_compute_is_close_to_float32(params, apply):
    out = jax.jit(DiT(dataclasses.replace(CONFIG, dtype=jnp.bfloat16)).apply)(params, X, T, D, LABELS)
    reference = apply(params, X, T, D, LABELS)
    assert out.dtype == jnp.float32
    # bf16 keeps 8 mantissa bits (relative step 2^-8 ≈ 0.4%); two blocks of rounding stay within 3% of the output's scale
    assert np.abs(out - reference).max() <= 0.03 * np.abs(reference).max()


def closed_form_count(config: DiTConfig, image: int) -> int:
    """Parameters of a DiT from its sizes: embedders, 18D² + 15D per block, final layer."""
    width, p, c_in, c_out, f = config.hidden_size, config.patch_size, config.in_channels, config.output_channels, config.time_features
    time_mlp = f * width + width + width * width + width
    count = p * p * c_in * width + width + time_mlp * (1 + config.second_time)
    count += 0 if config.num_classes is None else (config.num_classes + 1) * width
    count += (image // p) ** 2 * width if config.pos_embed == "learned" else 0
    block = (3 * width * width + 3 * width) + (width * width + width) + (8 * width * width + 5 * width) + (6 * width * width + 6 * width)
    final = 2 * width * width + 2 * width + width * p * p * c_out + p * p * c_out
    return count + config.depth * block + final


def count(config: DiTConfig, image: int, channels: int) -> int:
    x = jnp.zeros((1, image, image, channels))
    extra = (jnp.zeros((1,)),) * config.second_time + (jnp.zeros((1,), jnp.int32),) * (config.num_classes is not None)
    return sum(leaf.size for leaf in jax.tree.leaves(jax.eval_shape(DiT(config).init, jax.random.key(0), x, jnp.zeros((1,)), *extra)))


@pytest.mark.parametrize(
    "config",
    [
        dit_config("S/2", num_classes=1000),
        dit_config("B/4", second_time=True, pos_embed="learned"),
        dit_config("L/8", in_channels=3, out_channels=6, num_classes=10, scan=True),
    ],
    ids=["S/2", "B/4", "L/8"],
)
def test_parameter_count_is_the_closed_form(config):
    assert count(config, 32, config.in_channels) == closed_form_count(config, 32)


def test_dit_xl2_has_the_papers_675m_parameters():
    # 256px ImageNet: 32×32×4 latents, 1000 classes, learned Σ doubles the output channels (Peebles & Xie 2023, Table 4)
    config = dit_config("XL/2", num_classes=1000, out_channels=8, scan=True)
    assert round(count(config, 32, 4) / 1e6) == 675


def test_named_sizes():
    assert len(dit_names()) == 12
    config = dit_config("B/4", in_channels=1)
    assert (config.depth, config.hidden_size, config.num_heads, config.patch_size, config.in_channels) == (12, 768, 12, 4, 1)
    assert dataclasses.astuple(dit_config("XL/8"))[:4] == (28, 1152, 16, 8)
    with pytest.raises(ValueError, match=r"`name` must be one of S/2, S/4, S/8, B/2, .*XL/8; got 'M/2'"):
        dit_config("M/2")
    with pytest.raises(ValueError, match=r"fixes depth, .*got overrides of depth"):
        dit_config("S/2", depth=3)


def test_bad_configs_are_named():
    with pytest.raises(ValueError, match=r"`dtype` must be one of \('float32', 'bfloat16', 'float16'\); got int8"):
        DiTConfig(dtype=jnp.int8)
    with pytest.raises(ValueError, match=r"`dtype` must be one of .*; got float64"):
        DiTConfig(dtype="float64")
    with pytest.raises(ValueError, match=r"`hidden_size` must be divisible by num_heads = 5; got 384"):
        DiTConfig(num_heads=5)
    with pytest.raises(ValueError, match=r"`pos_embed` must be one of"):
        DiTConfig(pos_embed="rope")
    with pytest.raises(ValueError, match=r"'cudnn' needs dtype bfloat16 or float16"):
        DiTConfig(attention_impl="cudnn")


def test_bad_inputs_are_named(fresh):
    net = DiT(CONFIG)
    with pytest.raises(ValueError, match=r"height and width divisible by patch_size = 2; got \(2, 7, 8, 3\)"):
        net.apply(fresh, jnp.zeros((2, 7, 8, 3)), T, D, LABELS)
    with pytest.raises(ValueError, match=r"in_channels = 3 channels; got shape \(2, 8, 8, 1\)"):
        net.apply(fresh, jnp.zeros((2, 8, 8, 1)), T, D, LABELS)
    with pytest.raises(ValueError, match=r"takes \(x, t, d, labels\) \(second_time=True, num_classes=5\); got 3 inputs"):
        net.apply(fresh, X, T, LABELS)
    with pytest.raises(ValueError, match=r"`t` must have shape \(2,\) or \(\); got \(3,\)"):
        net.apply(fresh, X, jnp.zeros(3), D, LABELS)
    with pytest.raises(ValueError, match=r"`labels` must be an integer array of shape \(2,\); got float32 \(2,\)"):
        net.apply(fresh, X, T, D, jnp.zeros(2))
    unconditional = DiT(dataclasses.replace(CONFIG, num_classes=None))
    with pytest.raises(ValueError, match=r"`labels` were given, but config.num_classes is None"):
        unconditional.init(jax.random.key(0), X, T, D, labels=LABELS)
    learned = DiT(dataclasses.replace(CONFIG, pos_embed="learned"))
    variables = jax.eval_shape(learned.init, jax.random.key(0), X, T, D, LABELS)
    with pytest.raises(ValueError, match=r"learned embedding's 16 patches; got 8×8 = 64"):
        jax.eval_shape(learned.apply, variables, jnp.zeros((2, 16, 16, 3)), T, D, LABELS)
    with pytest.raises(ValueError, match=r"holding 'blocks'; got \['block_0', 'block_1', 'd_embedder'"):
        unstack_blocks(fresh)
