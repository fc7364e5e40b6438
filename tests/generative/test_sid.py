"""SiD: the generator loss on a Gaussian case in closed form, its gradient, jit, and the alternating train_step."""

import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxlab import testing
from jaxlab.generative.sid import SiD, generate, sid_fake_score_loss, sid_generator_loss_terms, velocity_to_x0
from jaxlab.nn import TimeMLP
from jaxlab.train import TrainConfig, init_state, train
from jaxlab.train.state import Context


def gaussian_velocity(params, x_t, t):
    """Exact velocity of the straight path from data N(mu, s² I) to noise N(0, I)."""
    return testing.gaussian_flow_velocity(x_t, t, mean=params["mu"], cov=params["s"] ** 2)


def denoiser_coefficients(mu, s, t):
    """x0_hat = c + k·x_t for data N(mu, s²), by hand (numpy)."""
    var = (1 - t) ** 2 * s**2 + t**2
    k = (1 - t) * s**2 / var
    return mu - k * (1 - t) * mu, k


def gaussian_case(seed=0, b=64, d=3):
    rng = np.random.default_rng(seed)
    teacher = {"mu": np.array([0.5, -1.0, 2.0][:d], np.float32), "s": np.float32(0.7)}
    fake = {"mu": np.array([0.1, 0.3, -0.2][:d], np.float32), "s": np.float32(1.3)}
    x_g = rng.normal(size=(b, d)).astype(np.float32) * 1.3 + fake["mu"]
    noise = rng.normal(size=(b, d)).astype(np.float32)
    t = rng.uniform(0.05, 0.95, size=b).astype(np.float32)
    return teacher, fake, x_g, noise, t


def numpy_sid(teacher, fake, x_g, noise, t, alpha, weighting="example"):
    """Loss and its gradient w.r.t. x_g derived by hand for linear (Gaussian) denoisers."""
    tt = t[:, None].astype(np.float64)
    x_t = (1 - tt) * x_g + tt * noise
    c_r, k_r = denoiser_coefficients(teacher["mu"], teacher["s"], tt)
    c_f, k_f = denoiser_coefficients(fake["mu"], fake["s"], tt)
    real, fk = c_r + k_r * x_t, c_f + k_f * x_t
    distance = np.abs(x_g - real)
    w = {
        "example": np.mean(distance, axis=1, keepdims=True),
        "batch": np.full((x_g.shape[0], 1), np.mean(distance)),
        "none": np.ones((x_g.shape[0], 1)),
    }[weighting]
    g = real - fk
    per_example = ((1 - alpha) * np.sum(g**2, 1) + np.sum(g * (fk - x_g), 1)) / w[:, 0]
    dk = (k_r - k_f) * (1 - tt)  # d g / d x_g (diagonal)
    grad = ((1 - alpha) * 2 * g * dk + dk * (fk - x_g) + g * (k_f * (1 - tt) - 1)) / w / x_g.shape[0]
    return per_example.mean(), grad


@pytest.mark.parametrize("alpha", [0.5, 1.0, 1.2])
@pytest.mark.parametrize("weighting", ["example", "batch", "none"])
@pytest.mark.parametrize("jit", [False, True])
def test_generator_loss_and_gradient_match_the_closed_form(alpha, weighting, jit):
    teacher, fake, x_g, noise, t = gaussian_case()

    def loss_of(x):
        return sid_generator_loss_terms(gaussian_velocity, teacher, fake, x, noise, t, alpha=alpha, weighting=weighting)[0]

    value_and_grad = jax.value_and_grad(loss_of)
    value_and_grad = jax.jit(value_and_grad) if jit else value_and_grad
    value, grad = value_and_grad(jnp.asarray(x_g))
    expected_value, expected_grad = numpy_sid(teacher, fake, x_g, noise, t, alpha, weighting)
    np.testing.assert_allclose(value, expected_value, rtol=2e-4, atol=1e-5)
    np.testing.assert_allclose(grad, expected_grad, rtol=2e-3, atol=1e-6)


def test_terms_decompose_the_loss_and_vanish_when_the_fake_equals_the_teacher():
    teacher, fake, x_g, noise, t = gaussian_case(seed=1)
    loss, aux = sid_generator_loss_terms(gaussian_velocity, teacher, fake, x_g, noise, t, alpha=1.2)
    np.testing.assert_allclose(loss, -0.2 * aux["sid_fisher"] + aux["sid_cross"], rtol=1e-5)
    zero, _ = sid_generator_loss_terms(gaussian_velocity, teacher, teacher, x_g, noise, t, alpha=1.2)
    assert float(zero) == 0.0


@pytest.mark.parametrize("alpha", [0.5, 1.0, 1.2])
@pytest.mark.parametrize("weighting", ["batch", "none"])
@pytest.mark.parametrize("a", [1.2, 0.3])
def test_expected_gradient_moves_a_linear_generator_toward_the_data(alpha, weighting, a):
    """Data N(mu, s²); generator x = a·z + b with the exact fake score of N(b, a²): descent moves b to mu, a to s.

    (The paper's per-example weighting is left out: in one dimension it
    down-weights the tails and can flip the sign of the scale's gradient.)
    """
    mu, s = np.array([1.5], np.float32), np.float32(0.5)
    b = np.array([-0.5], np.float32)
    key_z, key_n, key_t = jax.random.split(jax.random.key(0), 3)
    num = 20000
    z = jax.random.normal(key_z, (num, 1))
    noise = jax.random.normal(key_n, (num, 1))
    t = jax.random.uniform(key_t, (num,), minval=0.05, maxval=0.95)

    def loss_of(gen):
        x_g = gen["a"] * z + gen["b"]
        fake = jax.lax.stop_gradient({"mu": gen["b"], "s": gen["a"]})
        teacher = {"mu": mu, "s": s}
        return sid_generator_loss_terms(gaussian_velocity, teacher, fake, x_g, noise, t, alpha=alpha, weighting=weighting)[0]

    grads = jax.grad(loss_of)({"a": jnp.float32(a), "b": jnp.asarray(b)})
    assert float(grads["b"][0]) < 0.0  # b < mu: descent increases b
    assert np.sign(float(grads["a"])) == np.sign(a - s)  # descent moves a towards s


def test_generate_at_time_one_is_the_teacher_mean_and_x0_conversion_inverts_the_path():
    teacher = {"mu": np.array([0.5, -1.0], np.float32), "s": np.float32(0.7)}
    z = jax.random.normal(jax.random.key(1), (16, 2))
    np.testing.assert_allclose(generate(gaussian_velocity, teacher, z, generator_time=1.0), np.broadcast_to(teacher["mu"], (16, 2)), atol=1e-5)
    x0, eps = jax.random.normal(jax.random.key(2), (2, 8, 2))
    t = jnp.linspace(0.1, 0.9, 8)
    x_t = (1 - t[:, None]) * x0 + t[:, None] * eps
    np.testing.assert_allclose(velocity_to_x0(x_t, t, eps - x0), x0, atol=1e-5)


def test_fake_score_loss_is_flow_matching_and_does_not_reach_the_generator():
    _teacher, _fake, x_g, _, _ = gaussian_case(seed=2)
    net = TimeMLP(width=8, depth=1)
    params = net.init(jax.random.key(0), x_g, jnp.zeros(x_g.shape[:1]))
    grad_x = jax.grad(lambda x: sid_fake_score_loss(net.apply, params, x, key=jax.random.key(3))[0])(jnp.asarray(x_g))
    assert float(jnp.max(jnp.abs(grad_x))) == 0.0
    loss, aux = sid_fake_score_loss(net.apply, params, x_g, key=jax.random.key(3))
    assert np.isfinite(float(loss)) and aux["fake_loss"] == loss


def test_loss_jit_compiles_once():
    teacher, fake, x_g, noise, t = gaussian_case(seed=3)

    @testing.jit_with_max_traces(n=1)
    def loss_of(x, n, tt):
        return sid_generator_loss_terms(gaussian_velocity, teacher, fake, x, n, tt)[0]

    for scale in (1.0, 2.0, 3.0):
        assert np.isfinite(float(loss_of(x_g * scale, noise, t)))


def test_bad_shapes_are_rejected():
    teacher, fake, x_g, noise, t = gaussian_case()
    with pytest.raises(ValueError, match="noise"):
        sid_generator_loss_terms(gaussian_velocity, teacher, fake, x_g, noise[:3], t)
    with pytest.raises(ValueError, match="t must have shape"):
        sid_generator_loss_terms(gaussian_velocity, teacher, fake, x_g, noise, t[:3])
    net = TimeMLP(width=8, depth=1)
    with pytest.raises(ValueError, match="t_min"):
        SiD(apply_fn=net.apply, init_fn=net.init, data_shape=(2,), t_min=0.9, t_max=0.1)


def test_alternating_train_step_runs_in_the_trainer_and_updates_both_networks(tmp_path):
    net = TimeMLP(width=16, depth=1)
    x = np.random.default_rng(0).normal(size=(32, 2)).astype(np.float32)
    teacher = jax.device_get(net.init(jax.random.key(7), x, np.zeros(32, np.float32)))
    method = SiD(apply_fn=net.apply, init_fn=net.init, data_shape=(2,), fake_steps=2)
    config = TrainConfig(steps=3, batch_size=32, checkpoint_every=3, log_every=1, warmup_steps=0)
    state = train(method, optax.identity(), lambda step: {"x": x}, config, tmp_path, frozen=teacher, progress=False)
    assert int(state.step) == 3

    def moved(tree):
        return max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(tree), jax.tree.leaves(teacher)))

    assert moved(state.params["generator"]) > 0.0 and moved(state.params["fake"]) > 0.0

    def adam_count(opt_state):
        def is_adam(s):
            return isinstance(s, optax.ScaleByAdamState)

        (count,) = {int(s.count) for s in jax.tree.leaves(opt_state, is_leaf=is_adam) if is_adam(s)}
        return count

    # each trainer step makes fake_steps fake-score updates and one generator update
    assert adam_count(state.opt_state["fake"]) == config.steps * method.fake_steps
    assert adam_count(state.opt_state["generator"]) == config.steps
    samples = method.sample(state.params, key=jax.random.key(0), num=5, steps=1)
    chex.assert_shape(samples, (5, 2))
    assert np.all(np.isfinite(np.asarray(samples)))
    with pytest.raises(ValueError, match="steps must be 1"):
        method.sample(state.params, key=jax.random.key(0), num=5, steps=2)
    ctx_free = dataclasses.replace(method)
    with pytest.raises(ValueError, match="ctx.frozen"):
        ctx_free.loss(state.params, {"x": x}, key=jax.random.key(0), ctx=Context(step=jnp.zeros((), jnp.int32), ema_params=None))


def test_the_trainer_initializes_both_networks_from_the_teacher_as_an_argument_not_a_constant():
    net = TimeMLP(width=16, depth=1)
    x = np.random.default_rng(0).normal(size=(8, 2)).astype(np.float32)
    teacher = net.init(jax.random.key(7), x, np.zeros(8, np.float32))
    method = SiD(apply_fn=net.apply, init_fn=net.init, data_shape=(2,))
    batch = {"x": x}
    init = jax.jit(lambda b, f: init_state(method, optax.identity(), b, 0, f))
    state = init(batch, teacher)
    for name in ("generator", "fake"):
        for a, b in zip(jax.tree.leaves(state.params[name]), jax.tree.leaves(teacher), strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

    def baked_kernels(lowered_text: str) -> int:
        return sum("stablehlo.constant" in line and "tensor<16x16xf32>" in line for line in lowered_text.splitlines())

    assert baked_kernels(init.lower(batch, teacher).as_text()) == 0
    closed_over = jax.jit(lambda b: init_state(method, optax.identity(), b, 0, teacher))
    assert baked_kernels(closed_over.lower(batch).as_text()) > 0  # what a closure (the old teacher_init) compiles to
