"""One suite over every jaxlab optax transform: the contract optax's own optimizers keep.

Each case runs the same checks: the factory returns a GradientTransformationExtraArgs; jitted
updates equal eager ones and compile once; the state keeps its shapes and dtypes; the
transform works under ``optax.inject_hyperparams`` (where its numbers are injectable); and
the update on 8 devices, parameters sharded, equals the update on one. Per-transform
behaviour (oracles, papers' numbers) stays in each transform's own test file.
"""

import dataclasses
from collections.abc import Callable
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import jaxlab.optim as jo
from jaxlab.testing import assert_close_up_to_rounding

ROWS, COLS, RANK = 16, 8, 2


def dense_params() -> dict:
    rng = np.random.default_rng(0)
    return {"w": jnp.asarray(rng.standard_normal((ROWS, COLS)), jnp.float32), "bias": jnp.zeros((COLS,), jnp.float32)}


def matrix_params() -> dict:
    return {"w": dense_params()["w"]}


def lora_params() -> dict:
    rng = np.random.default_rng(1)
    pair = jo.LoraPair(jnp.asarray(rng.standard_normal((ROWS, RANK)), jnp.float32),
                       jnp.asarray(rng.standard_normal((RANK, COLS)), jnp.float32))  # fmt: skip
    return {"w": pair, "bias": jnp.zeros((COLS,), jnp.float32)}


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    factory: Callable[..., Any]
    kwargs: dict  # numbers passed as keywords, so inject_hyperparams can inject them
    params: Callable[[], Any]
    args: tuple = ()  # positional, non-injectable arguments
    # Newton–Schulz multiplies a perturbation along small singular values by its polynomials'
    # slope at 0 (~8 per step), and LoRA-Pro solves with (BBᵀ)⁻¹: both amplify rounding.
    safety: float = 4.0
    explicit_sharding: bool = True  # runs under a mesh with Explicit axes (jax.make_mesh's default)

    def make(self):
        return self.factory(*self.args, **self.kwargs)


CASES = [
    Case("muon", jo.muon, dict(learning_rate=0.05, weight_decay=0.01), dense_params, safety=64.0),
    Case("scale_by_muon", jo.scale_by_muon, dict(beta=0.9), matrix_params, safety=64.0),  # matrices only: no AdamW branch
    Case("spectral_decay", jo.spectral_decay, dict(rate=0.1), dense_params),
    Case("lora_plus", jo.lora_plus, dict(learning_rate=0.1, ratio=4.0), lora_params, args=(optax.adam,)),
    Case("scale_by_lora_pro", jo.scale_by_lora_pro, dict(scale=2.0), lora_params, safety=32.0, explicit_sharding=False),
    Case("lora_pro_adam", jo.lora_pro_adam, dict(learning_rate=0.1, scale=2.0), lora_params, safety=32.0, explicit_sharding=False),
]
IDS = [c.name for c in CASES]


def gradients(params, step: int):
    """A different, deterministic gradient at each step."""
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.fold_in(jax.random.key(7), step), len(leaves))
    return jax.tree.unflatten(tree, [jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves)])


def run(tx, params, steps: int, update=None):
    update = update or tx.update
    state, outs = tx.init(params), []
    for s in range(steps):
        updates, state = update(gradients(params, s), state, params)
        params = optax.apply_updates(params, updates)
        outs.append(updates)
    return params, state, outs


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_factory_returns_an_extra_args_transformation(case):
    assert isinstance(case.make(), optax.GradientTransformationExtraArgs)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_jitted_updates_equal_eager_ones_and_compile_once(case):
    tx = case.make()
    chex.clear_trace_counter()
    jitted = jax.jit(chex.assert_max_traces(tx.update, n=1))
    eager_params, _, _ = run(tx, case.params(), 3)
    jit_params, _, _ = run(tx, case.params(), 3, update=jitted)
    for eager, jitted_leaf in zip(jax.tree.leaves(eager_params), jax.tree.leaves(jit_params)):
        assert_close_up_to_rounding(jitted_leaf, eager, terms=ROWS * COLS, safety=case.safety)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_the_state_keeps_its_shapes_and_dtypes(case):
    tx, params = case.make(), case.params()
    state = tx.init(params)
    _, new_state = jax.eval_shape(tx.update, gradients(params, 0), state, params)
    assert jax.tree.structure(new_state) == jax.tree.structure(state)
    for before, after in zip(jax.tree.leaves(state), jax.tree.leaves(new_state)):
        assert (before.shape, before.dtype) == (after.shape, after.dtype)


INJECTABLE = [c for c in CASES if c.name != "lora_plus"]  # lora_plus injects through its make_optimizer


@pytest.mark.parametrize("case", INJECTABLE, ids=[c.name for c in INJECTABLE])
def test_inject_hyperparams_gives_the_same_updates(case):
    plain = case.make()
    injected = optax.inject_hyperparams(case.factory)(*case.args, **case.kwargs)
    _, _, expected = run(plain, case.params(), 2, update=jax.jit(plain.update))
    _, state, got = run(injected, case.params(), 2, update=jax.jit(injected.update))
    for g, e in zip(jax.tree.leaves(got), jax.tree.leaves(expected)):
        assert_close_up_to_rounding(g, e, terms=ROWS * COLS, safety=case.safety)
    for name, value in case.kwargs.items():
        if name in state.hyperparams:
            np.testing.assert_allclose(state.hyperparams[name], value, rtol=1e-6)


def test_lora_plus_injects_through_its_optimizer_factory():
    plain = jo.lora_plus(optax.adam, 0.1, ratio=4.0)
    injected = jo.lora_plus(optax.inject_hyperparams(optax.adam), 0.1, ratio=4.0)
    _, _, expected = run(plain, lora_params(), 2)
    _, _, got = run(injected, lora_params(), 2)
    chex.assert_trees_all_close(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("axis_type", [jax.sharding.AxisType.Auto, jax.sharding.AxisType.Explicit], ids=["auto", "explicit"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_eight_devices_equal_one(case, axis_type):
    assert jax.device_count() == 8, "tests/conftest.py provides 8 CPU devices"
    if axis_type == jax.sharding.AxisType.Explicit and not case.explicit_sharding:
        pytest.xfail("LoRA-Pro's matmuls contract a sharded axis without an out_sharding (known gap)")
    mesh = jax.make_mesh((8,), ("data",), axis_types=(axis_type,))
    tx, params = case.make(), case.params()
    # Shard every leaf whose first axis divides by 8 (the ROWS axis); the rest stays replicated.
    spec = lambda x: P("data") if x.ndim >= 1 and x.shape[0] % 8 == 0 else P()  # noqa: E731
    shard = lambda tree: jax.tree.map(lambda x: jax.device_put(x, NamedSharding(mesh, spec(x))), tree)  # noqa: E731
    update = jax.jit(tx.update)
    single, _, _ = run(tx, params, 2, update=update)
    with jax.set_mesh(mesh):  # under Explicit axes the jitted init needs the mesh in context
        p = shard(params)
        state = jax.jit(tx.init)(p)
        for s in range(2):
            updates, state = update(shard(gradients(params, s)), state, p)
            p = optax.apply_updates(p, updates)
    assert any(len(leaf.sharding.device_set) == 8 for leaf in jax.tree.leaves(p))
    for one, eight in zip(jax.tree.leaves(single), jax.tree.leaves(p)):
        assert_close_up_to_rounding(np.asarray(eight), np.asarray(one), terms=ROWS * COLS, safety=case.safety)
