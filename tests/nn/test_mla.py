"""MLA: a dense NumPy oracle, naive == absorbed == full forward at every decode step, cache sizes."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from jaxlab.nn import (
    DEEPSEEK_V2,
    AttentionConfig,
    LatentCache,
    MLAConfig,
    MultiHeadLatentAttention,
    RopeConfig,
    cache_bytes,
    cache_bytes_per_token,
    cache_size_per_token,
    init_cache,
    scaled_frequencies,
)
from jaxlab.nn.rope_scaling import qk_scale
from jaxlab.testing import assert_causal, mla_attention

B, T, FEATURES = 2, 7, 16
X = jax.random.normal(jax.random.key(0), (B, T, FEATURES))
SMALL = MLAConfig(num_heads=4, kv_lora_rank=12, qk_nope_dim=6, qk_rope_dim=4, v_head_dim=5, q_lora_rank=10)


def random_params(module, *args, scale=0.3, seed=0):
    """Gaussian parameters of the right shapes (``init``'s RNG programs are slow to compile on CPU)."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(module.init, jax.random.key(0), *args)
    return jax.tree.map(lambda s: jnp.asarray(rng.normal(size=s.shape) * scale, s.dtype), shapes)


def mla_oracle(params, x, config):
    """DeepSeek-V2 eqs. (9)–(19) written out with explicit per-head keys [k_C; k_R], in float64."""
    return mla_attention(
        params,
        x,
        num_heads=config.num_heads,
        kv_lora_rank=config.kv_lora_rank,
        qk_nope_dim=config.qk_nope_dim,
        frequencies=scaled_frequencies(config.rope, config.qk_rope_dim, length=x.shape[1]),
        scale=qk_scale(config.rope) ** 2 / np.sqrt(config.qk_head_dim),
        causal=config.causal,
        norm_eps=config.norm_eps,
    )


@pytest.mark.parametrize(("q_lora_rank", "mode"), [(None, "naive"), (10, "absorbed")])
def test_full_forward_matches_dense_oracle(q_lora_rank, mode):
    config = dataclasses.replace(SMALL, q_lora_rank=q_lora_rank, mode=mode)
    layer = MultiHeadLatentAttention(config)
    params = random_params(layer, X)
    y, cache = layer.apply(params, X)
    assert cache is None and y.shape == X.shape
    np.testing.assert_allclose(y, mla_oracle(params, X, config), atol=2e-5)


def test_absorbed_equals_naive_equals_full_forward_at_every_decode_step():
    config = dataclasses.replace(SMALL, rope=RopeConfig(scaling="yarn", factor=4.0, original_length=4))
    naive = MultiHeadLatentAttention(dataclasses.replace(config, mode="naive"))
    absorbed = MultiHeadLatentAttention(dataclasses.replace(config, mode="absorbed"))
    params = random_params(naive, X)
    prefill, max_len = 3, 10

    def decode(layer, params):
        y, cache = layer.apply(params, X[:, :prefill], init_cache(config, B, max_len))

        def step(cache, x_t):
            y_t, cache = layer.apply(params, x_t[:, None], cache)
            return cache, y_t[:, 0]

        cache, rest = jax.lax.scan(step, cache, jnp.moveaxis(X[:, prefill:], 1, 0))
        return jnp.concatenate([y, jnp.moveaxis(rest, 0, 1)], axis=1), cache

    @jax.jit
    def everything(params):
        full = naive.apply(params, X)[0]
        return full, decode(naive, params), decode(absorbed, params)

    full, (by_naive, naive_cache), (by_absorbed, absorbed_cache) = everything(params)
    np.testing.assert_allclose(full, mla_oracle(params, X, dataclasses.replace(config, mode="naive")), atol=2e-5)
    np.testing.assert_allclose(by_naive, full, atol=2e-5)  # every decode step, not only the last
    np.testing.assert_allclose(by_absorbed, full, atol=2e-5)
    np.testing.assert_allclose(by_absorbed, by_naive, atol=2e-5)
    assert int(naive_cache.index) == T
    np.testing.assert_allclose(absorbed_cache.c_kv, naive_cache.c_kv, atol=1e-6)
    empty = init_cache(config, B, max_len)
    assert jax.tree.map(jnp.shape, absorbed_cache) == jax.tree.map(jnp.shape, empty)  # the arrays counted below


@pytest.mark.parametrize("mode", ["naive", "absorbed"])
def test_the_layer_is_causal_and_its_non_causal_variant_matches_the_oracle(mode):
    layer = MultiHeadLatentAttention(dataclasses.replace(SMALL, mode=mode))
    params = random_params(layer, X)
    assert_causal(lambda x: layer.apply(params, x)[0], X, positions=3)
    bidirectional = dataclasses.replace(SMALL, mode=mode, causal=False)
    y = MultiHeadLatentAttention(bidirectional).apply(params, X)[0]
    np.testing.assert_allclose(y, mla_oracle(params, X, bidirectional), atol=2e-5)


def test_deepseek_v2_cache_is_576_values_per_token_against_32768_for_mha():
    assert cache_size_per_token(DEEPSEEK_V2) == 576 == DEEPSEEK_V2.kv_lora_rank + DEEPSEEK_V2.qk_rope_dim
    assert cache_size_per_token(AttentionConfig(num_heads=128, head_dim=128)) == 32_768 == 2 * 128 * 128


@given(
    heads=st.sampled_from([2, 4, 8, 16]),
    head_dim=st.sampled_from([8, 64, 128]),
    groups=st.sampled_from([1, 2, 4]),
    latent=st.integers(1, 1024),
    rope_dim=st.sampled_from([2, 16, 64]),
)
def test_cache_sizes_equal_the_formulas(heads, head_dim, groups, latent, rope_dim):
    kv = max(heads // groups, 1)
    assert cache_size_per_token(AttentionConfig(heads, head_dim)) == 2 * heads * head_dim
    assert cache_size_per_token(AttentionConfig(heads, head_dim, kv)) == 2 * kv * head_dim
    assert cache_size_per_token(AttentionConfig(heads, head_dim, 1)) == 2 * head_dim
    mla = MLAConfig(heads, latent, head_dim, rope_dim, head_dim)
    assert cache_size_per_token(mla) == latent + rope_dim
    assert cache_bytes_per_token(mla, jnp.bfloat16) == 2 * (latent + rope_dim)


def test_benchmark_dims_cache_ratio_is_exact():
    mha = AttentionConfig(num_heads=16, head_dim=64)
    mla = MLAConfig(num_heads=16, kv_lora_rank=128, qk_nope_dim=64, qk_rope_dim=32, v_head_dim=64)
    assert cache_bytes_per_token(mla) / cache_bytes_per_token(mha) == (128 + 32) / (2 * 16 * 64)
    assert cache_bytes(init_cache(mla, 2, 8)) * 2 * 16 * 64 == cache_bytes(init_cache(mha, 2, 8)) * (128 + 32)
    assert isinstance(init_cache(mla, 1, 1), LatentCache)


def test_validation_errors_name_the_argument():
    with pytest.raises(ValueError, match="`qk_rope_dim`"):
        MLAConfig(qk_rope_dim=3)
    with pytest.raises(ValueError, match="`mode`"):
        MLAConfig(mode="fused")
    with pytest.raises(ValueError, match="ReRoPE"):
        MLAConfig(rope=RopeConfig(scaling="rerope"))
    layer = MultiHeadLatentAttention(SMALL)
    params = random_params(layer, X)
    with pytest.raises(ValueError, match="`cache`"):
        layer.apply(params, X, init_cache(dataclasses.replace(SMALL, kv_lora_rank=8), B, 8))
    with pytest.raises(ValueError, match="`x` must have shape"):
        layer.apply(params, X[0])
