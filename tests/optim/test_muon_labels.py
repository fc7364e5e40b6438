"""Default Muon/AdamW routing on a realistic Flax transformer tree, its table, and the dimension-number helpers."""

import warnings

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

import jaxlab.optim as jo
import jaxlab.optim.labels as labels_module
from jaxlab.ssm import SSM


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


@pytest.mark.filterwarnings("ignore::jaxlab.optim.MuonFallbackWarning")
def test_default_routing(params):
    labels = flat(jo.muon_labels(params))
    muon = {k for k, v in labels.items() if v == "muon"}
    attn = "Block_0/MultiHeadDotProductAttention_0"
    kernels = {f"{attn}/{name}/kernel" for name in ("query", "key", "value", "out")}  # by their known layout
    assert muon == {"Block_0/Dense_0/kernel", "Block_0/Dense_1/kernel"} | kernels
    assert labels["Embed_0/embedding"] == "adam" and labels["wpe"] == "adam"
    assert labels["lm_head/kernel"] == "adam" and labels["head_1/kernel"] == "adam"
    assert labels["Conv_0/kernel"] == "adam" and labels["DenseGeneral_0/kernel"] == "adam"  # rank > 2, no dims
    assert labels["Block_0/LayerNorm_0/scale"] == "adam" and labels[f"{attn}/query/bias"] == "adam"


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
        ("lm_out", True),
        ("pos_emb", True),
        ("tok_embedding", True),
        ("out", False),
        ("output_proj", False),
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


# --- describe_routing: the table of the default routing -----------------------------------------


class Heads(nn.Module):
    """A head named ``lm_out``, a positional table ``pos_emb``, an S4D layer and a Linen attention."""

    @nn.compact
    def __call__(self, tokens):
        x = nn.Embed(11, 8, name="tok")(tokens) + self.param("pos_emb", nn.initializers.normal(0.02), (6, 8))
        x = x + SSM(features=8, d_state=4, name="ssm")(x)
        x = x + nn.MultiHeadDotProductAttention(num_heads=2, qkv_features=8, out_features=8, name="attn")(x, x)
        x = nn.Dense(16, name="mlp")(x)
        return nn.Dense(11, name="lm_out")(x)


@pytest.fixture(scope="module")
def rows():
    params = jax.eval_shape(Heads().init, jax.random.key(0), jnp.zeros((1, 6), jnp.int32))["params"]
    return {row.path: row for row in jo.describe_routing(params)}, params


def test_describe_routing_rows(rows):
    table, params = rows
    assert table["lm_out/kernel"] == jo.RoutingRow("lm_out/kernel", (16, 11), "adam", "embedding/head name 'lm_out'")
    assert table["pos_emb"].label == "adam" and "pos_emb" in table["pos_emb"].why
    for name in ("lambda_im", "lambda_log_neg_re", "B"):
        row = table[f"ssm/{name}"]
        assert row.label == "adam" and "SSM parameter" in row.why, row
    assert table["mlp/kernel"].label == "muon" and table["mlp/kernel"].why == "rank-2 matrix"
    for name in ("query", "key", "value"):
        row = table[f"attn/{name}/kernel"]
        assert (row.shape, row.label) == ((8, 2, 4), "muon")
        assert row.why == f"Flax attention {name} kernel (in, heads, head_dim) as (8, 8) matrix"
    assert table["attn/out/kernel"].why == "Flax attention out kernel (heads, head_dim, out) as (8, 8) matrix"
    assert table["attn/query/bias"].why == "bias"
    # the table is muon_labels: every row's label is the label muon() uses
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jo.MuonFallbackWarning)
        assert {k: r.label for k, r in table.items()} == flat(jo.muon_labels(params))


def test_describe_routing_string_and_explicit_dims(rows):
    _, params = rows
    text = str(jo.describe_routing(params))
    header, *lines = text.splitlines()
    assert header.split() == ["path", "shape", "label", "why"] and len(lines) == len(jax.tree.leaves(params))
    assert any(line.startswith("lm_out/kernel") and "adam" in line for line in lines)
    given = {row.path: row for row in jo.describe_routing(params, jo.flax_dimension_numbers)}
    assert given["attn/out/kernel"].why.startswith("dimension_numbers DimensionNumbers(")


@pytest.fixture
def fresh_warnings(monkeypatch):
    monkeypatch.setattr(labels_module, "_WARNED_PATTERNS", set())


def test_rank3_fallback_warns_once_per_path_pattern(fresh_warnings):
    tree = {f"Stack_{i}": {"proj": {"kernel": jnp.zeros((4, 2, 3))}} for i in range(2)}
    with pytest.warns(jo.MuonFallbackWarning, match=r"'Stack_0/proj/kernel' of shape \(4, 2, 3\) has rank 3") as got:
        labels = jo.muon_labels(tree)
    assert len(got) == 1  # Stack_1 has the same pattern 'Stack_*/proj/kernel'
    assert jax.tree.leaves(labels) == ["adam", "adam"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        jo.muon_labels(tree)  # once per process
        jo.describe_routing(tree)  # the table never warns
        conv = {"Conv_0": {"kernel": jnp.zeros((3, 3, 2, 4))}}
        assert jax.tree.leaves(jo.muon_labels(conv, jo.flax_dimension_numbers)) == ["muon"]  # has dims
        assert jax.tree.leaves(jo.muon_labels({"pos_emb": jnp.zeros((2, 3, 4))})) == ["adam"]  # by name
    with pytest.warns(jo.MuonFallbackWarning, match="'Other/kernel'"):
        jo.muon_labels({"Other": {"kernel": jnp.zeros((2, 2, 2))}})
