"""The fused attention path (``jax.nn.dot_product_attention``) against the reference softmax, and the precision policy.

Oracles: the layers' own ``attention_impl="reference"`` path (an explicit
float32 softmax) and the dense NumPy attention of ``test_attention``.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab.nn import (
    AttentionConfig,
    CausalTransformer,
    DecoderLM,
    MLAConfig,
    MultiHeadAttention,
    MultiHeadLatentAttention,
    RopeConfig,
    TransformerConfig,
    init_cache,
    init_caches,
    scaled_frequencies,
)
from jaxlab.nn.transformer import token_losses
from tests.nn.test_attention import dense_oracle, random_params

B, T, FEATURES = 2, 8, 16
X = jax.random.normal(jax.random.key(0), (B, T, FEATURES))
PADDING = jnp.arange(T)[None, :] < jnp.array([T, 5])[:, None]  # (b, t): the second row is right-padded
ROPES = {
    "plain": RopeConfig(),
    "logn": RopeConfig(logn=True, original_length=4),
    "yarn": RopeConfig(scaling="yarn", factor=4.0, original_length=4),
    "yarn_logn": RopeConfig(scaling="yarn", factor=2.0, original_length=4, logn=True),
}
F32, BF16 = 1e-5, 2e-2


def both(module_cls, *args, **fields):
    """The module with the fused (default) and the reference attention."""
    return module_cls(*args, **fields), module_cls(*args, attention_impl="reference", **fields)


def real(y):
    """Only the real (unpadded) positions: padded outputs are meaningless on both paths."""
    return jnp.where(PADDING[..., None], y, 0.0)


@pytest.mark.parametrize("rope", ROPES, ids=str)
@pytest.mark.parametrize("kv_heads", [4, 2, 1])  # MHA, GQA, MQA
def test_fused_equals_reference_with_causal_and_padding_masks(kv_heads, rope):
    config = AttentionConfig(num_heads=4, head_dim=8, num_kv_heads=kv_heads, rope=ROPES[rope])
    fused, reference = both(MultiHeadAttention, config)
    params = random_params(fused, X)
    np.testing.assert_allclose(fused.apply(params, X)[0], reference.apply(params, X)[0], atol=F32, rtol=F32)
    padded = lambda layer: real(layer.apply(params, X, mask=PADDING)[0])
    np.testing.assert_allclose(padded(fused), padded(reference), atol=F32, rtol=F32)
    positions = 3 + 2 * jnp.arange(T)  # explicit positions: the causal mask compares them
    moved = lambda layer: layer.apply(params, X, positions=positions)[0]
    np.testing.assert_allclose(moved(fused), moved(reference), atol=F32, rtol=F32)


@pytest.mark.parametrize("kv_heads", [4, 2])
def test_fused_matches_the_dense_numpy_oracle_non_causal(kv_heads):
    config = AttentionConfig(num_heads=4, head_dim=8, num_kv_heads=kv_heads, rope=ROPES["yarn"], causal=False)
    layer = MultiHeadAttention(config)
    params = random_params(layer, X)
    frequencies = np.asarray(scaled_frequencies(config.rope, 8, length=T))
    # dense_oracle masks causally; a non-causal layer must differ from it but equal its reference path
    reference = MultiHeadAttention(config, attention_impl="reference").apply(params, X)[0]
    np.testing.assert_allclose(layer.apply(params, X)[0], reference, atol=F32, rtol=F32)
    causal = dataclasses.replace(config, causal=True)
    np.testing.assert_allclose(MultiHeadAttention(causal).apply(params, X)[0], dense_oracle(params, X, causal, frequencies), atol=1e-5)


@pytest.mark.parametrize("kv_heads", [4, 1])
def test_fused_gradients_equal_reference_gradients(kv_heads):
    config = AttentionConfig(num_heads=4, head_dim=8, num_kv_heads=kv_heads, rope=ROPES["yarn_logn"])
    fused, reference = both(MultiHeadAttention, config)
    params = random_params(fused, X)
    loss = lambda layer: jax.grad(lambda p, x: jnp.sum(jnp.sin(real(layer.apply(p, x, mask=PADDING)[0]))), argnums=(0, 1))
    for g_fused, g_reference in zip(jax.tree.leaves(loss(fused)(params, X)), jax.tree.leaves(loss(reference)(params, X))):
        np.testing.assert_allclose(g_fused, g_reference, atol=F32, rtol=1e-4)


@pytest.mark.parametrize("kv_heads", [4, 2, 1])
def test_bfloat16_fused_equals_bfloat16_reference_and_parameters_stay_float32(kv_heads):
    config = AttentionConfig(num_heads=4, head_dim=8, num_kv_heads=kv_heads, rope=ROPES["logn"])
    fused, reference = both(MultiHeadAttention, config, dtype=jnp.bfloat16)
    shapes = jax.eval_shape(fused.init, jax.random.key(0), X)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(shapes))
    params = random_params(MultiHeadAttention(config), X)
    y_fused, y_reference = fused.apply(params, X, mask=PADDING)[0], reference.apply(params, X, mask=PADDING)[0]
    assert y_fused.dtype == y_reference.dtype == jnp.bfloat16
    np.testing.assert_allclose(real(y_fused.astype(jnp.float32)), real(y_reference.astype(jnp.float32)), atol=BF16, rtol=BF16)
    y32 = MultiHeadAttention(config).apply(params, X)[0]  # bfloat16 is an approximation of the float32 layer
    np.testing.assert_allclose(fused.apply(params, X)[0].astype(jnp.float32), y32, atol=0.1, rtol=0.1)


MLA_SHAPES = {
    "v_narrower": MLAConfig(num_heads=4, kv_lora_rank=12, qk_nope_dim=6, qk_rope_dim=4, v_head_dim=5, q_lora_rank=10),
    "v_wider": MLAConfig(num_heads=2, kv_lora_rank=8, qk_nope_dim=4, qk_rope_dim=2, v_head_dim=9, rope=ROPES["yarn_logn"]),
}


@pytest.mark.parametrize("mode", ["naive", "absorbed"])
@pytest.mark.parametrize("shape", MLA_SHAPES, ids=str)
def test_mla_prefill_fused_equals_reference_and_its_gradients(shape, mode):
    config = dataclasses.replace(MLA_SHAPES[shape], mode=mode)
    fused, reference = both(MultiHeadLatentAttention, config)
    params = random_params(fused, X)
    forward = lambda layer: real(layer.apply(params, X, mask=PADDING)[0])
    np.testing.assert_allclose(forward(fused), forward(reference), atol=F32, rtol=F32)
    grads = lambda layer: jax.grad(lambda p: jnp.sum(jnp.sin(real(layer.apply(p, X, mask=PADDING)[0]))))(params)
    for g_fused, g_reference in zip(jax.tree.leaves(grads(fused)), jax.tree.leaves(grads(reference))):
        np.testing.assert_allclose(g_fused, g_reference, atol=F32, rtol=1e-4)
    bf16_fused, bf16_reference = both(MultiHeadLatentAttention, config, dtype="bfloat16")
    y16 = bf16_fused.apply(params, X)[0]
    assert y16.dtype == jnp.bfloat16
    np.testing.assert_allclose(y16.astype(jnp.float32), bf16_reference.apply(params, X)[0].astype(jnp.float32), atol=BF16, rtol=BF16)


def full_and_decoded(model, params, tokens, caches):
    """The fused full forward's logits and those of a 3-token prefill then 3 one-token steps (reference path)."""
    prefill, caches = model.apply(params, tokens[:, :3], caches)
    steps = []
    for i in range(3, tokens.shape[1]):
        step, caches = model.apply(params, tokens[:, i : i + 1], caches)
        steps.append(step)
    return model.apply(params, tokens)[0], jnp.concatenate([prefill, *steps], axis=1)


def test_decoding_after_a_fused_forward_matches_it_with_a_compute_dtype_cache():
    # the cached calls use the reference path: their logits equal the fused full forward's
    for attention in (AttentionConfig(4, 8, 2, rope=ROPES["yarn_logn"]), dataclasses.replace(MLA_SHAPES["v_narrower"], mode="absorbed")):
        for dtype, atol in (("float32", 1e-4), ("bfloat16", 0.15)):
            config = TransformerConfig(attention=attention, d_model=16, num_layers=2, d_ff=24, dtype=dtype)
            model = DecoderLM(config)
            tokens = jnp.asarray(np.random.default_rng(2).integers(0, 256, (2, 6)))
            params = random_params(model, tokens)
            caches = init_caches(config, 2, 8)
            assert all(leaf.dtype == jnp.dtype(dtype) for cache in caches for leaf in cache[:2])

            full, decoded = jax.jit(functools.partial(full_and_decoded, model))(params, tokens, caches)
            assert full.dtype == decoded.dtype == jnp.float32
            np.testing.assert_allclose(decoded, full, atol=atol)


@pytest.mark.parametrize("attention", [AttentionConfig(4, 8, 1, rope=ROPES["yarn"]), MLA_SHAPES["v_narrower"]], ids=["mqa", "mla"])
def test_decoder_lm_fused_logits_and_gradients_equal_reference_and_bf16_logits_are_float32(attention):
    config = TransformerConfig(attention=attention, d_model=16, num_layers=2, d_ff=24)
    tokens = jnp.asarray(np.random.default_rng(5).integers(0, 256, (2, 9)))
    fused, reference = DecoderLM(config), DecoderLM(dataclasses.replace(config, attention_impl="reference"))
    params = random_params(fused, tokens[:, :-1])
    np.testing.assert_allclose(fused.apply(params, tokens)[0], reference.apply(params, tokens)[0], atol=F32, rtol=F32)
    loss = lambda model: jax.grad(lambda p: jnp.mean(token_losses(model.apply, p, tokens)))(params)
    for g_fused, g_reference in zip(jax.tree.leaves(loss(fused)), jax.tree.leaves(loss(reference))):
        np.testing.assert_allclose(g_fused, g_reference, atol=F32, rtol=1e-4)
    bf16 = DecoderLM(dataclasses.replace(config, dtype="bfloat16"))
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(jax.eval_shape(bf16.init, jax.random.key(0), tokens)))
    logits16 = bf16.apply(params, tokens)[0]
    assert logits16.dtype == jnp.float32 and token_losses(bf16.apply, params, tokens).dtype == jnp.float32
    np.testing.assert_allclose(logits16, fused.apply(params, tokens)[0], atol=0.15)


def test_jvp_through_the_fused_xla_path_equals_jvp_through_the_reference():
    # forward-mode autodiff, as consistency / sCM / MeanFlow training takes through the network
    config = AttentionConfig(num_heads=4, head_dim=8, num_kv_heads=2, rope=ROPES["logn"])
    tangent = jax.random.normal(jax.random.key(3), X.shape)
    params = random_params(MultiHeadAttention(config), X)
    jvp_of = lambda layer: jax.jvp(lambda x: layer.apply(params, x)[0], (X,), (tangent,))
    out_ref, jvp_ref = jvp_of(MultiHeadAttention(config, attention_impl="reference"))
    for impl in (None, "xla"):
        out, jvp = jvp_of(MultiHeadAttention(config, attention_impl=impl))
        np.testing.assert_allclose(out, out_ref, atol=F32, rtol=F32)
        np.testing.assert_allclose(jvp, jvp_ref, atol=F32, rtol=1e-4)
    net, net_reference = both(CausalTransformer, out_features=4, max_len=T, width=16, depth=1, num_heads=2)
    params = random_params(net, X)
    _, jvp = jax.jvp(lambda x: net.apply(params, x), (X,), (tangent,))
    _, jvp_ref = jax.jvp(lambda x: net_reference.apply(params, x), (X,), (tangent,))
    np.testing.assert_allclose(jvp, jvp_ref, atol=F32, rtol=1e-4)


def test_causal_transformer_fused_equals_reference_and_its_cache_decodes_in_bf16():
    fields = dict(out_features=4, max_len=T, width=16, depth=2, num_heads=2, num_classes=2)
    labels = jnp.array([0, 2], jnp.int32)
    fused, reference = both(CausalTransformer, **fields)
    params = random_params(fused, X, labels, scale=0.5)  # the zero head would hide every difference
    np.testing.assert_allclose(fused.apply(params, X, labels), reference.apply(params, X, labels), atol=F32, rtol=F32)
    net16 = CausalTransformer(**fields, dtype=jnp.bfloat16)
    out16, cache = net16.apply(params, X, labels, return_cache=True)
    assert out16.dtype == jnp.float32 and all(leaf.dtype == jnp.bfloat16 for leaf in jax.tree.leaves(cache))
    np.testing.assert_allclose(out16, fused.apply(params, X, labels), atol=0.1, rtol=0.1)
    step, _ = net16.apply(params, X[:, -1:], labels, cache=cache, position=T - 1)
    np.testing.assert_allclose(step[:, 0], out16[:, -1], atol=BF16, rtol=BF16)


def test_bad_attention_impl_and_dtype_names_raise_before_tracing():
    config = AttentionConfig(num_heads=4, head_dim=8)
    with pytest.raises(ValueError, match="`attention_impl` must be one of"):
        MultiHeadAttention(config, attention_impl="flash")
    with pytest.raises(ValueError, match="`attention_impl` 'cudnn' needs dtype bfloat16"):
        MultiHeadAttention(config, attention_impl="cudnn")
    with pytest.raises(ValueError, match="`dtype` must be one of"):
        MultiHeadLatentAttention(MLA_SHAPES["v_narrower"], dtype="float8")
    with pytest.raises(ValueError, match="`param_dtype` must be one of"):
        MultiHeadLatentAttention(MLA_SHAPES["v_narrower"], param_dtype=jnp.int32)
    with pytest.raises(ValueError, match="`attention_impl` must be one of"):
        CausalTransformer(out_features=2, max_len=4, attention_impl="XLA")
    with pytest.raises(ValueError, match="`dtype` must be one of"):
        TransformerConfig(dtype="float64")
    with pytest.raises(ValueError, match="`attention_impl` 'cudnn' needs"):
        TransformerConfig(attention_impl="cudnn")
    MultiHeadAttention(config, dtype="bfloat16", attention_impl="cudnn")  # valid on paper (runs on NVIDIA GPUs)
    assert init_cache(config, 1, 4, jnp.bfloat16).k.dtype == jnp.bfloat16
