"""DDCM: exact encode -> decode round trip, DDPM as the K = 1 special case, rate/quality on an analytic denoiser."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab.generative import sample_ddpm, schedules, uniform_times
from jaxlab.generative.ddcm import ddcm_bits, ddcm_decode, ddcm_encode, ddcm_generate, ddcm_start, psnr

D = 16
SCHEDULE = schedules.cosine


def gaussian_denoiser(params, x, t):
    """E[x0 | x_t] for data x0 ~ N(μ, s²·I): μ + α s² / (α² s² + σ²)·(x_t − α μ) (x0-prediction)."""
    mu, var = params
    values = SCHEDULE(t)
    alpha, sigma = values.alpha[:, None], values.sigma[:, None]
    return mu + alpha * var / (alpha**2 * var + sigma**2) * (x - alpha * mu)


PARAMS = (0.3 * jnp.sin(jnp.arange(D, dtype=jnp.float32)), jnp.float32(0.25))
TIMES = uniform_times(12)
COMMON = dict(schedule=SCHEDULE, times=TIMES, prediction="x0")


def targets(num, seed=0):
    return PARAMS[0] + 0.5 * jax.random.normal(jax.random.key(seed), (num, D))


@pytest.mark.parametrize("num_atoms", [1, 3])
def test_encode_then_decode_is_bitwise_exact(num_atoms):
    key = jax.random.key(7)
    x0 = targets(5)
    # not under an outer jit: the codec runs shared per-step programs (see the module docstring)
    encode = functools.partial(ddcm_encode, gaussian_denoiser, num_codes=32, num_atoms=num_atoms, **COMMON)
    code = encode(PARAMS, x0, key=key)
    assert code.indices.shape == (5, 11, num_atoms) and code.coefficient_indices.shape == (5, 11, num_atoms)
    assert int(code.indices.min()) >= 0 and int(code.indices.max()) < 32
    decode = functools.partial(ddcm_decode, gaussian_denoiser, num_codes=32, data_shape=(D,), **COMMON)
    decoded = decode(PARAMS, code.indices, key=key, coefficient_indices=code.coefficient_indices)
    np.testing.assert_array_equal(np.asarray(decoded), np.asarray(code.reconstruction))
    # a stored bitstream (host integers) decodes the same
    again = decode(PARAMS, np.asarray(code.indices), key=key, coefficient_indices=np.asarray(code.coefficient_indices))
    np.testing.assert_array_equal(np.asarray(again), np.asarray(code.reconstruction))
    # another key is another codebook: the same indices give another image
    other = decode(PARAMS, code.indices, key=jax.random.key(8), coefficient_indices=code.coefficient_indices)
    assert not np.allclose(np.asarray(other), np.asarray(code.reconstruction))


def test_one_code_per_step_is_ancestral_ddpm_with_the_same_noise():
    key = jax.random.key(3)
    x_start = ddcm_start(key, (1, D), **{k: COMMON[k] for k in ("schedule", "times")})
    decoded = ddcm_decode(gaussian_denoiser, PARAMS, jnp.zeros((1, 11, 1), jnp.int32), key=key, num_codes=1, data_shape=(D,), **COMMON)
    reference = sample_ddpm(gaussian_denoiser, PARAMS, x_start, key=key, **COMMON)
    np.testing.assert_allclose(decoded, reference, rtol=1e-5, atol=1e-5)


def test_more_codes_and_more_atoms_compress_better():
    key = jax.random.key(11)
    x0 = targets(16, seed=1)

    def mean_psnr(num_codes, num_atoms=1):
        code = ddcm_encode(gaussian_denoiser, PARAMS, x0, key=key, num_codes=num_codes, num_atoms=num_atoms, **COMMON)
        return float(jnp.mean(psnr(code.reconstruction, x0)))

    at_1, at_64 = mean_psnr(1), mean_psnr(64)
    assert at_64 > at_1 + 1.0, (at_1, at_64)
    assert mean_psnr(64, num_atoms=3) > at_64
    assert ddcm_bits(12, 64) == pytest.approx(11 * 6)
    assert ddcm_bits(12, 64, num_atoms=3, num_coefficients=4) == pytest.approx(11 * (6 + 2 * 8))


@pytest.mark.slow  # 2000 samples through a K = 512 codebook
def test_random_indices_sample_like_ddpm():
    """With many codes and random indices the codebook sampler matches Gaussian DDPM's moments."""
    num = 2000
    samples = ddcm_generate(gaussian_denoiser, PARAMS, num, key=jax.random.key(0), index_key=jax.random.key(1), num_codes=512, data_shape=(D,), **COMMON)
    x_start = SCHEDULE(TIMES[0]).sigma * jax.random.normal(jax.random.key(2), (num, D))
    reference = sample_ddpm(gaussian_denoiser, PARAMS, x_start, key=jax.random.key(3), **COMMON)
    np.testing.assert_allclose(jnp.mean(samples, 0), jnp.mean(reference, 0), atol=0.06)
    np.testing.assert_allclose(jnp.var(samples), jnp.var(reference), rtol=0.1)


def test_bad_inputs_are_rejected_with_the_argument_name():
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="num_codes"):
        ddcm_encode(gaussian_denoiser, PARAMS, targets(2), key=key, num_codes=0, **COMMON)
    with pytest.raises(ValueError, match="indices must have 11 steps"):
        ddcm_decode(gaussian_denoiser, PARAMS, jnp.zeros((2, 5, 1), jnp.int32), key=key, num_codes=4, data_shape=(D,), **COMMON)
    with pytest.raises(ValueError, match="indices must lie in"):
        ddcm_decode(gaussian_denoiser, PARAMS, jnp.full((2, 11, 1), 4), key=key, num_codes=4, data_shape=(D,), **COMMON)
    with pytest.raises(ValueError, match="coefficient_indices are required"):
        ddcm_decode(gaussian_denoiser, PARAMS, jnp.zeros((2, 11, 2), jnp.int32), key=key, num_codes=4, data_shape=(D,), **COMMON)
