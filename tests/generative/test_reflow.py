"""ReFlow: couplings, the paired loss and straightness on closed-form Gaussian flows.

For 1-D-per-coordinate Gaussian data x0 ~ N(μ, diag s²) the flow-matching
velocity of the independent coupling is known in closed form and its ODE
maps noise z to μ + s·z, along curved paths. The reflowed field of that
coupling, v(x, t) = (x1 − x0) at x = (1 − t)·x0 + t·x1, is straight:
one Euler step from noise is exact.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab import testing
from jaxlab.generative.reflow import ReFlow, generate_couplings, paired_flow_matching_loss, straightness
from jaxlab.train import Context


def rbg_key(seed):
    """A typed key of the "rbg" generator: much quicker for XLA to compile than threefry."""
    return jax.random.key(seed, impl="rbg")


MU = jnp.array([1.0, -0.5])
STD = jnp.array([0.5, 2.0])


def rectified_velocity(params, x, t):
    """E[x1 − x0 | x_t = x] for independent x0 ~ N(μ, s²), x1 ~ N(0, 1), per coordinate."""
    del params
    return testing.gaussian_flow_velocity(x, t, mean=MU, cov=STD**2)


def straight_velocity(params, x, t):
    """The reflowed field of the coupling x0 = μ + s·x1: v = x1 − x0 with x1 solved from x_t."""
    del params
    return testing.gaussian_reflow_velocity(x, t, mean=MU, cov=STD**2)


@pytest.fixture(scope="module")
def couplings():
    noise = jnp.asarray(np.random.default_rng(0).normal(size=(512, 2)), jnp.float32)
    return jax.jit(lambda z: generate_couplings(rectified_velocity, None, z, steps=64, solver="heun"))(noise)


def test_the_flow_coupling_is_the_gaussian_transport_map(couplings):
    x0, x1 = couplings
    np.testing.assert_allclose(x0, testing.gaussian_transport_map(x1, mean=MU, cov=STD**2), atol=2e-3)


def test_straight_field_has_zero_loss_and_the_curved_one_does_not(couplings):
    x0, x1 = couplings
    loss = jax.jit(lambda field: paired_flow_matching_loss(field, None, x0, x1, key=rbg_key(1))[0], static_argnums=0)
    assert float(loss(straight_velocity)) < 1e-5
    assert float(loss(rectified_velocity)) > 1e-2


def test_straightness_is_zero_only_for_straight_paths():
    noise = jnp.asarray(np.random.default_rng(2).normal(size=(256, 2)), jnp.float32)
    measure = jax.jit(lambda field: straightness(field, None, noise, steps=16), static_argnums=0)
    assert float(measure(straight_velocity)) < 1e-8
    assert float(measure(rectified_velocity)) > 1e-2
    one_step = noise - straight_velocity(None, noise, jnp.ones(256))
    np.testing.assert_allclose(one_step, MU + STD * noise, atol=1e-5)


def test_adapter_initialises_and_trains_on_coupling_batches(couplings):
    from jaxlab.nn import TimeMLP

    x0, x1 = couplings
    network = TimeMLP(width=16, depth=1)
    method = ReFlow(apply_fn=network.apply, init_fn=network.init, data_shape=(2,))
    batch = {"x0": x0[:16], "x1": x1[:16]}

    @jax.jit
    def run(b):
        params = method.init(rbg_key(3), b)
        loss, aux = method.loss(params, b, key=rbg_key(4), ctx=Context(step=0, ema_params=params))
        return loss, aux, method.sample(params, key=rbg_key(5), num=8, steps=1)

    loss, aux, samples = run(batch)
    assert np.isfinite(float(loss)) and float(loss) > 0 and "mse" in aux
    assert samples.shape == (8, 2)


def test_bad_inputs_name_the_argument():
    with pytest.raises(ValueError, match=r"x0 and x1 must have the same shape, got \(4, 2\) and \(4, 3\)"):
        paired_flow_matching_loss(straight_velocity, None, jnp.ones((4, 2)), jnp.ones((4, 3)), key=rbg_key(0))
    with pytest.raises(ValueError, match=r"x1 must have shape \(batch, \*features\), got \(4,\)"):
        paired_flow_matching_loss(straight_velocity, None, jnp.ones((4, 2)), jnp.ones(4), key=rbg_key(0))
    with pytest.raises(ValueError, match="steps must be a positive int, got 0"):
        straightness(straight_velocity, None, jnp.ones((4, 2)), steps=0)
