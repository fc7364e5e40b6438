"""KV caches: overflow raises (eagerly, and under jit through checkify); ragged batches with per-sequence indices."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab.nn import (
    AttentionConfig,
    CausalTransformer,
    MLAConfig,
    MultiHeadAttention,
    MultiHeadLatentAttention,
    init_cache,
    with_cache_checks,
)

FEATURES = 16
CONFIGS = {
    "gqa": AttentionConfig(num_heads=4, head_dim=8, num_kv_heads=2),
    "mla": MLAConfig(num_heads=4, kv_lora_rank=12, qk_nope_dim=6, qk_rope_dim=4, v_head_dim=5, mode="absorbed"),
}


def layer_and_params(kind):
    """The layer and Gaussian parameters of the right shapes (``init``'s RNG programs are slow to compile on CPU)."""
    config = CONFIGS[kind]
    layer = MultiHeadAttention(config) if kind == "gqa" else MultiHeadLatentAttention(config)
    rng = np.random.default_rng(0)
    shapes = jax.eval_shape(layer.init, jax.random.key(0), jnp.zeros((1, 3, FEATURES)))
    return config, layer, jax.tree.map(lambda s: jnp.asarray(rng.normal(size=s.shape) * 0.3, s.dtype), shapes)


def tokens(batch, length, seed=1):
    return jax.random.normal(jax.random.key(seed), (batch, length, FEATURES))


@pytest.mark.parametrize("kind", ["gqa", "mla"])
def test_writing_past_max_len_raises_eagerly_naming_max_len_and_the_length(kind):
    config, layer, params = layer_and_params(kind)
    decode = jax.jit(layer.apply)  # fills the cache; the eager calls below raise before computing anything
    x = tokens(1, 6)
    cache = init_cache(config, 1, 4)
    for i in range(4):
        _, cache = decode(params, x[:, i : i + 1], cache)
    assert int(cache.index) == 4
    with pytest.raises(ValueError, match=r"needs a cache of length 5, more than its max_len = 4"):
        layer.apply(params, x[:, 4:5], cache)  # the 5th of 6 tokens used to overwrite the last slot silently
    _, cache = decode(params, x[:, :2], init_cache(config, 1, 4))
    with pytest.raises(ValueError, match=r"at index 2 needs a cache of length 5, more than its max_len = 4"):
        layer.apply(params, x[:, 2:5], cache)  # a 3-token chunk after 2: each chunk fits, together they do not


@pytest.mark.parametrize("kind", ["gqa", "mla"])
def test_overflow_under_jit_is_an_error_of_the_checkified_decode(kind):
    config, layer, params = layer_and_params(kind)

    def decode(params, x, cache):  # one token per step of a lax.scan: the index is traced
        def step(cache, token):
            y, cache = layer.apply(params, token[:, None], cache)
            return cache, y[:, 0]

        return jax.lax.scan(step, cache, jnp.swapaxes(x, 0, 1))

    checked = jax.jit(with_cache_checks(decode))  # one compilation: only the traced index differs below
    x, cache = tokens(2, 6), init_cache(config, 2, 4)
    for chunk in (x[:, :2], x[:, 2:4]):
        error, (cache, _) = checked(params, chunk, cache)
        error.throw()  # tokens 1-4 fit
    assert int(cache.index) == 4
    error, _ = checked(params, x[:, 4:], cache)  # tokens 5 and 6
    with pytest.raises(Exception, match=r"needs a cache of length 5, more than max_len = 4"):
        error.throw()


def test_causal_transformer_decoding_past_its_cache_raises():
    net = CausalTransformer(out_features=2, max_len=4, width=8, depth=1, num_heads=2)
    params = jax.eval_shape(net.init, jax.random.key(0), jnp.zeros((1, 4, 2)))
    params = jax.tree.map(lambda s: jnp.full(s.shape, 0.1, s.dtype), params)
    step = lambda p, c, i: net.apply(p, jnp.zeros((1, 1, 2)), cache=c, position=i)
    _, cache = jax.jit(lambda p: net.apply(p, jnp.zeros((1, 4, 2)), return_cache=True))(params)
    with pytest.raises(ValueError, match=r"length 5, more than its max_len = 4"):
        step(params, cache, 4)  # eager: the position is concrete
    checked = jax.jit(with_cache_checks(step))
    checked(params, cache, 3)[0].throw()  # the last slot is fine
    error, _ = checked(params, cache, 4)
    with pytest.raises(Exception, match="max_len = 4"):
        error.throw()


PROMPTS = (5, 2, 3)  # real prompt tokens per sequence, right-padded to 5
STEPS = np.array([[1, 1, 1], [1, 0, 1], [1, 1, 1]], bool)  # decode steps × sequences; sequence 1 idles at step 1
MAX_LEN = 8  # = 5 + 3, the longest sequence


def ragged_batch():
    """Prompts (3, 5, F) with their mask, decode tokens (3 steps, 3, F), and each sequence's real tokens (NumPy)."""
    rng = np.random.default_rng(2)
    prompts = rng.normal(size=(3, 5, FEATURES)).astype(np.float32)
    steps = rng.normal(size=(3, 3, FEATURES)).astype(np.float32)  # (step, sequence, F)
    prompt_mask = np.arange(5)[None, :] < np.array(PROMPTS)[:, None]
    sequences = [np.concatenate([prompts[i, :n], steps[STEPS[:, i], i]]) for i, n in enumerate(PROMPTS)]
    return prompts, prompt_mask, steps, sequences


@pytest.mark.parametrize("kind", ["gqa", "mla"])
def test_ragged_batch_decodes_like_each_sequence_alone_and_like_masked_full_attention(kind):
    config, layer, params = layer_and_params(kind)
    apply = jax.jit(layer.apply)
    prompts, prompt_mask, steps, sequences = ragged_batch()

    # the ragged batch: one prefill of padded prompts, then one token per step (some sequences idle)
    cache = init_cache(config, 3, MAX_LEN, per_sequence=True)
    y, cache = apply(params, prompts, cache, mask=prompt_mask)
    np.testing.assert_array_equal(cache.index, PROMPTS)
    outputs = [[np.asarray(y)[i, :n]] for i, n in enumerate(PROMPTS)]
    for step, active in zip(steps, STEPS):
        y, cache = apply(params, step[:, None], cache, mask=active[:, None])
        for i in np.flatnonzero(active):
            outputs[i].append(np.asarray(y)[i])
    ragged = [np.concatenate(out) for out in outputs]
    np.testing.assert_array_equal(cache.index, [len(s) for s in sequences])

    # oracle 1: each sequence decoded alone, one token at a time (batch of one, shared scalar index, no padding)
    for i, sequence in enumerate(sequences):
        alone_cache, alone = init_cache(config, 1, MAX_LEN), []
        for token in sequence:
            y, alone_cache = apply(params, token[None, None], alone_cache)
            alone.append(np.asarray(y)[0])
        np.testing.assert_allclose(ragged[i], np.concatenate(alone), atol=2e-5, err_msg=f"sequence {i}")

    # oracle 2: full causal attention over the right-padded batch with a padding mask
    lengths = np.array([len(s) for s in sequences])
    padded = np.stack([np.pad(s, ((0, MAX_LEN - len(s)), (0, 0))) for s in sequences])
    full = np.asarray(apply(params, padded, mask=np.arange(MAX_LEN)[None, :] < lengths[:, None])[0])
    for i in range(len(sequences)):
        np.testing.assert_allclose(ragged[i], full[i, : lengths[i]], atol=2e-5, err_msg=f"sequence {i}")
    assert np.isfinite(full).all()  # padded rows keep their own key: no softmax over nothing


def test_padding_mask_is_validated():
    config, layer, params = layer_and_params("gqa")
    x = tokens(2, 3)
    ok = jnp.array([[True, True, False], [True, False, False]])
    with pytest.raises(ValueError, match=r"`mask` must be a bool array of shape \(2, 3\)"):
        layer.apply(params, x, mask=ok[:, :2])
    with pytest.raises(ValueError, match="`mask` must be right-padded"):
        layer.apply(params, x, mask=ok[:, ::-1])
    with pytest.raises(ValueError, match=r"per_sequence=True"):
        layer.apply(params, x, init_cache(config, 2, 4), mask=ok)
    with pytest.raises(ValueError, match=r"`cache.index` must have shape \(\) or \(2,\)"):
        layer.apply(params, x, init_cache(config, 2, 4)._replace(index=jnp.zeros(3, jnp.int32)))
