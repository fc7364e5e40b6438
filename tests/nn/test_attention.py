"""MHA / GQA / MQA: a dense NumPy oracle, GQA ≡ MHA with repeated heads, cached decoding, RoPE settings, the LM."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab.nn import (
    AttentionConfig,
    DecoderLM,
    MLAConfig,
    MultiHeadAttention,
    RopeConfig,
    TransformerConfig,
    greedy_generate,
    init_cache,
    init_caches,
    rectified_relative_positions,
    rope_frequencies,
    scaled_frequencies,
)
from jaxlab.nn.rope_scaling import SCALINGS, qk_scale
from jaxlab.testing import assert_causal, attention_from_logits

B, T, FEATURES, HEADS, DIM = 2, 9, 16, 4, 8
X = jax.random.normal(jax.random.key(0), (B, T, FEATURES))


def complex_pairs(x):
    half = x.shape[-1] // 2
    return x[..., :half] + 1j * x[..., half:]


def dense_oracle(params, x, config, frequencies, *, relative=None, query_scale=1.0):
    """Naive O(t²) attention in NumPy: logit = ⟨q_m, R_{−r(m,n)} k_n⟩ with r = m − n unless given."""
    p = jax.tree.map(np.asarray, params["params"])
    x = np.asarray(x, np.float64)
    group, d = config.num_heads // config.kv_heads, config.head_dim
    per_head = lambda w: w.reshape(w.shape[0], -1, d)  # (D, heads·d) -> (D, heads, d)
    q = np.einsum("btf,fhd->bthd", x, per_head(p["query"]["kernel"]))
    k = np.repeat(np.einsum("btf,fhd->bthd", x, per_head(p["key"]["kernel"])), group, axis=2)  # repeated kv heads
    v = np.einsum("btf,fhd->bthd", x, per_head(p["value"]["kernel"]))  # (b, t, kv, d)
    t = x.shape[1]
    r = np.arange(t)[:, None] - np.arange(t)[None, :] if relative is None else relative  # (t, s)
    phase = np.exp(1j * r[..., None] * np.asarray(frequencies, np.float64))  # (t, s, d/2)
    logits = np.einsum("bmhi,bnhi,mni->bhmn", complex_pairs(q), np.conj(complex_pairs(k)), phase).real
    logits = logits * qk_scale(config.rope) ** 2 / np.sqrt(config.head_dim) * np.reshape(query_scale, (-1, 1))
    out = attention_from_logits(logits, v, causal=True)  # (b, t, h, d)
    return out.reshape(out.shape[:2] + (-1,)) @ p["out"]["kernel"]


def random_params(module, *args, scale=0.3, seed=0):
    """Gaussian parameters of the right shapes (``init``'s RNG programs are slow to compile on CPU)."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(module.init, jax.random.key(0), *args)
    return jax.tree.map(lambda s: jnp.asarray(rng.normal(size=s.shape) * scale, s.dtype), shapes)


def make(config):
    layer = MultiHeadAttention(config)
    return layer, random_params(layer, X)


@pytest.mark.parametrize("kv_heads", [2, 1])  # GQA, MQA (MHA ≡ GQA with repeated kv heads, tested below)
def test_full_forward_matches_dense_oracle(kv_heads):
    config = AttentionConfig(HEADS, DIM, kv_heads)
    layer, params = make(config)
    y, cache = layer.apply(params, X)
    assert cache is None and y.shape == X.shape
    np.testing.assert_allclose(y, dense_oracle(params, X, config, rope_frequencies(DIM)), atol=2e-5)


def test_gqa_with_as_many_kv_heads_as_heads_is_mha_and_gqa_is_mha_with_repeated_kv():
    mha, params = make(AttentionConfig(HEADS, DIM))
    explicit = MultiHeadAttention(AttentionConfig(HEADS, DIM, num_kv_heads=HEADS))
    np.testing.assert_array_equal(explicit.apply(params, X)[0], mha.apply(params, X)[0])
    gqa, gqa_params = make(AttentionConfig(HEADS, DIM, 2))
    repeated = jax.tree.map(lambda a: a, gqa_params)
    for name in ("key", "value"):  # kv head j serves query heads 2j, 2j + 1
        kernel = gqa_params["params"][name]["kernel"].reshape(FEATURES, 2, DIM)
        repeated["params"][name]["kernel"] = jnp.repeat(kernel, 2, axis=1).reshape(FEATURES, HEADS * DIM)
    np.testing.assert_allclose(mha.apply(repeated, X)[0], gqa.apply(gqa_params, X)[0], atol=1e-5)


@pytest.mark.parametrize("causal", [True, False])
def test_the_layer_is_causal_exactly_when_configured(causal):
    layer, params = make(AttentionConfig(HEADS, DIM, 2, causal=causal))
    forward = lambda x: layer.apply(params, x)[0]
    if causal:
        assert_causal(forward, X, positions=4)
    else:
        with pytest.raises(AssertionError, match="not causal"):
            assert_causal(forward, X, positions=[0])


def test_shifting_all_positions_leaves_rope_attention_unchanged():
    """RoPE is relative: per-example offsets of the (b, t) positions change nothing."""
    layer, params = make(AttentionConfig(HEADS, DIM, 2))
    shifted = jnp.arange(T)[None, :] + jnp.array([[7], [1000]])  # (b, t)
    np.testing.assert_allclose(layer.apply(params, X, positions=shifted)[0], layer.apply(params, X)[0], atol=1e-4)


def decode_all(apply, params, x, cache, prefill):
    """Prefill ``prefill`` tokens, then one token per call; returns the outputs of all positions."""
    y, cache = apply(params, x[:, :prefill], cache)
    outputs = [y]
    for i in range(prefill, x.shape[1]):
        y, cache = apply(params, x[:, i : i + 1], cache)
        outputs.append(y)
    return jnp.concatenate(outputs, axis=1), cache


@pytest.mark.parametrize("kv_heads", [4, 2, 1])
def test_cached_decoding_matches_full_forward(kv_heads):
    config = AttentionConfig(HEADS, DIM, kv_heads, rope=RopeConfig(scaling="yarn", factor=2.0, original_length=8))
    layer, params = make(config)
    full, _ = layer.apply(params, X)
    cache = init_cache(config, B, 12)
    decoded, cache = decode_all(jax.jit(layer.apply), params, X, cache, prefill=3)
    np.testing.assert_allclose(decoded, full, atol=2e-5)
    assert int(cache.index) == T and cache.k.shape == (B, kv_heads, DIM, 12) and cache.v.shape == (B, kv_heads, 12, DIM)


def test_non_causal_cache_masks_unwritten_slots():
    config = AttentionConfig(HEADS, DIM, 2, causal=False)
    layer, params = make(config)
    full, _ = layer.apply(params, X)
    y, _ = layer.apply(params, X, init_cache(config, B, 16))
    np.testing.assert_allclose(y, full, atol=2e-5)


@pytest.mark.parametrize("scaling", SCALINGS)
def test_every_rope_setting_at_factor_one_is_plain_rope_in_the_layer(scaling):
    plain_layer, params = make(AttentionConfig(HEADS, DIM, 2))
    rope = RopeConfig(scaling=scaling, factor=1.0, original_length=T, window=T)  # ReRoPE window covers the input
    layer = MultiHeadAttention(AttentionConfig(HEADS, DIM, 2, rope=rope))
    np.testing.assert_allclose(layer.apply(params, X)[0], plain_layer.apply(params, X)[0], atol=1e-5)


@pytest.mark.parametrize(
    "rope",
    [
        RopeConfig(scaling="pi", factor=3.0),
        RopeConfig(scaling="ntk", factor=3.0),
        RopeConfig(scaling="dynamic_ntk", factor=4.0, original_length=4),
        RopeConfig(scaling="yarn", factor=4.0, original_length=4),
        RopeConfig(logn=True, original_length=3),
    ],
    ids=["pi", "ntk", "dynamic_ntk", "yarn", "logn"],
)
def test_scaled_rope_matches_oracle(rope):
    config = AttentionConfig(HEADS, DIM, 2, rope=rope)
    layer, params = make(config)
    scale = np.maximum(1.0, np.log(np.arange(T) + 1.0) / np.log(rope.original_length)) if rope.logn else 1.0
    expected = dense_oracle(params, X, config, scaled_frequencies(rope, DIM, length=T), query_scale=scale)
    np.testing.assert_allclose(layer.apply(params, X)[0], expected, atol=2e-5)


@pytest.mark.parametrize("scaling", ["rerope", "leaky_rerope"])
def test_rerope_layer_matches_oracle_with_clipped_relative_positions(scaling):
    rope = RopeConfig(scaling=scaling, window=3, leaky_k=4.0)
    config = AttentionConfig(HEADS, DIM, 2, rope=rope)
    layer, params = make(config)
    relative = np.arange(T)[:, None] - np.arange(T)[None, :]
    clipped = np.asarray(rectified_relative_positions(jnp.asarray(relative, jnp.float32), window=3, slope=rope.slope))
    expected = dense_oracle(params, X, config, rope_frequencies(DIM), relative=clipped)
    np.testing.assert_allclose(layer.apply(params, X)[0], expected, atol=2e-5)
    with pytest.raises(ValueError, match="ReRoPE"):
        layer.apply(params, X, init_cache(config, B, 16))


def test_validation_errors_name_the_argument():
    layer, params = make(AttentionConfig(HEADS, DIM, 2))
    with pytest.raises(ValueError, match="`x` must have shape"):
        layer.apply(params, X[0])
    with pytest.raises(ValueError, match="`cache`"):
        layer.apply(params, X, init_cache(AttentionConfig(HEADS, DIM, 1), B, 16))
    with pytest.raises(ValueError, match="max_len"):
        layer.apply(params, X, init_cache(AttentionConfig(HEADS, DIM, 2), B, 4))
    with pytest.raises(ValueError, match="`num_kv_heads`"):
        AttentionConfig(HEADS, DIM, 3)
    with pytest.raises(ValueError, match="`batch`"):
        init_cache(AttentionConfig(HEADS, DIM), 0, 4)
    caches = init_caches(TransformerConfig(attention=AttentionConfig(HEADS, DIM)), 1, 5)
    with pytest.raises(ValueError, match="`caches` hold 5 tokens"):
        greedy_generate(None, None, jnp.zeros((1, 4), jnp.int32), caches, steps=2)
    with pytest.raises(ValueError, match="`prompt`"):
        greedy_generate(None, None, jnp.zeros((1, 4)), caches, steps=1)


def decode_one_by_one(model, params, tokens, caches):
    """Logits of every position from a ``lax.scan`` of one-token calls starting from empty caches."""

    def step(caches, token):
        step_logits, caches = model.apply(params, token[:, None], caches)
        return caches, step_logits[:, 0]

    _, logits = jax.lax.scan(step, caches, tokens.T)  # (t, b, V)
    return logits.transpose(1, 0, 2)


def test_language_model_cached_decoding_matches_full_forward():
    # the layers' own tests cover every variant and prefill; here the LM's per-layer caches (MLA, absorbed)
    attention = MLAConfig(4, 12, 8, 4, 8, q_lora_rank=10, mode="absorbed")
    config = TransformerConfig(attention=attention, d_model=16, num_layers=2, d_ff=24)
    model = DecoderLM(config)
    tokens = jnp.asarray(np.random.default_rng(2).integers(0, 256, (2, 6)))
    params = random_params(model, tokens)

    @jax.jit
    def full_and_decoded(params, tokens):
        return model.apply(params, tokens)[0], decode_one_by_one(model, params, tokens, init_caches(config, 2, 6))

    full, decoded = full_and_decoded(params, tokens)
    np.testing.assert_allclose(decoded, full, atol=1e-4)


def test_language_model_logits_are_causal_in_the_tokens():
    config = TransformerConfig(attention=AttentionConfig(4, 8, 2), d_model=16, num_layers=2, d_ff=24)
    model = DecoderLM(config)
    tokens = np.random.default_rng(3).integers(0, 256, (2, 6))
    params = random_params(model, tokens)
    new_tokens = lambda rng, later: (later + rng.integers(1, 256, later.shape)) % 256
    assert_causal(lambda tokens: model.apply(params, tokens)[0], tokens, perturb=new_tokens, positions=3, atol=1e-5)


def test_greedy_generation_matches_the_full_forward_argmax():
    rope = RopeConfig(scaling="dynamic_ntk", factor=2.0, original_length=4)
    config = TransformerConfig(attention=AttentionConfig(4, 8, 2, rope=rope), d_model=16, num_layers=2, d_ff=24)
    model = DecoderLM(config)

    prompt = jnp.asarray(np.random.default_rng(4).integers(0, 256, (2, 3)))
    params = random_params(model, prompt, scale=1.0)  # sharp logits: distinct argmaxes

    @jax.jit
    def generate_and_check(params, prompt):
        caches = init_caches(config, 2, 7)  # as long as the full sequence: the same dynamic-NTK factor
        tokens, _ = greedy_generate(model.apply, params, prompt, caches, steps=4)
        logits, _ = model.apply(params, jnp.concatenate([prompt, tokens], axis=1))
        return tokens, jnp.argmax(logits[:, 2:-1], axis=-1)  # the model's choice after each prefix

    tokens, choices = generate_and_check(params, prompt)
    assert len(np.unique(np.asarray(tokens))) > 1
    np.testing.assert_array_equal(tokens, choices)


def test_with_rope_keeps_parameters_compatible():
    config = TransformerConfig(attention=AttentionConfig(4, 8, 2), d_model=16, num_layers=1, d_ff=24)
    extended = config.with_rope(RopeConfig(scaling="yarn", factor=4.0, original_length=4))
    assert extended.attention.rope.scaling == "yarn" and dataclasses.replace(extended.attention, rope=RopeConfig()) == config.attention
