"""Streaming attention == dense attention with memory flat in the key length; linear attention recurrent == parallel."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given

from jaxlab.nn import linear_attention_parallel, linear_attention_recurrent, streaming_attention
from jaxlab.testing import assert_causal, dot_product_attention
from jaxlab.testing.strategies import arrays

RNG = np.random.default_rng(0)


def normal(*shape):
    return jnp.asarray(RNG.normal(size=shape), jnp.float32)


@pytest.mark.parametrize(
    ("t", "s", "heads", "kv", "block", "causal", "scale"),
    [
        (13, 13, 4, 2, 5, True, 1.0),  # self-attention, padded last block, GQA
        (3, 20, 2, 1, 8, True, 1.0),  # a chunk after 17 cached keys, MQA
        (3, 20, 2, 1, 8, True, 30.0),  # logits in the hundreds: the running max keeps exp finite
        (6, 11, 2, 2, 4, False, 1.0),  # bidirectional
    ],
)
def test_streaming_equals_dense(t, s, heads, kv, block, causal, scale):
    q, k, v = normal(2, t, heads, 8) * scale, normal(2, s, kv, 8) * scale, normal(2, s, kv, 6)
    got = streaming_attention(q, k, v, block_size=block, causal=causal)
    assert got.shape == (2, t, heads, 6) and np.all(np.isfinite(got))
    np.testing.assert_allclose(got, dot_product_attention(q, k, v, causal=causal), atol=2e-5 * scale**2)


@pytest.mark.parametrize("causal", [True, False])
def test_streaming_self_attention_is_causal_exactly_when_asked(causal):
    """Later tokens perturbed inside the same key block and in later blocks: no leak into earlier outputs."""
    x = normal(1, 11, 2, 4)
    attention = lambda x: streaming_attention(x, x, x, block_size=4, causal=causal)
    if causal:
        assert_causal(attention, x, rtol=0, atol=0)
    else:
        with pytest.raises(AssertionError, match="not causal"):
            assert_causal(attention, x)


_STREAMING = jax.jit(lambda q, k, v: streaming_attention(q, k, v, block_size=3))
_QUERIES = arrays((1, 4, 2, 4), min_value=-4, max_value=4)  # one shape each: one compilation
_KEYS = arrays((1, 7, 1, 4), min_value=-4, max_value=4)


@given(q=_QUERIES, k=_KEYS, v=_KEYS)
def test_streaming_equals_dense_on_drawn_values(q, k, v):
    np.testing.assert_allclose(_STREAMING(q, k, v), dot_product_attention(q, k, v, causal=True), atol=1e-5)


def test_linear_attention_is_causal():
    x = normal(1, 8, 2, 4)
    assert_causal(lambda x: linear_attention_parallel(x, x, x), x)
    assert_causal(lambda x: linear_attention_recurrent(x, x, x)[0], x)


def _temp_bytes(fn, *shapes):
    compiled = jax.jit(fn).lower(*[jax.ShapeDtypeStruct(s, jnp.float32) for s in shapes]).compile()
    return compiled.memory_analysis().temp_size_in_bytes


def test_working_memory_does_not_grow_with_the_key_length():
    def streaming(q, k, v):
        return streaming_attention(q, k, v, block_size=64)

    t, heads = 64, 2
    small, large = [(1, s, heads, 16) for s in (512, 4096)]
    streaming_small = _temp_bytes(streaming, (1, t, heads, 16), small, small)
    streaming_large = _temp_bytes(streaming, (1, t, heads, 16), large, large)
    assert streaming_large <= streaming_small * 1.05 + 1024  # flat in s
    assert streaming_large < t * 4096 * heads * 4  # below the dense float32 logits at s = 4096 alone


def test_validation_errors():
    with pytest.raises(ValueError, match="`block_size`"):
        streaming_attention(normal(1, 2, 1, 4), normal(1, 2, 1, 4), normal(1, 2, 1, 4), block_size=0)
    with pytest.raises(ValueError, match="queries align"):
        streaming_attention(normal(1, 5, 1, 4), normal(1, 2, 1, 4), normal(1, 2, 1, 4))
    with pytest.raises(ValueError, match="`q`"):
        streaming_attention(normal(2, 4), normal(1, 2, 1, 4), normal(1, 2, 1, 4))


def test_linear_attention_recurrent_equals_parallel_and_chunks_carry_the_state():
    q, k, v = normal(2, 10, 3, 4), normal(2, 10, 3, 4), normal(2, 10, 3, 5)
    first, carried = linear_attention_recurrent(q[:, :5], k[:, :5], v[:, :5])
    second, final = linear_attention_recurrent(q[:, 5:], k[:, 5:], v[:, 5:], carried)
    whole = jnp.concatenate([first, second], axis=1)
    np.testing.assert_allclose(whole, linear_attention_parallel(q, k, v), atol=1e-5)
    # oracle: y_t = φ(q_t)ᵀ Σ_{s≤t} φ(k_s) v_sᵀ / φ(q_t)ᵀ Σ_{s≤t} φ(k_s), and the state is those sums
    phi = lambda x: np.where(x > 0, x + 1, np.exp(x))
    fq, fk = phi(np.asarray(q[0, 7, 1], np.float64)), phi(np.asarray(k[0, :8, 1], np.float64))
    expected = (fq @ fk.T @ np.asarray(v[0, :8, 1])) / (fq @ fk.sum(0))
    np.testing.assert_allclose(whole[0, 7, 1], expected, rtol=1e-4)
    all_k = phi(np.asarray(k, np.float64))
    np.testing.assert_allclose(final.kv, np.einsum("bthd,bthe->bhde", all_k, np.asarray(v)), rtol=1e-4)
    np.testing.assert_allclose(final.k_sum, all_k.sum(1), rtol=1e-5)
