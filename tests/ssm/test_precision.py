"""The S4 models' precision policy: bf16 projections, float32 SSM parameters, kernels, FFTs and logits."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab.ssm import SSM_PARAM_NAMES, S4Block, SSMAutoregressive, SSMClassifier

B, L, H, N = 2, 16, 8, 8
X = jax.random.uniform(jax.random.key(1), (B, L))
TOKENS = jax.random.randint(jax.random.key(2), (B, L), 0, 7)


def leaves_by_name(tree) -> dict[str, list]:
    named: dict[str, list] = {}
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        named.setdefault(path[-1].key, []).append(leaf)
    return named


def perturbed(params):
    rng = np.random.default_rng(0)
    return jax.tree.map(lambda leaf: leaf + jnp.asarray(0.05 * rng.normal(size=leaf.shape), leaf.dtype), params)


def lines_with(text: str, op: str) -> list[str]:
    return [line for line in text.splitlines() if re.search(rf"stablehlo\.{op}\b", line)]


@pytest.mark.parametrize("kind", ["s4d", "s4"])
def test_classifier_bfloat16_projects_in_bf16_and_convolves_in_float32(kind):
    kwargs = {"num_classes": 5, "d_model": H, "n_layers": 2, "d_state": N, "kind": kind, "l_max": L if kind == "s4" else None}
    net, low = SSMClassifier(**kwargs), SSMClassifier(**kwargs, dtype="bfloat16")
    params = perturbed(low.init(jax.random.key(0), X))
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(params))
    logits, reference = jax.jit(low.apply)(params, X), jax.jit(net.apply)(params, X)
    assert logits.dtype == jnp.float32
    # 8 mantissa bits in the encoder, two GLU projections and the decoder: within 5% of the logits' scale
    assert np.abs(logits - reference).max() <= 0.05 * np.abs(reference).max()
    text = jax.jit(low.apply).lower(params, X).as_text()
    assert sum("bf16" in line for line in lines_with(text, "dot_general")) >= 2 + 1  # the blocks' projections, the decoder
    ffts = lines_with(text, "fft")
    assert ffts and not any("bf16" in line for line in ffts)  # the convolution stays float32 / complex64


def test_block_bfloat16_keeps_the_ssm_parameters_float32_and_returns_its_dtype():
    block = S4Block(H, d_state=N, dtype=jnp.bfloat16, param_dtype=jnp.bfloat16)
    u = jax.random.normal(jax.random.key(3), (B, L, H))
    params = block.init(jax.random.key(0), u)
    named = leaves_by_name(params)
    for name in (*SSM_PARAM_NAMES - {"P"}, "C", "D"):
        assert all(leaf.dtype == jnp.float32 for leaf in named[name]), name
    assert all(leaf.dtype == jnp.bfloat16 for leaf in named["kernel"] + named["scale"])
    out, state = block.apply(params, u, capture_intermediates=True)
    assert out.dtype == jnp.bfloat16
    assert state["intermediates"]["norm"]["__call__"][0].dtype == jnp.float32  # LayerNorm statistics in float32


def test_autoregressive_bfloat16_logits_are_float32_and_the_decode_step_agrees():
    low = SSMAutoregressive(vocab_size=7, d_model=H, n_layers=1, d_state=N, dtype="bfloat16")
    params = perturbed(low.init(jax.random.key(0), TOKENS))
    logits = jax.jit(low.apply)(params, TOKENS)
    reference = SSMAutoregressive(vocab_size=7, d_model=H, n_layers=1, d_state=N).apply(params, TOKENS)
    assert logits.dtype == jnp.float32
    assert np.abs(logits - reference).max() <= 0.05 * np.abs(reference).max()
    out, _ = low.apply(params, TOKENS[:, 0], low.initial_state(B), method=low.step)
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(out, logits[:, 0], atol=0.05 * np.abs(reference).max())


@pytest.mark.parametrize(
    "net",
    [
        SSMClassifier(num_classes=3, d_model=H, n_layers=1, d_state=N, dtype="float64"),
        SSMClassifier(num_classes=3, d_model=H, n_layers=1, d_state=N, param_dtype="int8"),
        SSMAutoregressive(vocab_size=7, d_model=H, n_layers=1, d_state=N, dtype="half-ish"),
        S4Block(H, d_state=N, dtype=jnp.float64),
    ],
    ids=["classifier_dtype", "classifier_param_dtype", "autoregressive_dtype", "block_dtype"],
)
def test_bad_dtype_names_are_named(net):
    field = "param_dtype" if net.param_dtype != jnp.float32 else "dtype"
    x = TOKENS if isinstance(net, SSMAutoregressive) else (X[..., None].repeat(H, -1) if isinstance(net, S4Block) else X)
    with pytest.raises(ValueError, match=rf"`{field}` must be one of \('float32', 'bfloat16', 'float16'\); got"):
        jax.eval_shape(net.init, jax.random.key(0), x)
