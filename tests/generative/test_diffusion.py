"""Diffusion loss, samplers and ODE likelihood against a Gaussian data set's closed-form denoiser.

For data x0 ~ N(μ, Σ) the marginal at t is N(α·μ, α²Σ + σ²I) and the
posterior means are E[x0 | x_t] = μ + αΣ(α²Σ + σ²I)⁻¹(x_t − αμ) and
E[ε | x_t] = σ(α²Σ + σ²I)⁻¹(x_t − αμ): an exact "network" for every
prediction kind, so the samplers must reproduce (μ, Σ) and the ODE
likelihood must equal log N(x; μ, Σ).
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab import testing
from jaxlab.generative import schedules as S
from jaxlab.generative.diffusion import (
    Diffusion,
    classifier_free_guidance,
    diffusion_loss,
    ode_log_likelihood,
    sample_ddim,
    sample_ddpm,
    sample_pf_ode,
    uniform_times,
)
from jaxlab.generative.likelihood import bits_per_dim, exact_divergence, hutchinson_divergence
from jaxlab.train import Context


def rbg_key(seed):
    """A typed key of the "rbg" generator: much quicker for XLA to compile than threefry."""
    return jax.random.key(seed, impl="rbg")


MU = jnp.array([0.5, -1.0, 0.2])
EIGENVALUES = jnp.array([0.3, 1.0, 2.5])
ROTATION = jnp.asarray(np.linalg.qr(np.random.default_rng(0).normal(size=(3, 3)))[0], jnp.float32)
COV = ROTATION @ jnp.diag(EIGENVALUES) @ ROTATION.T  # a rotated, non-diagonal covariance


def gaussian_data(seed, num):
    cov = np.asarray(COV, np.float64)
    return jnp.asarray(np.random.default_rng(seed).multivariate_normal(np.asarray(MU), (cov + cov.T) / 2, size=num), jnp.float32)


def gaussian_oracle(schedule, prediction, cov=COV):
    """``apply_fn(params, x, t)`` returning the exact posterior-mean prediction of kind ``prediction``."""

    def apply_fn(params, x, t, *unused):
        del params, unused
        c = S.coefficients(schedule, t, x.ndim)
        x0, eps = testing.gaussian_posterior(x, c.alpha, c.sigma, mean=MU, cov=cov)
        return S.from_x0_eps(prediction, x0, eps, c)

    return apply_fn


def gaussian_log_density(x):
    return testing.gaussian_log_density(x, mean=MU, cov=COV)


def affine_moments(sampler):
    """Mean and covariance of an affine map's output for standard normal input (3,), from f(0) and its Jacobian."""
    jacobian, offset = jax.jacfwd(lambda z: (sampler(z[None])[0],) * 2, has_aux=True)(jnp.zeros(3))
    return offset, jacobian @ jacobian.T


def test_deterministic_samplers_push_noise_to_the_data_distribution():
    """DDIM(η=0) and Heun are affine maps here: their exact output moments must match (μ, Σ).

    DDIM is first order (its covariance error shrinks ~4× per 4× steps), Heun second order.
    """
    oracle = gaussian_oracle(S.cosine, "eps")

    @jax.jit
    def moments():
        heun = functools.partial(sample_pf_ode, oracle, None, schedule=S.cosine, times=uniform_times(32), solver="heun")
        ddim = [functools.partial(sample_ddim, oracle, None, schedule=S.cosine, times=uniform_times(n)) for n in (64, 256)]
        return [affine_moments(sampler) for sampler in (heun, *ddim)]

    (heun_mean, heun_cov), *ddim = moments()
    np.testing.assert_allclose(heun_mean, MU, atol=5e-3)
    np.testing.assert_allclose(heun_cov, COV, atol=5e-3)
    for mean, _ in ddim:
        np.testing.assert_allclose(mean, MU, atol=5e-3)
    errors = [float(jnp.max(jnp.abs(cov - COV))) for _, cov in ddim]
    assert errors[1] < 0.04 and errors[1] < errors[0] / 3, errors


@pytest.mark.optimized  # running it dominates: 20,000 chains × 500 steps
def test_ancestral_sampler_reproduces_the_moments():
    oracle = gaussian_oracle(S.cosine, "eps")
    n = 20_000
    x_start = jnp.asarray(np.random.default_rng(1).normal(size=(n, 3)), jnp.float32)
    run = jax.jit(lambda x: sample_ddpm(oracle, None, x, key=rbg_key(2), schedule=S.cosine, times=uniform_times(500)))
    samples = np.asarray(run(x_start))
    variances = np.diag(np.asarray(COV))
    np.testing.assert_array_less(np.abs(samples.mean(0) - MU), 5 * np.sqrt(variances / n))
    # 5 standard errors of a covariance entry plus the sampler's O(1/steps) shrinkage (~1% at 500 steps).
    stderr = np.sqrt((np.outer(variances, variances) + np.asarray(COV) ** 2) / n)
    np.testing.assert_array_less(np.abs(np.cov(samples.T) - np.asarray(COV)), 5 * stderr + 0.03)


def test_ddim_with_eta_one_is_the_ancestral_step_and_eta_zero_is_deterministic():
    oracle = gaussian_oracle(S.cosine, "v")
    x_start = jnp.asarray(np.random.default_rng(3).normal(size=(16, 3)), jnp.float32)
    common = dict(schedule=S.cosine, times=uniform_times(12), prediction="v")
    key = rbg_key(4)

    @jax.jit
    def run(x):
        return (
            sample_ddpm(oracle, None, x, key=key, **common),
            sample_ddim(oracle, None, x, key=key, eta=1.0, **common),
            sample_ddim(oracle, None, x, key=rbg_key(5), **common),
            sample_ddim(oracle, None, x, key=rbg_key(6), **common),
            sample_ddim(oracle, None, x, key=key, eta=0.5, **common),
        )

    ddpm, ddim_1, first, second, half = run(x_start)
    np.testing.assert_allclose(ddim_1, ddpm, atol=1e-3)  # two algebraically equal float32 formulas
    np.testing.assert_array_equal(first, second)
    assert not np.allclose(half, first, atol=1e-3)


@pytest.mark.parametrize(
    "schedule, prediction, tolerance",
    [(S.cosine, "eps", 1e-3), (S.linear_path, "velocity", 1e-4)],
    ids=["cosine-eps", "linear-velocity"],
)
def test_ode_likelihood_equals_the_closed_form_log_density(schedule, prediction, tolerance):
    """Within 1e-3 nats/dim (the clipped cosine's prior N(0, σ1²) ignores α1·μ ≈ 5e-4·μ; the path's is exact)."""
    x = gaussian_data(1, 32)
    oracle = gaussian_oracle(schedule, prediction)
    log_p = jax.jit(lambda x: ode_log_likelihood(oracle, None, x, schedule=schedule, prediction=prediction, steps=48, solver="rk4"))(x)
    per_dim_error = np.abs(np.asarray(log_p - gaussian_log_density(x))) / 3
    assert per_dim_error.max() < tolerance, per_dim_error.max()


def test_hutchinson_estimator_is_unbiased_and_exact_for_diagonal_jacobians():
    """Rademacher z gives zᵀDz = tr D exactly for diagonal D; for a full matrix the probe mean converges."""
    matrix = jnp.asarray(np.random.default_rng(2).normal(size=(4, 4)), jnp.float32)
    x = jnp.ones((2, 4))
    full = lambda y: y @ matrix.T
    diagonal = lambda y: y * jnp.arange(1.0, 5.0)

    @jax.jit
    def traces():
        probes = jax.random.rademacher(rbg_key(7), (4096, 2, 4), jnp.float32)
        return exact_divergence(full, x)[1], hutchinson_divergence(full, x, probes)[1], hutchinson_divergence(diagonal, x, probes[:1])[1]

    exact, estimate, single = traces()
    np.testing.assert_allclose(exact, jnp.trace(matrix), rtol=1e-5)
    off_diagonal = float(jnp.sqrt(jnp.sum(matrix**2) - jnp.sum(jnp.diag(matrix) ** 2)))
    np.testing.assert_array_less(np.abs(estimate - jnp.trace(matrix)), 5 * np.sqrt(2) * off_diagonal / 64)
    np.testing.assert_allclose(single, 10.0, rtol=1e-6)


def test_hutchinson_likelihood_matches_the_exact_one_on_a_diagonal_gaussian():
    x = jnp.asarray(np.random.default_rng(2).normal(size=(8, 3)), jnp.float32)
    oracle = gaussian_oracle(S.cosine, "eps", cov=EIGENVALUES)  # diagonal
    run = jax.jit(
        lambda trace: ode_log_likelihood(oracle, None, x, schedule=S.cosine, steps=24, trace=trace, key=rbg_key(8)),
        static_argnums=0,
    )
    np.testing.assert_allclose(run("hutchinson"), run("exact"), atol=1e-4)


def test_bits_per_dim_of_a_uniform_density_is_log2_of_the_levels():
    width = 2 / 16  # 17 levels on [-1, 1], each owning a cell of width 1/8
    uniform = -64 * math.log(17 * width)
    np.testing.assert_allclose(bits_per_dim(jnp.float32(uniform), 64, bin_width=width), math.log2(17), rtol=1e-6)


def test_weightings_agree_across_parameterizations():
    """Same key, same (t, ε): the ε-space weighting makes the loss independent of what is predicted."""
    x0 = jnp.asarray(np.random.default_rng(8).normal(size=(32, 3)), jnp.float32)
    crude = lambda params, x, t: 0.5 * x + 0.1 * t[:, None]
    key = rbg_key(9)

    def as_kind(kind):
        return lambda p, x, t: S.convert_prediction(crude(p, x, t), x, t, schedule=S.cosine, source="eps", target=kind)

    common = dict(key=key, schedule=S.cosine, t_min=0.02, t_max=0.98)

    @jax.jit
    def losses(x0):
        by_weighting = {
            weighting: [diffusion_loss(as_kind(kind), None, x0, prediction=kind, weighting=weighting, **common)[0] for kind in S.PREDICTIONS]
            for weighting in ("eps", "x0", "v", "min_snr", "sigmoid")
        }
        # "none" is the plain MSE of the kind, i.e. the weighting named after that kind (VP schedules).
        plain = {kind: diffusion_loss(as_kind(kind), None, x0, prediction=kind, **common)[0] for kind in ("eps", "x0", "v")}
        weighted = {kind: diffusion_loss(crude, None, x0, weighting=kind, **common)[0] for kind in ("eps", "x0", "v")}
        return by_weighting, plain, weighted

    by_weighting, plain, weighted = losses(x0)
    for weighting, values in by_weighting.items():
        np.testing.assert_allclose(values, values[0], rtol=2e-3, err_msg=weighting)
    for kind in plain:
        np.testing.assert_allclose(plain[kind], weighted[kind], rtol=2e-3, err_msg=kind)


def test_linear_path_velocity_loss_is_flow_matching():
    """Straight path + velocity target + no weighting: MSE of v(x_t, t) against x1 − x0 at x_t = (1 − t)x0 + t·x1."""
    from jaxlab.generative import interpolate
    from jaxlab.train import named_key

    x0 = jnp.asarray(np.random.default_rng(10).normal(size=(64, 2)), jnp.float32)
    net = lambda params, x, t: x * params + t[:, None]
    key = rbg_key(11)

    @jax.jit
    def both(x):
        ours = diffusion_loss(net, 0.3, x, key=key, schedule=S.linear_path, prediction="velocity")[0]
        t = jax.random.uniform(named_key(key, "time"), x.shape[:1])
        x1 = jax.random.normal(named_key(key, "noise"), x.shape)
        return ours, jnp.mean(jnp.square(net(0.3, interpolate(x, x1, t), t) - (x1 - x)))

    ours, direct = both(x0)
    np.testing.assert_allclose(ours, direct, rtol=1e-5)


def test_the_exact_denoiser_minimises_the_loss():
    oracle = gaussian_oracle(S.cosine, "eps")
    scaled = lambda scale: lambda p, x, t: scale * oracle(p, x, t)
    losses = jax.jit(lambda x0: [diffusion_loss(scaled(s), None, x0, key=rbg_key(13), schedule=S.cosine)[0] for s in (1.0, 0.9, 1.1)])(gaussian_data(12, 4096))
    assert losses[0] < losses[1] and losses[0] < losses[2], losses


def test_classifier_free_guidance_combines_conditional_and_unconditional():
    net = lambda params, x, t, labels: x + labels[:, None].astype(x.dtype)
    guided = classifier_free_guidance(net, scale=3.0, null_label=10)
    x, t, labels = jnp.zeros((2, 1)), jnp.zeros(2), jnp.array([2, 5])
    np.testing.assert_allclose(guided(None, x, t, labels), (10 + 3 * (labels - 10))[:, None])
    np.testing.assert_allclose(classifier_free_guidance(net, scale=1.0, null_label=10)(None, x, t, labels), labels[:, None])


def test_adapter_trains_samples_and_scores_with_the_oracle():
    oracle = gaussian_oracle(S.cosine, "v")
    method = Diffusion(apply_fn=oracle, init_fn=lambda key, x, t: None, data_shape=(3,), prediction="v", sampler="heun")
    batch = {"x": jnp.zeros((8, 3))}
    ctx = Context(step=0, ema_params=None)
    loss, aux = jax.jit(lambda b: method.loss(method.init(rbg_key(0), b), b, key=rbg_key(1), ctx=ctx))(batch)
    assert np.isfinite(float(loss)) and "mse" in aux
    samples = jax.jit(functools.partial(method.sample, num=512, steps=16))(None, key=rbg_key(2))
    assert samples.shape == (512, 3)
    np.testing.assert_allclose(np.mean(samples, 0), MU, atol=0.25)
    x = gaussian_data(3, 4)
    log_prob = jax.jit(functools.partial(method.log_prob, steps=32))
    np.testing.assert_allclose(log_prob(None, x), gaussian_log_density(x), atol=1e-2)


def test_bad_inputs_name_the_argument():
    oracle = gaussian_oracle(S.cosine, "eps")
    with pytest.raises(ValueError, match=r"x0 must have shape \(batch, \*features\), got \(3,\)"):
        diffusion_loss(oracle, None, jnp.ones(3), key=rbg_key(0), schedule=S.cosine)
    with pytest.raises(ValueError, match="weighting must be one of"):
        diffusion_loss(oracle, None, jnp.ones((2, 3)), key=rbg_key(0), schedule=S.cosine, weighting="snr2")
    with pytest.raises(ValueError, match="eta must be in"):
        sample_ddim(oracle, None, jnp.ones((2, 3)), schedule=S.cosine, times=uniform_times(2), eta=2.0)
    with pytest.raises(ValueError, match="key is required when eta > 0"):
        sample_ddim(oracle, None, jnp.ones((2, 3)), schedule=S.cosine, times=uniform_times(2), eta=0.5)
    with pytest.raises(ValueError, match=r"times must have shape \(steps \+ 1,\)"):
        sample_pf_ode(oracle, None, jnp.ones((2, 3)), schedule=S.cosine, times=jnp.ones(1))
    with pytest.raises(ValueError, match="steps must be a positive int, got 0"):
        uniform_times(0)
    with pytest.raises(ValueError, match="key is required when trace='hutchinson'"):
        ode_log_likelihood(oracle, None, jnp.ones((2, 3)), schedule=S.cosine, trace="hutchinson")
    with pytest.raises(ValueError, match="sampler must be one of"):
        Diffusion(apply_fn=oracle, init_fn=None, data_shape=(3,), sampler="dpm")
