"""Rectified flow: the t=0-data / t=1-noise convention, the loss, and the ODE solvers against closed forms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from jaxlab import testing
from jaxlab.generative import flow_matching_loss, interpolate, sample_ode

ATOM = jnp.array([0.7, -1.3])
MEAN, COV = jnp.array([1.0, -0.5]), jnp.array([[0.8, 0.3], [0.3, 0.4]])


def point_mass_velocity(params, x, t):
    """The exact flow-matching velocity when the data is the single point ATOM: v = (x − a)/t."""
    del params
    return testing.point_mass_velocity(x, t, point=ATOM)


def test_interpolation_endpoints_follow_the_convention():
    x0, x1 = jnp.ones((3, 2)), jnp.zeros((3, 2))
    np.testing.assert_allclose(interpolate(x0, x1, jnp.zeros(3)), x0)  # t=0 is data
    np.testing.assert_allclose(interpolate(x0, x1, jnp.ones(3)), x1)  # t=1 is noise


def test_exact_velocity_has_zero_loss():
    x0 = jnp.broadcast_to(ATOM, (64, 2))
    loss, _ = flow_matching_loss(point_mass_velocity, None, x0, key=jax.random.key(0))
    assert float(loss) < 1e-10


def test_a_wrong_velocity_has_positive_loss():
    x0 = jnp.broadcast_to(ATOM, (64, 2))
    loss, _ = flow_matching_loss(lambda p, x, t: -point_mass_velocity(p, x, t), None, x0, key=jax.random.key(0))
    assert float(loss) > 0.1


@pytest.mark.parametrize("steps", [1, 3, 16])
def test_euler_on_the_exact_field_recovers_the_data_point_in_any_number_of_steps(steps):
    """The point-mass flow is straight, so even one Euler step from t=1 lands on the data."""
    x1 = jax.random.normal(jax.random.key(1), (8, 2))
    x0 = sample_ode(point_mass_velocity, None, x1, steps=steps, solver="euler")
    np.testing.assert_allclose(x0, jnp.broadcast_to(ATOM, x0.shape), atol=1e-4)


def test_heun_on_the_gaussian_marginal_velocity_reaches_the_transport_map():
    """The exact field of Gaussian data bends the paths; a fine second-order solve lands on μ + Σ^{1/2}z."""
    z = jax.random.normal(jax.random.key(2), (8, 2))
    field = lambda p, x, t: testing.gaussian_flow_velocity(x, t, mean=MEAN, cov=COV)
    x0 = jax.jit(lambda z: sample_ode(field, None, z, steps=32, solver="heun"))(z)
    np.testing.assert_allclose(x0, testing.gaussian_transport_map(z, mean=MEAN, cov=COV), atol=1e-3)


@given(steps=st.integers(1, 40), rate=st.floats(0.1, 2.0))
def test_euler_and_heun_match_their_closed_forms_on_a_linear_field(steps, rate):
    """dx/dt = r·x from t=1 to 0: Euler gives (1 − rh)^n x1, Heun (1 − rh + (rh)²/2)^n x1."""
    x1 = jnp.array([[1.5, -0.5]])
    field = lambda p, x, t: rate * x
    h = 1.0 / steps
    euler = sample_ode(field, None, x1, steps=steps, solver="euler")
    heun = sample_ode(field, None, x1, steps=steps, solver="heun")
    np.testing.assert_allclose(euler, (1 - rate * h) ** steps * x1, rtol=1e-4)
    np.testing.assert_allclose(heun, (1 - rate * h + (rate * h) ** 2 / 2) ** steps * x1, rtol=1e-4)


def test_bad_inputs_name_the_argument():
    with pytest.raises(ValueError, match=r"x0 must have shape \(batch, \*features\), got \(5,\)"):
        flow_matching_loss(point_mass_velocity, None, jnp.ones(5), key=jax.random.key(0))
    with pytest.raises(ValueError, match="x0 must be a floating array, got dtype int32"):
        flow_matching_loss(point_mass_velocity, None, jnp.ones((5, 2), jnp.int32), key=jax.random.key(0))
    with pytest.raises(ValueError, match="steps must be a positive int, got 0"):
        sample_ode(point_mass_velocity, None, jnp.ones((2, 2)), steps=0)
    with pytest.raises(ValueError, match="solver must be one of"):
        sample_ode(point_mass_velocity, None, jnp.ones((2, 2)), steps=2, solver="rk4")
    with pytest.raises(ValueError, match=r"apply_fn must return the shape of x_t \(4, 2\), got \(4, 3\)"):
        flow_matching_loss(lambda p, x, t: jnp.ones((4, 3)), None, jnp.ones((4, 2)), key=jax.random.key(0))
