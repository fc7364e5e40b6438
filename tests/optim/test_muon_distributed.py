"""Distributed Muon (``sharded``): each matrix orthogonalized whole on one device of the mesh.

On the 8 CPU devices as an ``("data", "fsdp")`` mesh of shape (1, 8) with
``Auto`` axes (what :func:`jaxlab.train.train` builds for ``"fsdp"``), a small
GPT-like tree is sharded FSDP-style and :func:`jaxlab.optim.muon`'s update is
jitted under ``jax.sharding.use_abstract_mesh``, as the trainer traces it.
References: Liu et al., "Muon is Scalable for LLM Training", 2025; Ahn et al.,
"Dion", 2025.
"""

from __future__ import annotations

import collections
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import jaxlab.optim as jo
from jaxlab.parallel.mesh import fsdp_spec
from jaxlab.testing import collective_bytes, collectives

DEVICES = 8
D = 64


def _mesh(axis_type=jax.sharding.AxisType.Auto):
    return jax.make_mesh((1, DEVICES), ("data", "fsdp"), axis_types=(axis_type,) * 2)


def gpt_params() -> dict:
    """Four blocks (16 (64, 64) attention kernels, a wide and a tall MLP kernel and a bias each) and an (8, 64, 128) stack."""
    key = jax.random.key(0)
    shapes: dict[str, tuple[int, ...]] = {}
    for b in range(4):
        shapes |= {f"b{b}/{n}/kernel": (D, D) for n in ("q", "k", "v", "o")}
        shapes |= {f"b{b}/up/kernel": (D, 4 * D), f"b{b}/down/kernel": (4 * D, D), f"b{b}/up/bias": (4 * D,)}
    shapes["scan/kernel"] = (8, D, 2 * D)  # (layer, fan_in, fan_out) of a scanned block
    return {
        name: jax.random.normal(jax.random.fold_in(key, i), s, jnp.float32) / math.sqrt(s[-2] if len(s) > 1 else 1)
        for i, (name, s) in enumerate(shapes.items())
    }


def dims(tree):
    return {k: jo.DimensionNumbers(1, 2) if k.startswith("scan") else None for k in tree}


def optimizer(sharded):
    return jo.muon(1.0, dimension_numbers=dims, sharded=sharded)  # unit learning rate: the update is the orthogonalized matrix


def shardings(tree, mesh):
    return jax.tree.map(lambda x: NamedSharding(mesh, fsdp_spec(np.shape(x), DEVICES)), tree)


def grads() -> dict:
    return {name: jax.random.normal(jax.random.fold_in(jax.random.key(1), i), x.shape, x.dtype) for i, (name, x) in enumerate(gpt_params().items())}


def jitted_update(sharded, mesh, *, out_shardings=True):
    """``tx.update`` jitted with FSDP in (and optionally out) shardings, traced under the mesh."""
    tx, params = optimizer(sharded), gpt_params()
    state = tx.init(params)
    in_sh = (shardings(params, mesh), shardings(state, mesh), shardings(params, mesh))

    def update(g, s, p):
        with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
            return tx.update(g, s, p)

    out_sh = in_sh[:2] if out_shardings else None
    fn = jax.jit(update, in_shardings=in_sh, out_shardings=out_sh)
    args = tuple(jax.device_put(a, s) for a, s in zip((grads(), state, params), in_sh, strict=True))
    return fn, args


def single_device_update():
    tx, params = optimizer(False), gpt_params()
    return jax.jit(tx.update)(grads(), tx.init(params), params)[0]


@pytest.fixture(scope="module")
def compiled():
    """The optimized programs of the sharded (default: automatic) and the replicated update under the mesh."""
    mesh = _mesh()
    return {
        name: jitted_update(sharded, mesh)[0].lower(*jitted_update(sharded, mesh)[1]).compile() for name, sharded in (("ours", None), ("replicated", False))
    }


@pytest.mark.optimized  # the code users run: the unoptimized CPU pipeline lays the stacks out differently (~3e-6 off)
def test_sharded_update_equals_the_single_device_update_and_keeps_the_parameter_shardings():
    mesh = _mesh()
    fn, args = jitted_update(True, mesh, out_shardings=False)  # output layout left to XLA: our constraints set it
    out = fn(*args)[0]
    ref = single_device_update()
    params = gpt_params()
    for name in params:
        err = float(jnp.max(jnp.abs(out[name] - ref[name])))
        scale = float(jnp.max(jnp.abs(ref[name])))
        assert err <= 1e-6, (name, err)
        assert err <= 1e-6 * scale, (name, err / scale)  # relative to the leaf's largest entry
        assert out[name].sharding.spec == shardings(params, mesh)[name].spec, name


def test_cost_analysis_is_per_device_under_spmd():
    """A row-split matmul on 8 devices reports 1/8 of the unsplit flops: cost_analysis counts one device's work."""
    mesh = _mesh()
    a = jnp.ones((DEVICES * 64, 256), jnp.float32)
    b = jnp.ones((256, 256), jnp.float32)
    full = jax.jit(jnp.matmul).lower(a, b).compile().cost_analysis()["flops"]
    split = jax.jit(jnp.matmul, in_shardings=(NamedSharding(mesh, P(("data", "fsdp"))), NamedSharding(mesh, P()))).lower(a, b).compile()
    assert full == pytest.approx(2 * a.shape[0] * 256 * 256, rel=0.01)
    assert split.cost_analysis()["flops"] == pytest.approx(full / DEVICES, rel=0.01)


def test_collective_bytes_and_newton_schulz_work_per_device(compiled):
    param_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(gpt_params()))
    ours, replicated = collective_bytes(compiled["ours"].as_text()), collective_bytes(compiled["replicated"].as_text())
    assert sum(ours.values()) <= 2 * param_bytes, ours
    assert ours["all-to-all"] > 0 and ours["all-gather"] == 0, ours  # the matrices move whole, once in and once out
    assert sum(replicated.values()) > 2 * param_bytes, replicated  # the baseline this replaces
    flops = {name: c.cost_analysis()["flops"] for name, c in compiled.items()}
    assert flops["ours"] <= flops["replicated"] / 4, flops


def test_sharded_false_under_the_mesh_keeps_the_replicated_program(compiled):
    """``sharded=False`` lowers to the program the update had before (the same text as traced without a mesh)."""
    mesh = _mesh()
    fn, args = jitted_update(False, mesh)
    tx, params = optimizer(None), gpt_params()  # automatic, but traced without a mesh: off
    in_sh = (shardings(params, mesh), shardings(tx.init(params), mesh), shardings(params, mesh))
    plain = jax.jit(lambda g, s, p: tx.update(g, s, p), in_shardings=in_sh, out_shardings=in_sh[:2])
    strip = lambda text: re.sub(r"jit_\w+", "jit_f", text)
    assert strip(fn.lower(*args).as_text()) == strip(plain.lower(*args).as_text())
    kinds = collections.Counter(c.kind for c in collectives(compiled["replicated"].as_text()))
    assert kinds["all-to-all"] == 0 and kinds["all-gather"] > 0, kinds


def test_sharded_without_a_mesh_only_groups():
    tx, params = optimizer(True), gpt_params()
    out = jax.jit(tx.update)(grads(), tx.init(params), params)[0]
    ref = single_device_update()
    for name in params:
        np.testing.assert_allclose(out[name], ref[name], atol=1e-6, rtol=0)


@pytest.mark.optimized  # bit-identical to one device there (see above)
@pytest.mark.parametrize("mesh_shape", [(DEVICES, 1), (2, DEVICES // 2)])
def test_data_parallel_and_hybrid_meshes(mesh_shape):
    """Replicated (dp) and half-sharded (2 x 4) parameters: the stack is still split over all 8 devices."""
    mesh = jax.make_mesh(mesh_shape, ("data", "fsdp"), axis_types=(jax.sharding.AxisType.Auto,) * 2)
    full = gpt_params()
    params = {k: full[k] for k in ("b0/q/kernel", "b0/k/kernel", "b0/down/kernel", "scan/kernel")}
    g = {k: grads()[k] for k in params}
    tx = jo.scale_by_muon(dimension_numbers=dims)
    ref = jax.jit(tx.update)(g, tx.init(g))[0]
    sh = jax.tree.map(lambda x: NamedSharding(mesh, fsdp_spec(x.shape, mesh_shape[1])), g)
    state = tx.init(g)
    state_sh = jo.MuonState(mu=sh, count=NamedSharding(mesh, P()))

    def update(g, s):
        with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
            return tx.update(g, s)[0]

    fn = jax.jit(update, in_shardings=(sh, state_sh))
    out = fn(jax.device_put(g, sh), jax.device_put(state, state_sh))
    kinds = collections.Counter(c.kind for c in collectives(fn.lower(g, state).compile().as_text()))
    assert kinds["all-to-all"] + kinds["all-gather"] > 0, kinds  # the owners' results are shared out again
    for name in params:
        np.testing.assert_allclose(out[name], ref[name], atol=1e-6, rtol=0)
        assert out[name].sharding.spec == sh[name].spec, name


@pytest.mark.optimized  # bit-identical to one device there (see above)
def test_equal_shapes_laid_out_differently():
    """One group, three layouts (rows, columns, replicated), jitted as the trainer does (out shardings given): same values."""
    mesh = _mesh()
    g = {k: jax.random.normal(jax.random.key(i), (D, D)) for i, k in enumerate("abc")}
    sh = {k: NamedSharding(mesh, spec) for k, spec in zip("abc", (P("fsdp", None), P(None, "fsdp"), P()), strict=True)}
    tx = jo.scale_by_muon()
    ref = jax.jit(tx.update)(g, tx.init(g))[0]

    def update(g, s):
        with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
            return tx.update(g, s)[0]

    state_sh = jo.MuonState(mu=sh, count=NamedSharding(mesh, P()))
    fn = jax.jit(update, in_shardings=(sh, state_sh), out_shardings=sh)
    out = fn(jax.device_put(g, sh), jax.device_put(tx.init(g), state_sh))
    kinds = collections.Counter(c.kind for c in collectives(fn.lower(g, tx.init(g)).compile().as_text()))
    assert kinds["all-to-all"] > 0, kinds  # the stack is split, not computed everywhere
    for name in g:
        np.testing.assert_allclose(out[name], ref[name], atol=1e-6, rtol=0)


def test_explicit_axes():
    """Under ``Explicit`` axes the stack and the results are resharded by type; same values and layouts."""
    mesh = _mesh(jax.sharding.AxisType.Explicit)
    params = {"a": gpt_params()["b0/q/kernel"], "b": gpt_params()["b0/down/kernel"], "c": gpt_params()["b0/up/kernel"]}
    g = jax.tree.map(lambda x: jax.random.normal(jax.random.key(2), x.shape), params)
    tx = jo.scale_by_muon()
    ref = jax.jit(tx.update)(g, tx.init(g))[0]
    with jax.set_mesh(mesh):
        placed = jax.device_put(g, shardings(g, mesh))
        out = jax.jit(tx.update)(placed, tx.init(placed))[0]
    for name in params:
        np.testing.assert_allclose(out[name], ref[name], atol=1e-6, rtol=0)
        assert out[name].sharding.spec == placed[name].sharding.spec, name


@pytest.mark.parametrize("make", [jo.scale_by_muon, lambda **kw: jo.muon(0.1, **kw)])
@pytest.mark.parametrize("bad", ["yes", 1, 0.0, np.bool_(True)])
def test_bad_sharded_raises_type_error(make, bad):
    with pytest.raises(TypeError, match="sharded"):
        make(sharded=bad)


def _dot_operands(jaxpr) -> list[tuple]:
    """``(operand dtypes, precision, accumulation dtype)`` of every ``dot_general`` in a jaxpr, nested ones included."""
    found = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            found.append((tuple(str(v.aval.dtype) for v in eqn.invars), eqn.params["precision"], str(eqn.params["preferred_element_type"])))
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            found += _dot_operands(sub)
    return found


@pytest.mark.parametrize("backend", ["cpu", "gpu", "tpu"])
def test_newton_schulz_operand_default_per_backend(backend, monkeypatch):
    """msign's documented default: float32 at HIGHEST on CPU; bfloat16 operands, float32 accumulation elsewhere."""
    from jaxlab.linalg import msign

    monkeypatch.setattr(jax, "default_backend", lambda: backend)  # only read while tracing
    x = jax.random.normal(jax.random.key(3), (32, 48))
    default = set(_dot_operands(jax.make_jaxpr(lambda a: msign(a))(x).jaxpr))  # a fresh function: no cached trace
    explicit = set(_dot_operands(jax.make_jaxpr(lambda a: msign(a, dtype=jnp.float32))(x).jaxpr))
    highest = jax.lax.Precision.HIGHEST
    if backend == "cpu":
        assert {(ops, acc) for ops, _, acc in default} == {(("float32", "float32"), "float32")}
        assert (("float32", "float32"), (highest, highest), "float32") in default, default  # as before
    else:
        assert ((("bfloat16", "bfloat16"), None, "float32")) in default, default
        assert all(p is None for _, p, _ in default | explicit), "HIGHEST is never forced on accelerators"
        assert {ops for ops, _, _ in explicit if "bfloat16" in ops} == set(), "an explicit float32 is kept"
    float64 = jax.ShapeDtypeStruct((32, 48), jnp.float64)
    with jax.enable_x64():
        wide = {ops for ops, _, _ in _dot_operands(jax.make_jaxpr(lambda a: msign(a))(float64).jaxpr)}
    assert ("float64", "float64") in wide and not any("bfloat16" in ops for ops in wide), wide  # float64 stays float64
