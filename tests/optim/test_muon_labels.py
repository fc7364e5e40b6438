"""Default Muon/AdamW routing on a realistic Flax transformer tree, and the dimension-number helpers."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

import jaxlab.optim as jo


class Block(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = nn.LayerNorm()(x)
        x = x + nn.MultiHeadDotProductAttention(num_heads=2, qkv_features=8)(h, h)
        h = nn.LayerNorm()(x)
        return x + nn.Dense(8)(nn.gelu(nn.Dense(32)(h)))


class TinyGPT(nn.Module):
    @nn.compact
    def __call__(self, tokens, image):
        x = nn.Embed(11, 8)(tokens)
        x = x + self.param("wpe", nn.initializers.normal(0.02), (6, 8))
        x = x + nn.Conv(8, (3, 3))(image).mean(axis=(1, 2))[:, None, :]
        x = nn.DenseGeneral((2, 4))(x).reshape(x.shape)
        x = Block()(x)
        x = nn.LayerNorm()(x)
        return nn.Dense(11, name="lm_head")(x), nn.Dense(3, name="head_1")(x)


@pytest.fixture(scope="module")
def params():
    tokens, image = jnp.zeros((1, 6), jnp.int32), jnp.zeros((1, 5, 5, 3))
    return jax.eval_shape(TinyGPT().init, jax.random.key(0), tokens, image)["params"]


def flat(tree):
    leaves = jax.tree_util.tree_leaves_with_path(tree)
    return {jax.tree_util.keystr(p, simple=True, separator="/"): v for p, v in leaves}


def test_default_routing(params):
    labels = flat(jo.muon_labels(params))
    muon = {k for k, v in labels.items() if v == "muon"}
    assert muon == {"Block_0/Dense_0/kernel", "Block_0/Dense_1/kernel"}
    assert labels["Embed_0/embedding"] == "adam" and labels["wpe"] == "adam"
    assert labels["lm_head/kernel"] == "adam" and labels["head_1/kernel"] == "adam"
    assert labels["Block_0/MultiHeadDotProductAttention_0/query/kernel"] == "adam"  # rank 3, no dims
    assert labels["Conv_0/kernel"] == "adam" and labels["Block_0/LayerNorm_0/scale"] == "adam"


def test_routing_with_flax_dimension_numbers(params):
    dims = flat(jo.flax_dimension_numbers(params))
    labels = flat(jo.muon_labels(params, jo.flax_dimension_numbers))
    attn = "Block_0/MultiHeadDotProductAttention_0"
    assert dims[f"{attn}/query/kernel"] == jo.DimensionNumbers(0, (1, 2))  # (embed, heads, head_dim)
    assert dims[f"{attn}/out/kernel"] == jo.DimensionNumbers((0, 1), 2)  # (heads, head_dim, embed)
    assert dims["Conv_0/kernel"] == jo.DimensionNumbers((0, 1, 2), 3)
    assert dims["DenseGeneral_0/kernel"] == jo.DimensionNumbers(0, (1, 2))
    for name in ("query", "key", "value", "out"):
        assert labels[f"{attn}/{name}/kernel"] == "muon"
    assert labels["Conv_0/kernel"] == "muon"
    assert labels["DenseGeneral_0/kernel"] == "muon"
    assert labels["lm_head/kernel"] == "adam" and labels["Embed_0/embedding"] == "adam"
    assert labels[f"{attn}/query/bias"] == "adam"  # rank 2 (heads, head_dim), but a bias


def test_muon_traces_on_the_flax_tree(params):
    tx = jo.muon(1e-2, dimension_numbers=jo.flax_dimension_numbers, spectral_decay_rate=1e-3)
    state = jax.eval_shape(tx.init, params)
    updates, new_state = jax.eval_shape(tx.update, params, state, params)  # traces every branch, no compile
    assert jax.tree.map(lambda u: (u.shape, u.dtype), updates) == jax.tree.map(lambda p: (p.shape, p.dtype), params)
    assert jax.tree.structure(new_state) == jax.tree.structure(state)


@pytest.mark.parametrize(
    ("component", "expected"),
    [
        ("Embed_0", True),
        ("embedding", True),
        ("wte", True),
        ("wpe", True),
        ("lm_head", True),
        ("head_1", True),
        ("Head", True),
        ("unembed", True),
        ("MultiHeadDotProductAttention_0", False),
        ("heads", False),
        ("head_dim", False),
        ("embed_proj", False),
    ],
)
def test_embedding_or_head_names(component, expected):
    assert jo.is_embedding_or_head(f"params/{component}/kernel") is expected


def test_dimension_number_helpers():
    assert jo.conv_dimension_numbers(3) == jo.DimensionNumbers((0, 1), 2)
    assert jo.dense_general_dimension_numbers(4, num_in_axes=2, num_batch_axes=1) == jo.DimensionNumbers((1, 2), 3)
    with pytest.raises(ValueError, match="num_in_axes"):
        jo.dense_general_dimension_numbers(2, num_in_axes=2)
    with pytest.raises(ValueError, match="reduction"):
        jo.DimensionNumbers((), 1)


def test_mismatched_dimension_numbers_name_the_path(params):
    bad = jax.tree.map(lambda _: None, params)
    bad["Conv_0"]["kernel"] = jo.DimensionNumbers(0, 5)
    with pytest.raises(ValueError, match="Conv_0/kernel"):
        jo.muon_labels(params, bad)
    bad["Conv_0"]["kernel"] = "rows"
    with pytest.raises(ValueError, match="Conv_0/kernel"):
        jo.muon_labels(params, bad)
    with pytest.raises(ValueError, match="Conv_0/bias"):
        jo.muon_labels(params, lambda p: {"Conv_0": {"bias": jo.DimensionNumbers(), "kernel": None}})
