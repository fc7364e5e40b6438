"""One suite over every jaxlab optax transform: the contract optax's own optimizers keep.

Each row of ``CASES`` builds a transform with small hyperparameters and the parameter tree it
needs; every test runs over the rows: the factory's type; jitted updates equal eager ones; a
jitted training step compiles once; the state keeps its structure, shapes and dtypes; the
transform works under ``optax.inject_hyperparams`` and takes new values set in its state; on 8
devices with sharded parameters the updates equal those on one and keep the parameters'
shardings; and, where a docstring promises a dtype, bfloat16 parameters get it. Per-transform
behaviour (oracles, papers' numbers) stays in each transform's own test file.

The unsharded jitted trajectory of each row is computed once and shared by the tests that
compare against it, and so is each sharded trajectory, to compile few programs.
"""

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import jaxlab.optim as jo
from jaxlab.testing import assert_close_up_to_rounding, clear_trace_counter, jit_with_max_traces

ROWS, COLS, RANK = 16, 8, 2
TERMS = ROWS * COLS
# Steps compared up to rounding. msign's Gram path (the default for the 8x16 views) puts jitted and
# eager Muon updates up to ~50 ε√n apart over two steps and ~120 at the third (measured), past safety 64.
STEPS = 2
SHAPE_STEPS = 4  # steps traced for shapes and retracing (nothing compared)
DEVICES = 8


def matrix_params() -> dict:
    rng = np.random.default_rng(0)
    return {"tall": jnp.asarray(rng.standard_normal((ROWS, COLS)), jnp.float32),
            "wide": jnp.asarray(rng.standard_normal((COLS, ROWS)), jnp.float32)}  # fmt: skip


def dense_params() -> dict:
    return matrix_params() | {"bias": jnp.zeros((COLS,), jnp.float32)}


def lora_params() -> dict:
    rng = np.random.default_rng(1)
    pair = jo.LoraPair(jnp.asarray(rng.standard_normal((ROWS, RANK)), jnp.float32),
                       jnp.asarray(rng.standard_normal((RANK, COLS)), jnp.float32))  # fmt: skip
    return {"w": pair, "bias": jnp.zeros((COLS,), jnp.float32)}


def is_muon_state(node) -> bool:
    return isinstance(node, jo.MuonState)


def muon_momenta(state) -> list:
    """The ``MuonState.mu`` leaves anywhere in a (possibly abstract) state tree."""
    return [leaf for node in jax.tree.leaves(state, is_leaf=is_muon_state) if is_muon_state(node) for leaf in jax.tree.leaves(node.mu)]


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    factory: Callable[..., Any]
    kwargs: dict  # numbers passed as keywords, so inject_hyperparams can inject them
    params: Callable[[], Any]
    injected: dict  # learning-rate-like hyperparameter -> a second value to set in the injected state
    args: tuple = ()  # positional arguments, never injected
    static: dict = dataclasses.field(default_factory=dict)  # argument -> why inject_hyperparams must leave it static
    # Newton–Schulz multiplies a perturbation along small singular values by its polynomials'
    # slope at 0 (~8 per step), and LoRA-Pro solves with (BBᵀ)⁻¹: both amplify rounding.
    safety: float = 4.0
    # (rtol, atol) also asserted entry by entry on the injected updates (test_lora's former bound); None for the
    # Muon rows, whose Gram-path rounding is normwise (see STEPS).
    inject_elementwise: tuple[float, float] | None = (1e-5, 1e-6)
    explicit_gap: str = ""  # the error its update raises under Explicit mesh axes (a known gap), if any
    auto_sharding_gap: str = ""  # why, under Auto mesh axes, an update leaf leaves its parameter's sharding
    documented_dtype_leaves: Callable[[Any], list] | None = None  # state leaves a docstring gives the gradient's dtype

    def make(self, **changes):
        return self.factory(*self.args, **(self.kwargs | changes))

    def make_injected(self):
        return optax.inject_hyperparams(self.factory, static_args=tuple(self.static))(*self.args, **self.kwargs)


LORA_PRO_EXPLICIT_GAP = "Contracting dimensions are sharded"  # its matmuls give no out_sharding
GROUPED_ACROSS_SHARDINGS = (
    "under Auto axes orthogonalize_matrices groups the transposed tall matrix with the wide one (the sharding is not "
    "in the bucket key), so the wide update comes back sharded along its columns"
)
CASES = [
    Case("muon", jo.muon, dict(learning_rate=0.05, weight_decay=0.01), dense_params,
         injected=dict(learning_rate=0.02, weight_decay=0.1), safety=64.0, inject_elementwise=None,
         documented_dtype_leaves=muon_momenta),
    Case("scale_by_muon", jo.scale_by_muon, dict(beta=0.9), matrix_params,  # matrices only: no AdamW branch
         injected=dict(beta=0.5), safety=64.0, inject_elementwise=None, documented_dtype_leaves=muon_momenta),
    # The replicated layout under a mesh (distributed Muon is the default there).
    Case("scale_by_muon_replicated", functools.partial(jo.scale_by_muon, sharded=False), dict(beta=0.9), matrix_params,
         injected=dict(beta=0.5), safety=64.0, inject_elementwise=None, auto_sharding_gap=GROUPED_ACROSS_SHARDINGS,
         documented_dtype_leaves=muon_momenta),
    Case("spectral_decay", jo.spectral_decay, dict(rate=0.5, power_steps=2), dense_params, injected=dict(rate=0.25)),
    Case("lora_plus", jo.lora_plus, dict(learning_rate=0.1, ratio=4.0), lora_params, injected=dict(learning_rate=0.05),
         args=(optax.adam,),
         static=dict(make_optimizer="a factory, which inject_hyperparams would call as a schedule",
                     ratio="checked to be a Python number when the transform is built")),
    Case("scale_by_lora_pro", jo.scale_by_lora_pro, dict(scale=2.0), lora_params, injected=dict(scale=1.0),
         safety=32.0, explicit_gap=LORA_PRO_EXPLICIT_GAP),
    Case("lora_pro_adam", jo.lora_pro_adam, dict(learning_rate=0.1, scale=2.0), lora_params,
         injected=dict(learning_rate=0.05, scale=1.0), safety=32.0, explicit_gap=LORA_PRO_EXPLICIT_GAP),
]  # fmt: skip
CASES_BY_NAME = {case.name: case for case in CASES}
IDS = list(CASES_BY_NAME)
# spectral_decay, lora_plus, scale_by_lora_pro and lora_pro_adam document no dtype for bfloat16 parameters.
DTYPE_DOCUMENTED = [case for case in CASES if case.documented_dtype_leaves]


@dataclasses.dataclass(frozen=True)
class Trajectory:
    updates: list  # one update tree per step
    params: Any  # after the last step
    state: Any  # after the last step


def gradients(params, step: int):
    """A different, deterministic gradient at each step."""
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.fold_in(jax.random.key(7), step), len(leaves))
    return jax.tree.unflatten(tree, [jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves, strict=True)])


def run(tx, params, update, *, state=None, place=lambda tree: tree) -> Trajectory:
    """``STEPS`` updates by ``update`` from ``state`` (default: ``tx.init``), gradients placed by ``place``."""
    state = tx.init(params) if state is None else state
    updates_per_step = []
    for step in range(STEPS):
        updates, state = update(place(gradients(params, step)), state, params)
        params = optax.apply_updates(params, updates)
        updates_per_step.append(updates)
    return Trajectory(updates_per_step, params, state)


@functools.cache
def jitted_run(name: str, **changes) -> Trajectory:
    """The reference: the row's transform (``changes`` applied to its keywords), jitted, on one device."""
    tx = CASES_BY_NAME[name].make(**changes)
    return run(tx, CASES_BY_NAME[name].params(), jax.jit(tx.update))


@functools.cache
def injected_transform(name: str):
    """The row's transform under ``optax.inject_hyperparams`` and its jitted update (one program for both inject tests)."""
    injected = CASES_BY_NAME[name].make_injected()
    return injected, jax.jit(injected.update)


def guarded_jit(fn):
    """``fn`` jitted, raising on a second trace (the counter is global, so it is cleared first)."""
    clear_trace_counter()
    return jit_with_max_traces(fn, n=1)


def row_sharded(tree, mesh):
    """Each leaf whose first axis divides by the mesh size sharded along it, the others replicated."""

    def put(x):
        spec = P("data") if x.ndim >= 1 and x.shape[0] % mesh.size == 0 else P()
        return jax.device_put(x, NamedSharding(mesh, spec))

    return jax.tree.map(put, tree)


@functools.cache
def sharded_run(name: str, axis_type: AxisType) -> tuple[Any, Trajectory]:
    """The row's sharded parameters and its jitted trajectory on an 8-device mesh of ``axis_type`` axes."""
    case, mesh = CASES_BY_NAME[name], jax.make_mesh((DEVICES,), ("data",), axis_types=(axis_type,))
    tx = case.make()
    with jax.set_mesh(mesh):  # under Explicit axes the jitted init needs the mesh in context
        params = row_sharded(case.params(), mesh)
        trajectory = run(tx, params, guarded_jit(tx.update), state=jax.jit(tx.init)(params), place=lambda tree: row_sharded(tree, mesh))
    return params, trajectory


def known_gap_or_sharded_run(case: Case, axis_type: AxisType):
    """``sharded_run``, or an xfail once the row's known Explicit-axes error is seen to be raised."""
    if axis_type == AxisType.Explicit and case.explicit_gap:
        with pytest.raises(Exception, match=case.explicit_gap):
            sharded_run(case.name, axis_type)
        pytest.xfail(f"known gap under Explicit axes: {case.explicit_gap}")
    return sharded_run(case.name, axis_type)


def assert_trees_close(actual, desired, *, safety: float):
    """Same structure; floating leaves equal up to rounding (normwise), integer leaves exactly."""
    assert jax.tree.structure(actual) == jax.tree.structure(desired)
    for a, d in zip(jax.tree.leaves(actual), jax.tree.leaves(desired), strict=True):
        a, d = np.asarray(a), np.asarray(d)
        if np.issubdtype(d.dtype, np.integer):
            np.testing.assert_array_equal(a, d)
        else:
            assert_close_up_to_rounding(a, d, terms=TERMS, safety=safety)


def assert_trajectories_close(actual: Trajectory, desired: Trajectory, *, safety: float):
    for step, (a, d) in enumerate(zip(actual.updates, desired.updates, strict=True)):
        try:
            assert_trees_close(a, d, safety=safety)
        except AssertionError as error:
            raise AssertionError(f"updates of step {step}: {error}") from error
    assert_trees_close(actual.params, desired.params, safety=safety)
    assert_trees_close(actual.state, desired.state, safety=safety)


def avals(tree):
    return jax.tree.map(lambda x: (x.shape, x.dtype, getattr(x, "weak_type", False)), tree)


def abstract_trajectory(tx, params):
    """``(states, updates)``, shapes and dtypes only: the initial state, then the state and updates after each step."""

    def trajectory(params):
        states, updates_per_step = [tx.init(params)], []
        for step in range(SHAPE_STEPS):
            updates, state = tx.update(gradients(params, step), states[-1], params)
            params = optax.apply_updates(params, updates)
            states.append(state)
            updates_per_step.append(updates)
        return states, updates_per_step

    return jax.eval_shape(trajectory, params)


def to_bfloat16(tree):
    return jax.tree.map(lambda x: x.astype(jnp.bfloat16), tree)


def sharding_params():
    for case in CASES:
        for axis_type in (AxisType.Auto, AxisType.Explicit):
            yield pytest.param(case, axis_type, id=f"{case.name}-{axis_type.name.lower()}")


def sharding_kept_params():
    for param in sharding_params():
        case, axis_type = param.values
        gap = case.auto_sharding_gap if axis_type == AxisType.Auto else ""
        yield pytest.param(*param.values, id=param.id, marks=pytest.mark.xfail(strict=True, raises=AssertionError, reason=gap) if gap else ())


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_factory_returns_an_extra_args_transformation(case):
    """Every factory returns an ``optax.GradientTransformationExtraArgs``."""
    assert isinstance(case.make(), optax.GradientTransformationExtraArgs)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_jitted_updates_equal_eager_ones(case):
    """Over several steps the jitted updates, parameters and state equal the eager ones up to rounding."""
    tx = case.make()
    eager = run(tx, case.params(), tx.update)
    assert_trajectories_close(jitted_run(case.name), eager, safety=case.safety)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_jitted_training_step_compiles_once(case):
    """A jitted update-and-apply step fed its own outputs for several steps is traced once."""
    tx = case.make()

    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    jitted_step = guarded_jit(step)
    params = case.params()
    state = tx.init(params)
    for s in range(SHAPE_STEPS):
        params, state = jitted_step(params, state, gradients(params, s))


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_the_state_keeps_its_structure_shapes_and_dtypes(case):
    """After each of several updates the state has the initial state's tree structure, shapes, dtypes and weak types."""
    states, _ = abstract_trajectory(case.make(), case.params())
    for step, state in enumerate(states[1:]):
        assert jax.tree.structure(state) == jax.tree.structure(states[0]), f"step {step}"
        assert avals(state) == avals(states[0]), f"step {step}"


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_updates_have_the_structure_shapes_and_dtypes_of_the_params(case):
    """Every update tree has the parameters' tree structure, shapes and (float32) dtypes."""
    params = case.params()
    _, updates_per_step = abstract_trajectory(case.make(), params)
    for updates in updates_per_step:
        assert jax.tree.structure(updates) == jax.tree.structure(params)
        assert jax.tree.map(lambda u: (u.shape, u.dtype), updates) == jax.tree.map(lambda p: (p.shape, p.dtype), params)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_inject_hyperparams_gives_the_factory_updates(case):
    """Wrapped in ``optax.inject_hyperparams``, the transform holds its numbers in the state and gives the same updates."""
    injected, update = injected_transform(case.name)
    params = case.params()
    state = injected.init(params)
    for name in case.injected:
        np.testing.assert_allclose(state.hyperparams[name], case.kwargs[name], rtol=1e-6)
    got, expected = run(injected, params, update, state=state), jitted_run(case.name)
    assert_trajectories_close(dataclasses.replace(got, state=got.state.inner_state), expected, safety=case.safety)
    if case.inject_elementwise:
        rtol, atol = case.inject_elementwise
        chex.assert_trees_all_close(got.updates, expected.updates, rtol=rtol, atol=atol)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_injected_values_set_in_the_state_act_as_factory_arguments(case):
    """New learning-rate-like values written into the injected state give the updates of the factory called with them."""
    injected, update = injected_transform(case.name)
    params = case.params()
    state = injected.init(params)
    for name, value in case.injected.items():
        state.hyperparams[name] = jnp.asarray(value, state.hyperparams[name].dtype)
    got = run(injected, params, update, state=state)
    expected = jitted_run(case.name, **case.injected)
    assert_trajectories_close(dataclasses.replace(got, state=got.state.inner_state), expected, safety=case.safety)
    unchanged = jitted_run(case.name)
    changed = any(not np.allclose(a, b, rtol=1e-3) for a, b in zip(jax.tree.leaves(expected.updates), jax.tree.leaves(unchanged.updates)))
    assert changed, f"the new values {case.injected} do not change the updates, so this test could not fail"


def test_lora_plus_injects_through_its_optimizer_factory():
    """lora_plus's documented route: an injected ``make_optimizer`` gives the updates of the plain one."""
    plain = jo.lora_plus(optax.adam, 0.1, ratio=4.0)
    injected = jo.lora_plus(optax.inject_hyperparams(optax.adam), 0.1, ratio=4.0)
    expected, got = run(plain, lora_params(), plain.update), run(injected, lora_params(), injected.update)
    chex.assert_trees_all_close(got.updates, expected.updates, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("case", "axis_type"), list(sharding_params()))
def test_eight_devices_equal_one(case, axis_type):
    """With parameters and gradients sharded over 8 devices, the jitted updates, parameters and state equal one device's."""
    assert jax.device_count() == DEVICES, "tests/conftest.py provides 8 CPU devices"
    _, sharded = known_gap_or_sharded_run(case, axis_type)
    assert any(len(leaf.sharding.device_set) == DEVICES for leaf in jax.tree.leaves(sharded.params))
    assert_trajectories_close(sharded, jitted_run(case.name), safety=case.safety)


@pytest.mark.parametrize(("case", "axis_type"), list(sharding_kept_params()))
def test_sharded_updates_and_params_keep_the_params_shardings(case, axis_type):
    """Each step's updates, and the parameters after it, are sharded as the parameters were."""
    params, sharded = known_gap_or_sharded_run(case, axis_type)
    shardings = [leaf.sharding for leaf in jax.tree.leaves(params)]
    for tree in [*sharded.updates, sharded.params]:
        for leaf, sharding in zip(jax.tree.leaves(tree), shardings, strict=True):
            assert leaf.sharding.is_equivalent_to(sharding, leaf.ndim), f"{leaf.sharding.spec} != {sharding.spec}"


@pytest.mark.parametrize("case", DTYPE_DOCUMENTED, ids=[case.name for case in DTYPE_DOCUMENTED])
def test_bfloat16_momentum_has_the_gradient_dtype(case):
    """scale_by_muon's docstring: with ``mu_dtype=None`` the momentum has the gradient's dtype (bfloat16 here)."""
    states, _ = abstract_trajectory(case.make(), to_bfloat16(case.params()))
    for state in states:
        momenta = case.documented_dtype_leaves(state)
        assert momenta and all(m.dtype == jnp.bfloat16 for m in momenta), [m.dtype for m in momenta]
