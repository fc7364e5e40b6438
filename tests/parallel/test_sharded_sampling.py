"""Sampling split over the mesh: each device computes its own rows, and the numbers are those of a plain jit."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab import parallel
from jaxlab.generative import RectifiedFlow
from jaxlab.nn import TimeMLP
from jaxlab.parallel.sampling import split_rows
from jaxlab.testing.tolerance import assert_close_up_to_rounding

NUM, WIDTH = 256, 64  # NUM/8 rows per device; neither NUM nor NUM/8 is a weight's shape


@pytest.fixture(scope="module")
def flow():
    network = TimeMLP(width=WIDTH, depth=2)
    method = RectifiedFlow(apply_fn=network.apply, init_fn=network.init, data_shape=(2,), solver="euler")
    params = method.init(jax.random.key(0), {"x": jnp.zeros((8, 2))})
    return method, params


@pytest.mark.parametrize("shape", [{"data": 8}, {"data": 2, "fsdp": 4}, {"data": 2, "tensor": 4}])
def test_samples_equal_a_plain_jit_up_to_rounding(flow, shape):
    method, params = flow
    mesh = parallel.make_mesh(shape=shape)
    draw = parallel.sharded_sampler(method.sample, mesh, static_argnames=("num", "steps"))
    ours = draw(params, key=jax.random.key(1), num=NUM, steps=4)
    plain = np.asarray(jax.jit(method.sample, static_argnames=("num", "steps"))(params, key=jax.random.key(1), num=NUM, steps=4))
    assert isinstance(ours, np.ndarray) and ours.shape == (NUM, 2)
    assert_close_up_to_rounding(ours, plain, terms=4 * WIDTH)


def test_each_device_computes_only_its_rows(flow):
    method, params = flow
    mesh = parallel.make_mesh(shape={"data": 8})

    def sample(p, key):
        return method.sample(p, key=key, num=NUM, steps=4)

    def hidden_row_counts(fn) -> set[int]:
        """Row counts of the MLP's hidden activations (b, WIDTH) in the compiled per-device program."""
        text = jax.jit(fn).lower(params, jax.random.key(1)).compile().as_text()
        return {int(rows) for rows in re.findall(rf"f32\[(\d+),{WIDTH}\]", text)} & {NUM, NUM // 8}

    assert hidden_row_counts(lambda p, k: split_rows(sample(p, k), mesh)) == {NUM // 8}
    assert hidden_row_counts(sample) == {NUM}  # the baseline: every device runs the whole batch


def test_outputs_that_do_not_divide_stay_whole(flow):
    mesh = parallel.make_mesh(shape={"data": 8})
    draw = parallel.sharded_sampler(lambda key: {"rows": jax.random.normal(key, (12, 3)), "scalar": jnp.float32(2.0)}, mesh)
    out = draw(jax.random.key(0))
    assert out["rows"].shape == (12, 3) and out["scalar"] == 2.0
    np.testing.assert_array_equal(out["rows"], np.asarray(jax.random.normal(jax.random.key(0), (12, 3))))


def test_without_a_mesh_it_follows_the_parameters_and_copies_the_rest_onto_their_mesh(flow):
    method, params = flow
    mesh = parallel.make_mesh(shape={"data": 8})
    draw = parallel.sharded_sampler(method.sample, static_argnames=("num", "steps"))
    plain = draw(params, key=jax.random.key(1), num=NUM, steps=2)  # uncommitted parameters: no mesh, a plain jit
    on_mesh = jax.device_put(params, parallel.replicated(mesh))
    assert_close_up_to_rounding(draw(on_mesh, key=jax.random.key(1), num=NUM, steps=2), plain, terms=2 * WIDTH)
    on_one_device = jax.device_put(params, jax.devices()[3])  # as a restore onto one device leaves them
    draw_on_mesh = parallel.sharded_sampler(method.sample, mesh, static_argnames=("num", "steps"))
    assert_close_up_to_rounding(draw_on_mesh(on_one_device, key=jax.random.key(1), num=NUM, steps=2), plain, terms=2 * WIDTH)


def test_a_bad_mesh_is_named():
    with pytest.raises(TypeError, match="mesh must be a jax.sharding.Mesh or None, got str"):
        parallel.sharded_sampler(lambda: 0, "data:8")
