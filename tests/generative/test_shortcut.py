"""Shortcut models: targets against straight-flow closed forms, loss, sampling, guidance, input checks."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from jaxlab import testing
from jaxlab.generative.shortcut import (
    Shortcut,
    bootstrap_step_sizes,
    sample_shortcut,
    shortcut_loss,
    shortcut_targets,
    step_condition,
)
from jaxlab.nn import TimeMLP
from jaxlab.train.state import Context

MU = jnp.array([1.2, -0.4])  # point-mass data: the flow from N(0, I) to MU is straight


def point_mass_velocity(params, x, t, d, labels=None):
    """E[x1 − x0 | x_t] for x0 = MU, the same for every step size d (straight paths)."""
    del params, d, labels
    return testing.point_mass_velocity(x, t, point=MU)


_targets = jax.jit(lambda x, t, d: shortcut_targets(point_mass_velocity, None, x, t, d))


@given(t=st.floats(0.05, 1.0), half=st.sampled_from([1 / 256, 1 / 64, 1 / 8, 1 / 4]), seed=st.integers(0, 1000))
def test_on_a_straight_flow_two_steps_of_d_equal_one_step_of_2d(t, half, seed):
    t = max(t, 2 * half)
    x1 = jax.random.normal(jax.random.key(seed), (4, 2))
    x_t = (1 - t) * MU + t * x1
    tt, dd = jnp.full((4,), t), jnp.full((4,), half)
    target = _targets(x_t, tt, dd)
    np.testing.assert_allclose(target, x1 - MU, rtol=1e-4, atol=1e-4)  # the one-step (2d) jump


def test_sampler_on_a_straight_flow_lands_on_the_data_with_any_step_count():
    x1 = jax.random.normal(jax.random.key(7), (4, 2))
    draw = jax.jit(lambda x, steps: sample_shortcut(point_mass_velocity, None, x, steps=steps), static_argnums=1)
    one, two, many = draw(x1, 1), draw(x1, 2), draw(x1, 128)
    np.testing.assert_allclose(one, two, rtol=1e-5, atol=1e-5)  # one step of 2d = two steps of d
    np.testing.assert_allclose(many, jnp.broadcast_to(MU, one.shape), atol=1e-4)
    np.testing.assert_allclose(one, jnp.broadcast_to(MU, one.shape), atol=1e-5)


def test_target_at_small_d_tends_to_the_flow_matching_target():
    key_x, key_p = jax.random.split(jax.random.key(0))
    x1 = jax.random.normal(key_x, (8, 2))
    t = jnp.linspace(0.1, 1.0, 8)
    x_t = (1 - t[:, None]) * MU + t[:, None] * x1
    # The exact flow velocity: the target equals x1 − x0, the flow-matching target, for every small d.
    for d in (1e-3, 1e-5):
        target = shortcut_targets(point_mass_velocity, None, x_t, t, jnp.full((8,), d), max_steps=2**20)
        np.testing.assert_allclose(target, x1 - MU, rtol=1e-4, atol=1e-4)
    # Any smooth network: the target tends to s(x_t, t, 0), linearly in d.
    w = jax.random.normal(key_p, (2, 2))

    def smooth_network(params, x, t, d):
        return jnp.tanh(x @ w + t[:, None] * jnp.array([1.0, -2.0]) + d[:, None] * jnp.array([3.0, 0.5]))

    flow = smooth_network(None, x_t, t, jnp.zeros(8))
    errors = [float(jnp.max(jnp.abs(shortcut_targets(smooth_network, None, x_t, t, jnp.full((8,), d), max_steps=2**20) - flow))) for d in (1e-2, 1e-3)]
    assert errors[1] < 0.2 * errors[0] and errors[1] < 1e-2


def test_smallest_step_is_queried_as_the_flow():
    d = jnp.array([1 / 256, 1 / 128, 1 / 64, 0.5, 1.0])
    np.testing.assert_array_equal(step_condition(d, 128), [0.0, 0.0, 1 / 64, 0.5, 1.0])


@pytest.mark.parametrize("fraction", [0.0, 0.25, 0.5])
def test_loss_vanishes_for_the_exact_straight_flow(fraction):
    x0 = jnp.broadcast_to(MU, (32, 2))
    loss, metrics = jax.jit(lambda x: shortcut_loss(point_mass_velocity, None, None, x, key=jax.random.key(1), bootstrap_fraction=fraction))(x0)
    assert float(loss) < 1e-8 and float(metrics["bootstrap_mse"]) < 1e-8


def test_bootstrap_times_keep_both_half_steps_inside_the_interval():
    def guard(params, x, t, d):  # NaN if a half step would leave [0, 1] or a step overshoots t
        bad = (t < -1e-6) | (t > 1 + 1e-6) | (d > t + 1e-6)
        return jnp.where(bad[:, None], jnp.nan, 0.0 * x + 1.0)

    x0 = jnp.zeros((512, 2))
    loss, _ = jax.jit(lambda x: shortcut_loss(guard, None, None, x, key=jax.random.key(2), bootstrap_fraction=0.5, max_steps=8))(x0)
    assert np.isfinite(float(loss))


@pytest.mark.parametrize("large_step_bias", [False, True])
def test_bootstrap_step_sizes_follow_their_level_distribution(large_step_bias):
    num = 70_000
    two_d = np.asarray(bootstrap_step_sizes(jax.random.key(9), num, max_steps=128, large_step_bias=large_step_bias))
    level = np.round(-np.log2(two_d)).astype(int)
    np.testing.assert_allclose(two_d, 2.0**-level)  # on the power-of-two grid
    weights = np.arange(7, 0, -1.0) if large_step_bias else np.ones(7)  # j = 0 is the one-step level 2d = 1
    expected = weights / weights.sum()
    observed = np.bincount(level, minlength=7) / num
    assert observed.shape == (7,)  # never 2d = 1/128 (that level is the flow itself)
    np.testing.assert_allclose(observed, expected, atol=4 * np.sqrt(expected.max() / num))


def test_classifier_free_guidance_closed_form():
    def label_network(params, x, t, d, labels):
        return jnp.zeros_like(x) + labels[:, None].astype(x.dtype)

    x1 = jnp.zeros((3, 2))
    labels = jnp.array([0, 1, 2])
    out = sample_shortcut(label_network, None, x1, steps=1, labels=labels, null_label=5, guidance_scale=3.0)
    np.testing.assert_allclose(out[:, 0], -(5.0 + 3.0 * (labels - 5.0)))  # x1 − (s_null + w·(s − s_null))


def test_ot_coupling_never_pairs_worse_than_independent_noise():
    # With a zero network and no bootstrap rows the loss is the mean squared distance of the pairs,
    # which the optimal assignment can only lower (the identity is one of the permutations it ranks).
    # Per coordinate, independent pairs of N(1.5, 0.3²) data and N(0, 1) noise average 1.5² + 1 + 0.3² = 3.34;
    # the OT coupling approaches W2² = 1.5² + (1 − 0.3)² = 2.74.
    def zero_network(params, x, t, d):
        return jnp.zeros_like(x)

    x0 = jax.random.normal(jax.random.key(7), (64, 2)) * 0.3 + 1.5
    losses = {
        coupling: float(
            jax.jit(lambda x, c=coupling: shortcut_loss(zero_network, None, None, x, key=jax.random.key(8), bootstrap_fraction=0.0, coupling=c)[0])(x0)
        )
        for coupling in ("independent", "minibatch_ot")
    }
    assert losses["minibatch_ot"] < losses["independent"]
    assert losses["independent"] == pytest.approx(3.34, rel=0.15)
    assert losses["minibatch_ot"] == pytest.approx(2.74, rel=0.1)


@pytest.mark.parametrize("coupling", ["independent", "minibatch_ot"])
@pytest.mark.parametrize("num_classes", [0, 3])
def test_adapter_loss_is_finite_and_compiles_once(num_classes, coupling):
    net = TimeMLP(width=8, depth=1, time_features=8, num_classes=num_classes, separate_conditions=bool(num_classes))
    method = Shortcut(apply_fn=net.apply, init_fn=net.init, data_shape=(2,), num_classes=num_classes, guidance_scale=1.5, coupling=coupling)
    batch = {"x": jax.random.normal(jax.random.key(3), (16, 2))}
    if num_classes:
        batch["label"] = jnp.arange(16) % num_classes
    params = method.init(jax.random.key(4), batch)
    testing.clear_trace_counter()

    @testing.jit_with_max_traces(n=1)
    def loss(params, batch, key, step):
        return method.loss(params, batch, key=key, ctx=Context(step=step, ema_params=params))

    for step in range(3):
        value, _ = loss(params, batch, jax.random.key(step), jnp.int32(step))
        assert np.isfinite(float(value))
    samples = jax.jit(method.sample, static_argnames=("num", "steps"))(params, key=jax.random.key(5), num=4, steps=2)
    chex.assert_shape(samples, (4, 2))
    assert np.all(np.isfinite(samples))


def test_bad_inputs_raise_value_errors():
    net = TimeMLP(width=8, depth=1, time_features=8)
    with pytest.raises(ValueError, match="steps must be a power of two"):
        sample_shortcut(net.apply, None, jnp.zeros((2, 2)), steps=3)
    with pytest.raises(ValueError, match="steps must be a power of two"):
        sample_shortcut(net.apply, None, jnp.zeros((2, 2)), steps=256)
    with pytest.raises(ValueError, match="max_steps"):
        Shortcut(apply_fn=net.apply, init_fn=net.init, data_shape=(2,), max_steps=100)
    with pytest.raises(ValueError, match="bootstrap_fraction"):
        Shortcut(apply_fn=net.apply, init_fn=net.init, data_shape=(2,), bootstrap_fraction=1.0)
    with pytest.raises(ValueError, match="coupling"):
        Shortcut(apply_fn=net.apply, init_fn=net.init, data_shape=(2,), coupling="sinkhorn")
    with pytest.raises(ValueError, match=r"needs batch\['label'\]"):
        Shortcut(apply_fn=net.apply, init_fn=net.init, data_shape=(2,), num_classes=2).init(jax.random.key(0), {"x": jnp.zeros((2, 2))})
    with pytest.raises(ValueError, match="null_label"):
        sample_shortcut(net.apply, None, jnp.zeros((2, 2)), steps=1, labels=jnp.zeros(2, int), guidance_scale=2.0)
