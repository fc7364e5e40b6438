"""jaxlab.optim.muon under Flax NNX: nnx.Optimizer initializes on Variables and updates on plain arrays."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import jaxlab.optim as jo


class MLP(nnx.Module):
    def __init__(self, rngs):
        self.hidden = nnx.Linear(6, 16, rngs=rngs)
        self.head = nnx.Linear(16, 3, rngs=rngs)

    def __call__(self, x):
        return self.head(jax.nn.gelu(self.hidden(x)))


class AttentionNet(nnx.Module):
    def __init__(self, rngs):
        self.attn = nnx.MultiHeadAttention(num_heads=2, in_features=8, qkv_features=8, decode=False, rngs=rngs)
        self.mlp = nnx.Linear(8, 8, rngs=rngs)
        self.lm_out = nnx.Linear(8, 3, rngs=rngs)

    def __call__(self, x):
        x = x + self.attn(x)
        return self.lm_out(jax.nn.gelu(self.mlp(x)))


def data(model):
    x = jax.random.normal(jax.random.key(1), (16, 6) if isinstance(model, MLP) else (4, 5, 8))
    y = jax.random.normal(jax.random.key(2), (*x.shape[:-1], 3))
    return x, y


def train(model, tx, steps=8):
    x, y = data(model)
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer):
        loss, grads = nnx.value_and_grad(lambda m: jnp.mean((m(x) - y) ** 2))(model)
        updates = optimizer.update(model, grads)
        return loss, updates

    losses, updates = [], None
    for _ in range(steps):
        loss, updates = step(model, optimizer)
        losses.append(float(loss))
    return losses, updates


@pytest.mark.parametrize("make", [MLP, AttentionNet], ids=["linear", "attention"])
def test_nnx_optimizer_trains(make):
    losses, updates = train(make(nnx.Rngs(0)), jo.muon(1e-2))
    assert all(np.isfinite(losses)) and all(bool(jnp.all(jnp.isfinite(u))) for u in jax.tree.leaves(updates))
    assert losses[-1] < losses[0]


ATTENTION_KERNELS = {f"attn/{p}/kernel" for p in ("query", "key", "value", "out")}


@pytest.mark.parametrize(("make", "muon"), [(MLP, {"hidden/kernel"}), (AttentionNet, {"mlp/kernel", *ATTENTION_KERNELS})], ids=["linear", "attention"])
def test_nnx_routing_labels(make, muon):
    state = nnx.state(make(nnx.Rngs(0)), nnx.Param)
    table = {row.path: row for row in jo.describe_routing(state)}  # paths without the Variable's 'value'
    assert {path for path, row in table.items() if row.label == "muon"} == muon
    assert all(row.label == "adam" for path, row in table.items() if path.endswith("bias"))
    if make is AttentionNet:
        assert table["attn/query/bias"].shape == (2, 4) and table["lm_out/kernel"].why == "embedding/head name 'lm_out'"
        assert table["attn/out/kernel"].why == "Flax attention out kernel (heads, head_dim, out) as (8, 8) matrix"
    # the labels of the Variable state (what nnx.Optimizer initializes on) and of its pure arrays agree
    assert jax.tree.leaves(jo.muon_labels(state)) == jax.tree.leaves(jo.muon_labels(nnx.as_pure(state)))


def test_nnx_update_matches_the_linen_style_dict():
    """One step through nnx.Optimizer equals the same step on a plain dict of the same arrays."""
    model = AttentionNet(nnx.Rngs(0))
    x, y = data(model)
    grads = nnx.grad(lambda m: jnp.mean((m(x) - y) ** 2))(model)
    pure_params = nnx.as_pure(nnx.state(model, nnx.Param))
    pure_grads = nnx.as_pure(nnx.state(grads, nnx.Param))
    tx = jo.muon(1e-2)
    plain, _ = jax.jit(tx.update)(pure_grads, tx.init(pure_params), pure_params)
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    updates = nnx.jit(lambda optimizer, model, grads: optimizer.update(model, grads))(optimizer, model, grads)
    for a, b in zip(jax.tree.leaves(updates), jax.tree.leaves(plain), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_optax_contrib_muon_trains_the_same_model():
    """The reference the issue compares with: optax.contrib.muon through nnx.Optimizer."""
    losses, _ = train(AttentionNet(nnx.Rngs(0)), optax.contrib.muon(1e-2), steps=3)
    assert losses[-1] < losses[0]
