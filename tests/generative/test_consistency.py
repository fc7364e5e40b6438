"""Consistency models: scalings, boundary condition, schedules, CT/iCT/CD losses against exact solutions, sampling."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given
from hypothesis import strategies as st

from jaxlab import testing
from jaxlab.generative import schedules
from jaxlab.generative.consistency import (
    EPS,
    ConsistencyTraining,
    ImprovedConsistencyTraining,
    consistency_function,
    consistency_training_loss,
    ct_num_scales,
    ct_target_decay,
    ict_num_scales,
    karras_sigma,
    sample_consistency,
    sampling_sigmas,
    scalings,
    sigma_to_time,
    time_to_sigma,
)
from jaxlab.generative.consistency_distillation import (
    ConsistencyDistillation,
    consistency_distillation_loss,
    heun_step,
    velocity_denoiser,
)
from jaxlab.nn import TimeMLP
from jaxlab.train.state import Context

MU = jnp.array([0.7, -1.3])  # a point-mass data set: every ODE trajectory is a straight line into MU


@given(sigma=st.floats(0.002, 200.0), sigma_data=st.floats(0.1, 3.0))
def test_scalings_match_the_paper_formulas(sigma, sigma_data):
    c_skip, c_out, c_in = scalings(jnp.float32(sigma), sigma_data=sigma_data, eps=EPS)
    np.testing.assert_allclose(c_skip, sigma_data**2 / ((sigma - EPS) ** 2 + sigma_data**2), rtol=1e-5)
    np.testing.assert_allclose(c_out, (sigma - EPS) * sigma_data / math.sqrt(sigma**2 + sigma_data**2), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(c_in, 1.0 / math.sqrt(sigma**2 + sigma_data**2), rtol=1e-5)
    # With eps = 0 they are EDM's, for which c_skip + c_out²/σ_d² = 1 (unit-variance training target).
    c_skip0, c_out0, _ = scalings(jnp.float32(sigma), sigma_data=sigma_data, eps=0.0)
    np.testing.assert_allclose(c_skip0 + c_out0**2 / sigma_data**2, 1.0, rtol=1e-5)


def test_scalings_limits():
    c_skip, c_out, _ = scalings(jnp.array([EPS, 1e4]))
    assert float(c_skip[0]) == 1.0 and float(c_out[0]) == 0.0
    np.testing.assert_allclose([c_skip[1], c_out[1]], [0.0, 0.5], atol=1e-4)


def _wild_network(params, x, t):  # large, x- and t-dependent outputs
    scale, shift = params
    return scale * jnp.sin(37.0 * x + shift) + 1e3 * t[:, None]


_at_eps = jax.jit(lambda params, x: consistency_function(_wild_network, params, x, jnp.full(x.shape[:1], EPS)))


@given(scale=st.floats(-1e4, 1e4), seed=st.integers(0, 2**16))
def test_boundary_condition_is_exact_for_any_network(scale, seed):
    x = jax.random.normal(jax.random.key(seed), (5, 2)) * 3.0
    out = _at_eps((jnp.float32(scale), jnp.float32(seed % 7)), x)
    np.testing.assert_array_equal(out, x)


def test_time_sigma_maps_are_inverse_and_match_the_straight_path():
    t = jnp.linspace(0.01, 0.99, 9)
    np.testing.assert_allclose(sigma_to_time(time_to_sigma(t)), t, rtol=1e-6)
    x0, z = jnp.array([[1.5, -0.5]]), jnp.array([[0.3, 2.0]])
    for ti in (0.2, 0.7):
        x_t = (1 - ti) * x0 + ti * z
        np.testing.assert_allclose(x_t / (1 - ti), x0 + time_to_sigma(ti) * z, rtol=1e-6)


def test_karras_grid_matches_the_schedules_module():
    n = 18
    ours = karras_sigma(jnp.arange(n), n)
    np.testing.assert_allclose(ours, schedules.karras_sigmas(n)[::-1], rtol=1e-5)
    np.testing.assert_allclose([ours[0], ours[-1]], [0.002, 80.0], rtol=1e-5)


def test_num_scales_and_target_decay_schedules():
    total = 1000
    ct = np.array([int(ct_num_scales(k, total)) for k in range(0, total + 1, 50)])
    assert ct[0] == 2 and ct[-1] == 151 and np.all(np.diff(ct) >= 0)
    np.testing.assert_allclose(ct_target_decay(2), 0.9, rtol=1e-6)  # μ(0) = μ0 when N = s0
    assert float(ct_target_decay(151)) > 0.99
    # iCT: K' = ⌊1000 / (log2 128 + 1)⌋ = 125; N doubles every K' steps from 11 and caps at 1281.
    ict = {k: int(ict_num_scales(k, total)) for k in (0, 124, 125, 250, 999)}
    assert ict == {0: 11, 124: 11, 125: 21, 250: 41, 999: 1281}


def _ict_reference(k: int, total: int, s0: int, s1: int) -> int:
    """iCT's N(k) written from the paper's formula in plain Python floats."""
    k_prime = math.floor(total / (math.log2(math.floor(s1 / s0)) + 1))
    return min(s0 * 2 ** math.floor(k / k_prime), s1) + 1


@pytest.mark.parametrize("s0, s1, total", [(10, 1000, 1000), (10, 1280, 1000), (3, 100, 777), (7, 7, 50)])
def test_ict_num_scales_matches_the_paper_for_ratios_that_are_not_powers_of_two(s0, s1, total):
    steps = np.arange(total + 1)
    ours = np.asarray(jax.vmap(lambda k: ict_num_scales(k, total, s0=s0, s1=s1))(steps))
    expected = np.array([_ict_reference(int(k), total, s0, s1) for k in steps])
    np.testing.assert_array_equal(ours, expected)
    assert ours[-1] == s1 + 1  # the schedule reaches its final count within the run


def test_ct_num_scales_keeps_one_sigma_interval_at_s0_equal_one():
    n = np.array([int(ct_num_scales(k, 100, s0=1, s1=20)) for k in range(101)])
    assert n.min() == 2 and n[-1] == 21
    sigma = karras_sigma(jnp.arange(2), ct_num_scales(0, 100, s0=1, s1=20))
    assert np.all(np.isfinite(np.asarray(sigma)))


@pytest.mark.parametrize("fn", [ct_num_scales, ict_num_scales])
@pytest.mark.parametrize("kwargs, match", [(dict(s0=0), "s0"), (dict(s0=5, s1=4), "s1 must be >= s0"), (dict(s0=2.5), "s0")])
def test_num_scales_reject_bad_scale_counts(fn, kwargs, match):
    with pytest.raises(ValueError, match=match):
        fn(0, 100, **kwargs)


def _exact_point_mass_network(params, x_in, t):
    """F such that f(x̃, σ) = MU + (x̃ − MU)·ε/σ, the exact consistency function of point-mass data."""
    sigma = time_to_sigma(t)
    c_skip, c_out, c_in = scalings(sigma)
    x = x_in / c_in[:, None]
    exact = MU + (x - MU) * (EPS / sigma)[:, None]
    c_out_safe = jnp.where(c_out > 0, c_out, 1.0)[:, None]
    return params + (exact - c_skip[:, None] * x) / c_out_safe


def _point_mass_velocity(params, x_t, t):
    del params
    return testing.point_mass_velocity(x_t, t, point=MU)  # E[x1 − x0 | x_t] when x0 = MU


def test_velocity_denoiser_oracles():
    x = jax.random.normal(jax.random.key(0), (6, 2)) * 4.0
    sigma = jnp.array([0.01, 0.3, 1.0, 3.0, 20.0, 80.0])
    np.testing.assert_allclose(velocity_denoiser(_point_mass_velocity, None, x, sigma), jnp.broadcast_to(MU, x.shape), rtol=2e-4, atol=2e-4)
    s2 = 0.8**2  # Gaussian data N(0, s²): exact flow velocity (t − (1 − t)s²)/var_t · x_t, EDM denoiser s²/(s² + σ²)·x̃

    def gaussian_velocity(params, x_t, t):
        return testing.gaussian_flow_velocity(x_t, t, mean=0.0, cov=s2)

    np.testing.assert_allclose(velocity_denoiser(gaussian_velocity, None, x, sigma), s2 / (s2 + sigma[:, None] ** 2) * x, rtol=1e-4, atol=1e-5)


def test_heun_step_is_exact_on_straight_trajectories():
    x = MU + 5.0 * jax.random.normal(jax.random.key(1), (4, 2))
    hi, lo = jnp.array([80.0, 5.0, 1.0, 0.1]), jnp.array([40.0, 2.0, 0.5, 0.002])
    out = heun_step(lambda x_, s: jnp.broadcast_to(MU, x_.shape), x, hi, lo)
    np.testing.assert_allclose(out, MU + (x - MU) * (lo / hi)[:, None], rtol=1e-5, atol=1e-4)


def _params_of(x):
    return jnp.zeros(x.shape[-1])


@pytest.mark.parametrize("improved", [False, True])
def test_training_losses_vanish_at_the_exact_solution_only(improved):
    x0 = jnp.broadcast_to(MU, (64, 2))
    kwargs = dict(key=jax.random.key(2), step=jnp.int32(300), total_steps=1000, improved=improved)
    zero = _params_of(x0)
    loss_fn = jax.jit(lambda p: consistency_training_loss(_exact_point_mass_network, p, zero, x0, **kwargs))
    loss, aux = loss_fn(zero)
    assert float(loss) < 1e-6 and int(aux["num_scales"]) > 2
    wrong, _ = loss_fn(zero + 0.1)
    assert float(wrong) > 1e3 * max(float(loss), 1e-9)


def test_distillation_loss_vanishes_with_an_exact_teacher_and_student():
    x0 = jnp.broadcast_to(MU, (64, 2))
    zero = _params_of(x0)
    kwargs = dict(key=jax.random.key(3), num_scales=18)
    loss, _ = consistency_distillation_loss(_exact_point_mass_network, zero, zero, _point_mass_velocity, None, x0, **kwargs)
    assert float(loss) < 1e-6
    wrong, _ = consistency_distillation_loss(_exact_point_mass_network, zero + 0.1, zero, _point_mass_velocity, None, x0, **kwargs)
    assert float(wrong) > 1e3 * max(float(loss), 1e-9)


def test_one_and_two_step_sampling_closed_forms():
    def zero_network(params, x, t):
        return jnp.zeros_like(x)

    noise = jax.random.normal(jax.random.key(4), (8, 2))
    key = jax.random.key(5)
    one = jax.jit(lambda z: sample_consistency(zero_network, None, z, key=key, steps=1))(noise)
    c_skip_max = scalings(jnp.float32(80.0))[0]
    np.testing.assert_allclose(one, c_skip_max * 80.0 * noise, rtol=1e-5)
    # The exact point-mass consistency function sends every start to MU in one step and stays there.
    draw = jax.jit(lambda z, steps: sample_consistency(_exact_point_mass_network, jnp.zeros(2), z, key=key, steps=steps), static_argnums=1)
    for steps in (1, 4):
        out = draw(noise, steps)
        assert float(jnp.max(jnp.abs(out - MU))) < 0.01


def test_sampling_levels_are_uniform_in_flow_time():
    t_max = 80.0 / 81.0
    np.testing.assert_allclose(sampling_sigmas(1), [80.0], rtol=1e-5)
    levels = sampling_sigmas(4)
    np.testing.assert_allclose(sigma_to_time(levels), t_max * np.array([1.0, 0.75, 0.5, 0.25]), rtol=1e-5)


def _adapters():
    net = TimeMLP(width=8, depth=1, time_features=8)
    common = dict(apply_fn=net.apply, init_fn=net.init, data_shape=(2,), total_steps=100)
    return net, {
        "ct": ConsistencyTraining(**common, optimizer=optax.adam(1e-3)),
        "ict": ImprovedConsistencyTraining(**common),
        "cd": ConsistencyDistillation(**common, teacher_apply_fn=net.apply),
    }


@pytest.mark.parametrize("name", ["ict", "cd"])  # CT's loss: test_ct_train_step_…
def test_adapter_losses_are_finite_and_compile_once(name):
    net, adapters = _adapters()
    method = adapters[name]
    batch = {"x": jax.random.normal(jax.random.key(6), (16, 2))}
    params = method.init(jax.random.key(7), batch)
    teacher = net.init(jax.random.key(8), batch["x"], jnp.zeros(16))
    testing.clear_trace_counter()

    @testing.jit_with_max_traces(n=1)
    def loss(params, batch, key, step):
        ctx = Context(step=step, ema_params=params, frozen=teacher)
        return method.loss(params, batch, key=key, ctx=ctx)

    for step in (0, 99):
        value, _ = loss(params, batch, jax.random.key(step), jnp.int32(step))
        assert np.isfinite(float(value))
    if name == "cd":
        return  # sampling is the shared code of the consistency adapters
    samples = jax.jit(method.sample, static_argnames=("num", "steps"))(params, key=jax.random.key(9), num=5, steps=2)
    chex.assert_shape(samples, (5, 2))
    assert np.all(np.isfinite(samples))


def test_ct_train_step_updates_target_with_the_mu_schedule_and_compiles_once():
    _, adapters = _adapters()
    method = adapters["ct"]
    batch = {"x": jax.random.normal(jax.random.key(10), (16, 2))}
    params = method.init(jax.random.key(11), batch)
    opt_state = method.init_opt_state(params)
    testing.clear_trace_counter()

    @testing.jit_with_max_traces(n=1)
    def step(params, opt_state, step, key):
        return method.train_step(params, opt_state, batch, key=key, ctx=Context(step=step, ema_params=params))

    new_params, opt_state, metrics = step(params, opt_state, jnp.int32(0), jax.random.key(13))
    mu = float(metrics["target_decay"])
    np.testing.assert_allclose(mu, 0.9, rtol=1e-6)  # N(0) = s0 = 2 -> μ = μ0
    expected = jax.tree.map(lambda t, p: mu * t + (1 - mu) * p, params["target"], new_params["online"])
    chex.assert_trees_all_close(new_params["target"], expected, rtol=1e-5, atol=1e-7)
    later, _, metrics = step(new_params, opt_state, jnp.int32(99), jax.random.key(14))
    assert np.isfinite(float(metrics["loss"])) and int(metrics["num_scales"]) == 151
    assert float(metrics["target_decay"]) > 0.99
    samples = method.sample(later, key=jax.random.key(15), num=5, steps=1)  # reads params["online"]
    chex.assert_shape(samples, (5, 2))


def test_bad_inputs_raise_value_errors():
    net, adapters = _adapters()
    with pytest.raises(ValueError, match="optimizer"):
        ConsistencyTraining(apply_fn=net.apply, init_fn=net.init, data_shape=(2,))
    with pytest.raises(ValueError, match="teacher_apply_fn"):
        ConsistencyDistillation(apply_fn=net.apply, init_fn=net.init, data_shape=(2,))
    with pytest.raises(ValueError, match="steps"):
        sample_consistency(net.apply, None, jnp.zeros((2, 2)), key=jax.random.key(0), steps=0)
    with pytest.raises(ValueError, match="x0"):
        consistency_training_loss(net.apply, None, None, jnp.zeros((3,)), key=jax.random.key(0), step=0, total_steps=10)
    with pytest.raises(ValueError, match="frozen"):
        adapters["cd"].loss(None, {"x": jnp.zeros((2, 2))}, key=jax.random.key(0), ctx=Context(step=jnp.int32(0), ema_params=None))
