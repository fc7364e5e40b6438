"""Noise schedules: VP identity, endpoints, monotone logSNR, the resolution shift, inverses, conversions."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from jaxlab.generative import schedules as S

VP_SCHEDULES = {
    "cosine": S.cosine,
    "cosine_shifted": functools.partial(S.cosine_shifted, image_d=16, noise_d=8),
    "cosine_interpolated": functools.partial(S.cosine_interpolated, image_d=128),
    "cosine_nichol": S.cosine_nichol,
    "ddpm_linear": S.ddpm_linear,
    "ddpm_linear_discrete": S.ddpm_linear_discrete,
}
ALL_SCHEDULES = {**VP_SCHEDULES, "linear_path": S.linear_path}
INTERIOR = jnp.linspace(0.01, 0.99, 99)


@pytest.mark.parametrize("name", sorted(VP_SCHEDULES))
def test_variance_preserving_schedules_have_unit_norm(name):
    values = VP_SCHEDULES[name](INTERIOR)
    np.testing.assert_allclose(values.alpha**2 + values.sigma**2, 1.0, atol=2e-6)


@pytest.mark.parametrize("name", sorted(ALL_SCHEDULES))
def test_logsnr_is_consistent_and_strictly_decreasing(name):
    values = ALL_SCHEDULES[name](INTERIOR)
    np.testing.assert_allclose(values.logsnr, 2 * np.log(values.alpha / values.sigma), rtol=1e-4, atol=1e-4)
    assert np.all(np.diff(np.asarray(values.logsnr)) < 0)


def test_endpoints_follow_the_convention():
    """t = 0 is (almost) clean data and t = 1 (almost) pure noise, in every schedule."""
    ends = jax.jit(lambda t: {name: schedule(t) for name, schedule in ALL_SCHEDULES.items()})(jnp.array([0.0, 1.0]))
    for name, values in ends.items():
        assert float(values.alpha[0]) > 0.999 and float(values.sigma[0]) < 0.02, name
        assert float(values.alpha[1]) < 0.01 and float(values.sigma[1]) > 0.99, name
    np.testing.assert_allclose(S.logsnr_cosine(jnp.array([0.0, 1.0])), [S.LOGSNR_MAX, S.LOGSNR_MIN], rtol=1e-4)
    np.testing.assert_array_equal(ends["linear_path"].alpha, [1.0, 0.0])
    np.testing.assert_array_equal(ends["linear_path"].sigma, [0.0, 1.0])


def test_unclipped_cosine_is_cos_and_sin():
    """With very wide clipping the logSNR-cosine is α = cos(πt/2), σ = sin(πt/2)."""
    t = jnp.linspace(0.05, 0.95, 19)
    values = S.cosine(t, logsnr_min=-60.0, logsnr_max=60.0)
    np.testing.assert_allclose(values.alpha, np.cos(np.pi * t / 2), atol=1e-5)
    np.testing.assert_allclose(values.sigma, np.sin(np.pi * t / 2), atol=1e-5)


@given(t=st.floats(0.0, 1.0), image_d=st.sampled_from([4, 8, 32, 128, 512]), noise_d=st.sampled_from([8, 32, 64]))
def test_shift_identity(t, image_d, noise_d):
    shifted = S.logsnr_cosine_shifted(jnp.float32(t), image_d=image_d, noise_d=noise_d)
    np.testing.assert_allclose(shifted - S.logsnr_cosine(jnp.float32(t)), 2 * math.log(noise_d / image_d), atol=1e-4)


def test_shift_matches_average_pooling_of_noise():
    """Average-pooling k×k iid noise divides its variance by k², i.e. adds 2·log k to logSNR."""
    noise = np.random.default_rng(0).normal(size=(400, 32, 32))
    pooled = noise.reshape(400, 8, 4, 8, 4).mean(axis=(2, 4))
    np.testing.assert_allclose(np.var(pooled), 1 / 16, rtol=0.02)
    t = jnp.float32(0.4)
    shift = S.logsnr_cosine_shifted(t, image_d=32, noise_d=8) - S.logsnr_cosine(t)
    np.testing.assert_allclose(float(shift), -math.log(16), rtol=1e-5)


def test_interpolated_schedule_meets_its_shifted_ends():
    t = jnp.array([0.0, 1.0])
    interp = S.logsnr_cosine_interpolated(t, image_d=512, noise_d_low=32, noise_d_high=256)
    np.testing.assert_allclose(interp[0], S.logsnr_cosine_shifted(t[0], image_d=512, noise_d=256), rtol=1e-6)
    np.testing.assert_allclose(interp[1], S.logsnr_cosine_shifted(t[1], image_d=512, noise_d=32), rtol=1e-6)


@given(t=st.floats(0.0, 1.0))
def test_cosine_inverse_and_bisection_recover_the_time(t):
    logsnr = S.logsnr_cosine(jnp.float32(t))
    np.testing.assert_allclose(S.logsnr_cosine_inverse(logsnr), t, atol=2e-5)
    np.testing.assert_allclose(S.time_at_logsnr(S.cosine, logsnr), t, atol=2e-5)


def test_discrete_ddpm_is_exact_on_its_grid_and_close_to_its_continuous_limit():
    betas = np.linspace(1e-4, 0.02, 1000)
    alpha_bar = np.cumprod(1 - betas)
    steps = np.array([1, 10, 250, 500, 999, 1000])
    values = S.ddpm_linear_discrete(jnp.asarray(steps / 1000, jnp.float32))
    np.testing.assert_allclose(values.alpha**2, alpha_bar[steps - 1], rtol=2e-4, atol=1e-7)
    # log(1 − β) = −β − β²/2 − …: the sum of the β²/2 terms (≤ 0.07) is what the limit drops.
    continuous = S.ddpm_linear(INTERIOR)
    discrete = S.ddpm_linear_discrete(INTERIOR)
    np.testing.assert_allclose(discrete.logsnr, continuous.logsnr, atol=0.1)


def test_karras_grid_endpoints_and_times():
    sigmas = S.karras_sigmas(18)
    np.testing.assert_allclose([sigmas[0], sigmas[-1]], [80.0, 0.002], rtol=1e-5)
    assert np.all(np.diff(np.asarray(sigmas)) < 0)
    times = S.times_for_sigmas(S.cosine, sigmas)
    values = S.cosine(times)
    np.testing.assert_allclose(values.sigma / values.alpha, sigmas, rtol=1e-3)


@functools.cache
def _round_trips(schedule):
    """A jitted (x0, eps, t) -> (back-converted pairs, pairwise conversions vs direct targets)."""

    @jax.jit
    def run(x0, eps, t):
        c = S.coefficients(schedule, t, 2)
        x_t = c.alpha * x0 + c.sigma * eps
        backs, pairs = {}, {}
        for kind in S.PREDICTIONS:
            target = S.from_x0_eps(kind, x0, eps, c)
            backs[kind] = S.to_x0_eps(kind, target, x_t, c)
            for other in S.PREDICTIONS:
                converted = S.convert_prediction(target, x_t, t, schedule=schedule, source=kind, target=other)
                pairs[kind, other] = (converted, S.from_x0_eps(other, x0, eps, c))
        return backs, pairs

    return run


@pytest.mark.parametrize("schedule", [S.cosine, S.linear_path, S.ddpm_linear], ids=["cosine", "linear", "ddpm"])
@given(seed=st.integers(0, 1000))
def test_prediction_conversions_round_trip(schedule, seed):
    rng = np.random.default_rng(seed)
    x0, eps = rng.normal(size=(2, 6, 3)).astype(np.float32)
    t = rng.uniform(0.05, 0.95, size=6).astype(np.float32)
    backs, pairs = _round_trips(schedule)(x0, eps, t)
    for kind, (back_x0, back_eps) in backs.items():
        np.testing.assert_allclose(back_x0, x0, atol=5e-4, err_msg=kind)
        np.testing.assert_allclose(back_eps, eps, atol=5e-4, err_msg=kind)
    for (kind, other), (converted, direct) in pairs.items():
        np.testing.assert_allclose(converted, direct, atol=2e-3, err_msg=f"{kind}->{other}")


def test_velocity_is_the_time_derivative_of_the_path():
    """u = α'·x0 + σ'·ε is d/dt (α_t x0 + σ_t ε), checked by finite differences."""
    x0, eps = jnp.array([[1.0, -2.0]]), jnp.array([[0.3, 0.7]])
    t, h = jnp.array([0.37]), 1e-3
    path = lambda u: S.cosine(u)[0][:, None] * x0 + S.cosine(u)[1][:, None] * eps
    finite = (path(t + h) - path(t - h)) / (2 * h)
    np.testing.assert_allclose(S.from_x0_eps("velocity", x0, eps, S.coefficients(S.cosine, t, 2)), finite, rtol=1e-3)


def test_eps_error_scale_converts_output_errors():
    t = jnp.array([0.2, 0.5, 0.8])
    c = S.coefficients(S.cosine, t, 2)
    d_eps = jnp.array([[0.1], [-0.2], [0.3]])
    for kind in S.PREDICTIONS:
        zero = jnp.zeros((3, 1))
        d_output = S.from_x0_eps(kind, -c.sigma / c.alpha * d_eps, d_eps, c) - S.from_x0_eps(kind, zero, zero, c)
        np.testing.assert_allclose(S.eps_error_scale(kind, c) * d_output**2, d_eps**2, rtol=1e-4, err_msg=kind)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="prediction must be one of"):
        S.check_prediction("score")
    with pytest.raises(ValueError, match="image_d must be positive, got 0"):
        S.logsnr_cosine_shifted(0.5, image_d=0)
    with pytest.raises(ValueError, match="num_steps must be an int >= 2, got 1"):
        S.karras_sigmas(1)
    with pytest.raises(ValueError, match="logsnr_min must be < logsnr_max"):
        S.logsnr_cosine(0.5, logsnr_min=3.0, logsnr_max=1.0)
