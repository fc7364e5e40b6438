"""jaxlab.testing.assert_causal passes causal maps and fails non-causal ones, at the position where they leak."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab.testing import assert_causal

X = jnp.asarray(np.random.default_rng(0).normal(size=(2, 6, 3)), jnp.float32)


def causal_attention(x):
    return jax.nn.dot_product_attention(x[:, :, None], x[:, :, None], x[:, :, None], is_causal=True)[:, :, 0]


def test_causal_maps_pass():
    assert_causal(lambda x: jnp.cumsum(x, axis=1), X)
    assert_causal(causal_attention, X)
    causal_conv = lambda x: x + 0.5 * jnp.pad(x, ((0, 0), (1, 0), (0, 0)))[:, :-1]
    assert_causal(causal_conv, X, positions=[0, 4], rtol=0, atol=0)


@pytest.mark.parametrize(
    "fn",
    [
        lambda x: jnp.cumsum(x[:, ::-1], axis=1)[:, ::-1],  # anti-causal
        lambda x: jax.nn.dot_product_attention(x[:, :, None], x[:, :, None], x[:, :, None])[:, :, 0],  # bidirectional
        lambda x: x - jnp.mean(x, axis=1, keepdims=True),  # normalization over time
    ],
    ids=["reversed_cumsum", "bidirectional", "time_norm"],
)
def test_non_causal_maps_fail(fn):
    with pytest.raises(AssertionError, match="not causal: perturbing input positions > 0"):
        assert_causal(fn, X)


def test_an_off_by_one_leak_is_caught_at_the_position_it_happens():
    def leaks_at_three(x):
        ahead = jnp.roll(x, -1, axis=1)  # position i sees i + 1 ...
        return jnp.where((jnp.arange(6) == 3)[None, :, None], ahead, x)  # ... at i = 3 only

    with pytest.raises(AssertionError, match=r"positions > 3 \(axis 1\) changed output at positions <= 3"):
        assert_causal(leaks_at_three, X)
    assert_causal(leaks_at_three, X, positions=[0, 1, 2, 4])  # the leak is invisible elsewhere


def test_pytree_outputs_another_output_axis_integer_tokens_and_bfloat16():
    def two_outputs(x):
        y = jnp.cumsum(x, axis=1)
        return {"y": y, "transposed": jnp.swapaxes(y, 0, 1), "nothing": None}

    with pytest.raises(AssertionError, match=r"\['transposed'\]"):  # it carries time on axis 0
        assert_causal(two_outputs, X)
    assert_causal(lambda x: jnp.swapaxes(jnp.cumsum(x, 1), 0, 1), X, out_axis=0)
    tokens = jnp.asarray(np.random.default_rng(1).integers(0, 10, (2, 7)))
    table = jnp.asarray(np.random.default_rng(2).normal(size=(10, 4)), jnp.float32)
    assert_causal(lambda t: jnp.cumsum(table[t], axis=1), tokens, positions=3)
    with pytest.raises(AssertionError):
        assert_causal(lambda t: jnp.cumsum(table[t][:, ::-1], axis=1), tokens)
    assert_causal(lambda x: jnp.cumsum(x, axis=1), X.astype(jnp.bfloat16), rtol=1e-2)
    assert_causal(lambda x: jnp.cumsum(x, axis=-1), X, axis=-1)


def test_sampled_positions_include_the_ends_and_a_custom_perturbation_is_used():
    calls = []

    def perturb(rng, later):
        calls.append(later.shape)
        return later + 1.0

    assert_causal(lambda x: jnp.cumsum(x, 1), X, positions=3, perturb=perturb, jit=False)
    assert calls[0] == (2, 5, 3) and calls[-1] == (2, 1, 3) and len(calls) == 3  # i = 0, one inner, i = t − 2


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="at least 2 positions"):
        assert_causal(lambda x: x, X[:, :1])
    with pytest.raises(ValueError, match="out of range"):
        assert_causal(lambda x: x, X, axis=3)
    with pytest.raises(ValueError, match=r"lie in \[0, 4\]"):
        assert_causal(lambda x: x, X, positions=[5])
    with pytest.raises(ValueError, match="single value"):
        assert_causal(lambda x: x, jnp.zeros((2, 4), jnp.int32))
    with pytest.raises(ValueError, match="keep the shape"):
        assert_causal(lambda x: x, X, perturb=lambda rng, later: later[:, :1])
