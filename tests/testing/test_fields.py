"""jaxlab.testing's closed-form fields against Monte-Carlo regressions, scipy's ODE solver and scipy.stats.

For jointly Gaussian (x0, x_t) the conditional mean E[y | x_t] is the
least-squares affine regression of y on x_t, so a large-sample regression
estimates it without any of the closed form's algebra.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.integrate
import scipy.stats

from jaxlab.testing import (
    gaussian_flow_velocity,
    gaussian_log_density,
    gaussian_posterior,
    gaussian_reflow_velocity,
    gaussian_transport_map,
    point_mass_velocity,
)

MEAN = np.array([0.8, -0.5])
COV = np.array([[1.5, 0.6], [0.6, 0.5]])  # full, non-diagonal
VARIANCES = np.array([0.3, 2.0])
N = 200_000


def affine_map(fn, d=2):
    """(A, c) with fn(x) = x A + c, read off fn at 0 and at the basis vectors."""
    points = np.vstack([np.zeros(d), np.eye(d)])
    values = np.asarray(fn(jnp.asarray(points, jnp.float32)), np.float64)
    return values[1:] - values[0], values[0]


def regression(x, y):
    """Least-squares (A, c) of y ≈ x A + c."""
    design = np.hstack([x, np.ones((len(x), 1))])
    coefficients = np.linalg.lstsq(design, y, rcond=None)[0]
    return coefficients[:-1], coefficients[-1]


def gaussian_samples(seed, cov):
    rng = np.random.default_rng(seed)
    cov = np.diag(cov) if np.ndim(cov) == 1 else cov
    return rng.multivariate_normal(MEAN, cov, size=N), rng.standard_normal((N, 2))


@pytest.mark.parametrize("cov", [COV, VARIANCES], ids=["full", "diagonal"])
def test_posterior_means_equal_a_monte_carlo_regression(cov):
    x0, eps = gaussian_samples(0, cov)
    alpha, sigma = 0.6, 0.8
    x_t = alpha * x0 + sigma * eps
    for index, target in enumerate((x0, eps)):
        closed = affine_map(lambda x, index=index: gaussian_posterior(x, alpha, sigma, mean=MEAN, cov=cov)[index])
        estimated = regression(x_t, target)
        np.testing.assert_allclose(closed[0], estimated[0], atol=0.01)
        np.testing.assert_allclose(closed[1], estimated[1], atol=0.01)


@pytest.mark.parametrize("t", [0.1, 0.5, 0.9])
def test_flow_velocity_is_the_monte_carlo_conditional_mean_of_x1_minus_x0(t):
    x0, x1 = gaussian_samples(1, COV)
    x_t = (1 - t) * x0 + t * x1
    closed = affine_map(lambda x: gaussian_flow_velocity(x, t, mean=MEAN, cov=COV))
    estimated = regression(x_t, x1 - x0)
    np.testing.assert_allclose(closed[0], estimated[0], atol=0.02)
    np.testing.assert_allclose(closed[1], estimated[1], atol=0.02)


def test_integrating_the_velocity_from_noise_reaches_the_transport_map():
    z = np.random.default_rng(2).standard_normal((4, 2))
    field = jax.jit(lambda x, t: gaussian_flow_velocity(x, t, mean=MEAN, cov=COV))

    def rhs(t, x):
        return np.asarray(field(jnp.asarray(x.reshape(4, 2), jnp.float32), jnp.float32(t)), np.float64).ravel()

    solution = scipy.integrate.solve_ivp(rhs, (1.0, 0.0), z.ravel(), rtol=1e-7, atol=1e-7)
    endpoint = solution.y[:, -1].reshape(4, 2)
    np.testing.assert_allclose(endpoint, gaussian_transport_map(z, mean=MEAN, cov=COV), atol=1e-4)
    pushed = gaussian_transport_map(np.random.default_rng(3).standard_normal((N, 2)), mean=MEAN, cov=COV)
    np.testing.assert_allclose(np.cov(np.asarray(pushed, np.float64).T), COV, atol=0.02)


def test_reflow_velocity_is_constant_along_the_straight_coupled_paths():
    x1 = np.random.default_rng(4).standard_normal((5, 2))
    x0 = np.asarray(gaussian_transport_map(x1, mean=MEAN, cov=COV), np.float64)
    for t in (0.05, 0.4, 1.0):
        v = gaussian_reflow_velocity((1 - t) * x0 + t * x1, jnp.full(5, t), mean=MEAN, cov=COV)
        np.testing.assert_allclose(v, x1 - x0, atol=1e-5)


def test_point_mass_velocity_points_from_the_data_point_to_the_noise():
    point, x1 = np.array([0.7, -1.3]), np.random.default_rng(5).standard_normal((3, 2))
    t = np.array([0.1, 0.5, 1.0])
    np.testing.assert_allclose(point_mass_velocity((1 - t[:, None]) * point + t[:, None] * x1, t, point=point), x1 - point, atol=1e-5)


def test_log_density_equals_scipy():
    x = np.random.default_rng(6).normal(size=(7, 2)) * 2
    expected = scipy.stats.multivariate_normal(MEAN, COV).logpdf(x)
    np.testing.assert_allclose(gaussian_log_density(x, mean=MEAN, cov=COV), expected, rtol=1e-5)
    diagonal = scipy.stats.multivariate_normal(MEAN, np.diag(VARIANCES)).logpdf(x)
    np.testing.assert_allclose(gaussian_log_density(x, mean=MEAN, cov=VARIANCES), diagonal, rtol=1e-5)


def test_covariance_forms_agree_and_a_traced_covariance_works_under_jit_and_grad():
    x, t = jnp.asarray(np.random.default_rng(7).normal(size=(4, 2)), jnp.float32), jnp.array([0.2, 0.4, 0.6, 0.8])
    scalar = gaussian_flow_velocity(x, t, mean=MEAN, cov=0.7)
    np.testing.assert_allclose(gaussian_flow_velocity(x, t, mean=MEAN, cov=np.full(2, 0.7)), scalar, rtol=1e-6)
    np.testing.assert_allclose(gaussian_flow_velocity(x, t, mean=MEAN, cov=0.7 * np.eye(2)), scalar, rtol=1e-5, atol=1e-6)
    traced = jax.jit(lambda cov: gaussian_flow_velocity(x, t, mean=MEAN, cov=cov))(jnp.asarray(COV, jnp.float32))
    np.testing.assert_allclose(traced, gaussian_flow_velocity(x, t, mean=MEAN, cov=COV), rtol=1e-5, atol=1e-5)
    grad = jax.jit(jax.grad(lambda s: jnp.sum(gaussian_flow_velocity(x, t, mean=MEAN, cov=s**2))))(1.0)
    assert np.isfinite(grad)
    with pytest.raises(ValueError, match="`cov`"):
        gaussian_flow_velocity(x, t, mean=MEAN, cov=np.eye(3))


def test_per_example_times_broadcast_over_image_shaped_inputs_as_a_vmap_over_examples():
    x = jnp.asarray(np.random.default_rng(8).normal(size=(3, 4, 4, 2)), jnp.float32)
    t = jnp.array([0.2, 0.5, 0.9])

    @jax.jit
    def both(x, t):
        field = lambda x, t: gaussian_flow_velocity(x, t, mean=MEAN, cov=COV)
        return field(x, t), jax.vmap(field)(x, t)

    batched, mapped = both(x, t)
    np.testing.assert_allclose(batched, mapped, rtol=1e-6, atol=1e-6)
