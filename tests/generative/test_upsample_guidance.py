"""Upsample guidance: pooling algebra, the SNR time shift, the power adjustment, and m = 1."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from jaxlab.generative import schedules as S
from jaxlab.generative.samplers import sample_ddpm, uniform_times
from jaxlab.generative.upsample_guidance import (
    average_pool,
    guidance_weight,
    nearest_upsample,
    snr_matched_time,
    upsample_guidance,
)


def rbg_key(seed):
    """A typed key of the "rbg" generator: much quicker for XLA to compile than threefry."""
    return jax.random.key(seed, impl="rbg")


def toy_network(params, x, t):
    """A translation-equivariant stand-in for a convolutional denoiser (any resolution)."""
    del params
    neighbours = jnp.roll(x, 1, axis=1) + jnp.roll(x, -1, axis=2)
    return 0.6 * jnp.tanh(x) + 0.2 * neighbours + 0.3 * t[:, None, None, None]


def test_pooling_and_upsampling_are_a_section_pair():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(3, 4, 6, 2)), jnp.float32)
    np.testing.assert_allclose(average_pool(nearest_upsample(x, 3), 3), x, rtol=1e-6)
    noise = jnp.asarray(rng.normal(size=(256, 16, 16, 1)), jnp.float32)  # 4,096 pooled values: ±2.2 % per σ
    np.testing.assert_allclose(float(jnp.var(average_pool(noise, 4))), 1 / 16, rtol=0.1)


@functools.partial(jax.jit, static_argnums=1)
def _shifted_times(t, factor):
    """τ from upsample guidance (bisection) and from the cosine's closed-form inverse."""
    expected = S.logsnr_cosine_inverse(S.logsnr_cosine(t) + 2 * np.log(factor))
    return snr_matched_time(t, schedule=S.cosine, factor=factor), expected


@given(t=st.floats(0.3, 1.0), factor=st.sampled_from([1, 2, 4]))
def test_time_shift_adds_two_log_m_to_logsnr(t, factor):
    t = jnp.array([t], jnp.float32)
    tau, expected = _shifted_times(t, factor)
    np.testing.assert_allclose(tau, expected, atol=2e-5)
    assert float(tau[0]) <= float(t[0]) + 1e-6  # pooled images are less noisy


def test_power_adjustment_turns_a_pooled_high_res_sample_into_a_low_res_one():
    """c·D(α_t·U(y) + σ_t·ε) = α_τ·y + σ_τ·ε' with ε' = m·D(ε) standard normal."""
    factor, t = 2, jnp.array([0.7])
    high, low = S.cosine(t), S.cosine(snr_matched_time(t, schedule=S.cosine, factor=factor))
    power = jnp.sqrt((low.alpha**2 + low.sigma**2) / (high.alpha**2 + (high.sigma / factor) ** 2))
    np.testing.assert_allclose(power * high.alpha, low.alpha, rtol=1e-4)
    np.testing.assert_allclose(power * high.sigma / factor, low.sigma, rtol=1e-4)


def test_guided_prediction_takes_its_low_frequencies_from_the_low_res_model():
    """With w = 1 (t in the guided range): D(x̃0) is the low-resolution model's x̂0, and x_t = α·x̃0 + σ·ε̃."""
    factor = 2
    x = jnp.asarray(np.random.default_rng(2).normal(size=(4, 8, 8, 1)), jnp.float32)
    t = jnp.array([0.95, 0.9, 0.8, 0.2])  # the last is outside the guided range (fraction 0.6)
    prediction = "eps"
    guided = upsample_guidance(toy_network, schedule=S.cosine, prediction=prediction, factor=factor, scale=1.0, fraction=0.6)

    @jax.jit
    def compare(x, t):
        c = S.coefficients(S.cosine, t, 4)
        x0_guided, eps_guided = S.to_x0_eps("v", guided(None, x, t), x, c)
        tau = snr_matched_time(t, schedule=S.cosine, factor=factor)
        c_low = S.coefficients(S.cosine, tau, 4)
        x_low = jnp.sqrt((c_low.alpha**2 + c_low.sigma**2) / (c.alpha**2 + (c.sigma / factor) ** 2)) * average_pool(x, factor)
        x0_low, _ = S.to_x0_eps(prediction, toy_network(None, x_low, tau), x_low, c_low)
        x0_plain, _ = S.to_x0_eps(prediction, toy_network(None, x, t), x, c)
        return c.alpha * x0_guided + c.sigma * eps_guided, average_pool(x0_guided, factor), x0_low, x0_guided, x0_plain

    recombined, pooled_guided, x0_low, x0_guided, x0_plain = compare(x, t)
    np.testing.assert_allclose(recombined, x, atol=1e-5)
    np.testing.assert_allclose(pooled_guided[:3], x0_low[:3], atol=2e-4)
    np.testing.assert_allclose(x0_guided[3], x0_plain[3], atol=2e-4)  # unguided step: the plain model


def test_factor_one_reduces_to_plain_sampling():
    x_start = jnp.asarray(np.random.default_rng(3).normal(size=(4, 8, 8, 1)), jnp.float32)
    guided = upsample_guidance(toy_network, schedule=S.cosine, prediction="v", factor=1, scale=1.0, fraction=1.0)
    common = dict(key=rbg_key(4), schedule=S.cosine, times=uniform_times(8))

    @jax.jit
    def both(x):
        return sample_ddpm(guided, None, x, prediction="v", **common), sample_ddpm(toy_network, None, x, prediction="v", **common)

    with_guidance, plain = both(x_start)
    assert np.std(plain) > 0.1
    np.testing.assert_allclose(with_guidance, plain, rtol=1e-4, atol=1e-4)


def test_weight_schedule_guides_only_the_noisy_end():
    np.testing.assert_array_equal(guidance_weight(jnp.array([1.0, 0.5, 0.39, 0.0]), scale=2.0, fraction=0.6), [2.0, 2.0, 0.0, 0.0])


def test_bad_inputs_are_named():
    guided = upsample_guidance(toy_network, schedule=S.cosine, prediction="eps", factor=3)
    with pytest.raises(ValueError, match=r"height and width divisible by 3, got \(2, 8, 8, 1\)"):
        guided(None, jnp.ones((2, 8, 8, 1)), jnp.ones(2))
    with pytest.raises(ValueError, match="fraction must be in"):
        upsample_guidance(toy_network, schedule=S.cosine, prediction="eps", factor=2, fraction=1.5)
    with pytest.raises(ValueError, match="factor must be a positive int, got 0"):
        average_pool(jnp.ones((1, 4, 4, 1)), 0)
