"""Fourier basis density: non-negativity, normalization, CDF and bins against quadrature, the fit."""

import itertools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.integrate
import scipy.stats
from hypothesis import given
from hypothesis import strategies as st

from jaxlab.density import (
    FourierParams,
    fit_fourier_density,
    fourier_bin_probabilities,
    fourier_cdf,
    fourier_coefficients,
    fourier_log_prob,
    fourier_sample,
    init_fourier_params,
    num_parameters,
    periodic_cdf,
    smoothness_penalty,
)


def random_params(seed: int, num_terms: int = 5, log_scale: float = 0.3, offset: float = -0.4) -> FourierParams:
    a = np.random.default_rng(seed).normal(size=(2, num_terms + 1)).astype(np.float32)
    return FourierParams(jnp.asarray(a[0]), jnp.asarray(a[1]), jnp.float32(log_scale), jnp.float32(offset))


def density_fn(params, periodic):
    """A jitted scalar density for scipy's quadrature (one compilation, cheap calls)."""
    evaluate = jax.jit(lambda x: jnp.exp(fourier_log_prob(params, x, periodic=periodic)))
    return lambda x: float(evaluate(np.float32(x)))


def quad(f, low, high):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", scipy.integrate.IntegrationWarning)  # float32 round-off at 1e-8
        return scipy.integrate.quad(f, low, high, limit=200)[0]


def test_coefficients_are_the_autocorrelation_of_the_amplitudes():
    params = random_params(0)
    a = np.asarray(params.real) + 1j * np.asarray(params.imag)
    naive = [sum(a[k + n] * np.conj(a[k]) for k in range(len(a) - n)) for n in range(len(a))]
    np.testing.assert_allclose(fourier_coefficients(jnp.asarray(a)), naive, rtol=1e-5, atol=1e-5)


@given(seed=st.integers(0, 10_000))
def test_density_is_non_negative_and_equals_the_fourier_series_with_coefficients_c(seed):
    """|A(u)|²/(2c_0) (what the model evaluates) equals Σ c_n e^{inπu}/(2c_0) (the series) and is >= 0."""
    params = random_params(seed)
    u = np.linspace(-1, 1, 301)
    c = np.asarray(fourier_coefficients(params.real + 1j * params.imag))
    n = np.arange(1, len(c))
    series = (c[0].real + 2 * np.real(np.exp(1j * np.pi * np.outer(u, n)) @ c[1:])) / (2 * c[0].real)
    model = np.exp(np.asarray(fourier_log_prob(params, jnp.asarray(u, jnp.float32), periodic=True)))
    assert (model >= 0).all() and (series > -1e-5).all()
    np.testing.assert_allclose(model, series, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("periodic", [True, False])
def test_density_integrates_to_one(periodic):
    params = random_params(1)
    bounds = (-1, 1) if periodic else (-np.inf, np.inf)
    total = quad(density_fn(params, periodic), *bounds)
    assert total == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize("periodic", [True, False])
def test_cdf_matches_quadrature_and_is_monotone(periodic):
    params = random_params(2)
    low = -1.0 if periodic else -np.inf
    points = [-0.7, -0.1, 0.35, 0.9] if periodic else [-3.0, -0.5, 0.2, 2.5]
    model = np.asarray(fourier_cdf(params, jnp.asarray(points, jnp.float32), periodic=periodic))
    f = density_fn(params, periodic)
    expected = [quad(f, low, b) for b in points]
    np.testing.assert_allclose(model, expected, atol=1e-4)
    grid = jnp.linspace(-1, 1, 2001) if periodic else jnp.linspace(-30, 30, 2001)
    values = np.asarray(fourier_cdf(params, grid, periodic=periodic))
    assert (np.diff(values) >= -1e-6).all()
    np.testing.assert_allclose(periodic_cdf(params, jnp.array([-1.0, 1.0])), [0.0, 1.0], atol=1e-6)


@pytest.mark.parametrize("periodic", [True, False])
def test_bin_probabilities_sum_to_one_and_match_quadrature(periodic):
    params = random_params(3)
    edges = np.array([-1, -0.5, 0.0, 0.3, 1]) if periodic else np.array([-np.inf, -2.0, 0.0, 0.5, 3.0, np.inf])
    probs = np.asarray(fourier_bin_probabilities(params, jnp.asarray(edges, jnp.float32), periodic=periodic))
    assert (probs >= 0).all()
    assert probs.sum() == pytest.approx(1.0, abs=1e-5)
    f = density_fn(params, periodic)
    expected = [quad(f, a, b) for a, b in itertools.pairwise(edges)]
    np.testing.assert_allclose(probs, expected, atol=1e-4)


def test_smoothness_penalty_is_the_integrated_squared_derivative():
    params = random_params(4)
    derivative = jax.jit(jax.grad(lambda u: jnp.exp(fourier_log_prob(params, u, periodic=True))))
    total = quad(lambda u: float(derivative(np.float32(u))) ** 2, -1, 1)
    assert float(smoothness_penalty(params)) == pytest.approx(total, rel=1e-3)


def test_uniform_initialization_is_the_logistic_distribution_with_the_requested_std():
    params = init_fourier_params(4, key=jax.random.key(0), loc=1.5, scale=2.0, jitter=0.0)
    x = jnp.linspace(-6, 9, 7)
    expected = scipy.stats.logistic(loc=1.5, scale=2.0 * np.sqrt(3) / np.pi).logpdf(np.asarray(x))
    np.testing.assert_allclose(fourier_log_prob(params, x), expected, rtol=1e-5, atol=1e-5)
    assert num_parameters(4) == 12 and num_parameters(4, periodic=True) == 10


def test_maximum_likelihood_fit_approaches_the_true_entropy_and_samples_follow_the_cdf():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(-2.0, 0.3, 1500), rng.normal(1.5, 0.5, 1500)]).astype(np.float32)
    mixture = lambda v: 0.5 * scipy.stats.norm.pdf(v, -2.0, 0.3) + 0.5 * scipy.stats.norm.pdf(v, 1.5, 0.5)
    held_out = np.concatenate([rng.normal(-2.0, 0.3, 2000), rng.normal(1.5, 0.5, 2000)]).astype(np.float32)
    params, losses = fit_fourier_density(jnp.asarray(x), num_terms=9, key=jax.random.key(0), steps=300, learning_rate=3e-2)
    assert losses[-1] < losses[0]
    model_nll = -float(jnp.mean(fourier_log_prob(params, jnp.asarray(held_out))))
    true_nll = -float(np.mean(np.log(mixture(held_out))))
    assert true_nll - 0.02 < model_nll < true_nll + 0.05
    samples = np.asarray(fourier_sample(params, key=jax.random.key(1), num=2000))
    cdf = lambda v: np.asarray(fourier_cdf(params, jnp.asarray(v, jnp.float32)))
    assert scipy.stats.kstest(samples, cdf).pvalue > 1e-3


def test_bad_inputs_name_the_argument():
    params = random_params(5)
    with pytest.raises(ValueError, match=r"x must have shape \(n,\) with n >= 2, got \(3, 2\)"):
        fit_fourier_density(jnp.ones((3, 2)), num_terms=3, key=jax.random.key(0))
    with pytest.raises(ValueError, match="x must be a floating array, got dtype int32"):
        fourier_log_prob(params, jnp.ones(3, jnp.int32))
    with pytest.raises(ValueError, match=r"edges must have shape \(m \+ 1,\)"):
        fourier_bin_probabilities(params, jnp.ones(1))
    with pytest.raises(ValueError, match="num_terms must be a non-negative int, got -1"):
        init_fourier_params(-1, key=jax.random.key(0))
    with pytest.raises(ValueError, match="scale must be > 0, got 0.0"):
        init_fourier_params(3, key=jax.random.key(0), scale=0.0)
