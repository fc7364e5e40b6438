"""IGN: the three losses and their gradients for a linear f in closed form, the weighted objective, jit, sampling."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxlab import testing
from jaxlab.generative.ign import IGN, apply_repeatedly, ign_loss, ign_loss_terms
from jaxlab.nn import TimeMLP
from jaxlab.train import TrainConfig, train


def linear(params, x):
    return params["w"] * x + params["c"]


def numpy_ign(w, c, x, z, a=1.5, weights=(20.0, 20.0, 2.5)):
    """Values and (d/dw, d/dc) of the weighted objective, derived by hand for f(x) = w·x + c."""
    r_x = (w - 1) * x + c
    rec = np.mean(np.abs(r_x))
    d_rec = np.array([np.mean(np.sign(r_x) * x), np.mean(np.sign(r_x))])
    fz = w * z + c
    r = (w - 1) * fz + c  # f(f(z)) − f(z)
    idem = np.mean(np.abs(r))
    d_idem = (w - 1) * np.array([np.mean(np.sign(r) * z), np.mean(np.sign(r))])  # only the inner f(z) moves
    tight_raw = -idem
    d_tight_raw = -np.array([np.mean(np.sign(r) * fz), np.mean(np.sign(r))])  # only the outer f moves
    scale = a * rec
    tight = np.tanh(tight_raw / scale) * scale
    d_tight = (1 - np.tanh(tight_raw / scale) ** 2) * d_tight_raw  # scale is held constant
    values = {"rec": rec, "idem": idem, "tight_raw": tight_raw, "tight": tight}
    grad = weights[0] * d_rec + weights[1] * d_idem + weights[2] * d_tight
    return values, grad


@pytest.mark.parametrize("w, c", [(0.5, 0.3), (1.7, -0.4), (-0.8, 1.1)])
@pytest.mark.parametrize("jit", [False, True])
def test_losses_and_gradients_match_the_closed_form_for_a_linear_map(w, c, jit):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 3)).astype(np.float32) * 2 + 1
    z = rng.normal(size=(64, 3)).astype(np.float32)
    params = {"w": jnp.float32(w), "c": jnp.float32(c)}

    def objective(p):
        terms = ign_loss_terms(linear, p, x, z)
        return 20.0 * terms["rec"] + 20.0 * terms["idem"] + 2.5 * terms["tight"], terms

    fn = jax.value_and_grad(objective, has_aux=True)
    fn = jax.jit(fn) if jit else fn
    (_, terms), grads = fn(params)
    expected, expected_grad = numpy_ign(np.float64(w), np.float64(c), x.astype(np.float64), z.astype(np.float64))
    for name, value in expected.items():
        np.testing.assert_allclose(terms[name], value, rtol=1e-5, atol=1e-6, err_msg=name)
    np.testing.assert_allclose([grads["w"], grads["c"]], expected_grad, rtol=1e-4, atol=1e-5)


def test_tightness_is_clamped_by_a_times_the_reconstruction():
    x = np.zeros((8, 2), np.float32)
    z = np.random.default_rng(1).normal(size=(8, 2)).astype(np.float32) * 10
    params = {"w": jnp.float32(0.1), "c": jnp.float32(0.05)}  # tiny rec, large tightness
    terms = ign_loss_terms(linear, params, x, z, tightness_clamp=1.5)
    assert float(terms["tight_raw"]) < -1.5 * float(terms["rec"])
    assert -1.5 * float(terms["rec"]) <= float(terms["tight"]) < 0.0


def test_identity_has_zero_reconstruction_and_idempotence():
    x, z = jax.random.normal(jax.random.key(0), (2, 16, 4))
    terms = ign_loss_terms(linear, {"w": jnp.float32(1.0), "c": jnp.float32(0.0)}, x, z)
    assert float(terms["rec"]) == 0.0 and float(terms["idem"]) == 0.0 and float(terms["tight_raw"]) == 0.0


def test_weighted_loss_uses_gaussian_noise_from_the_key_and_compiles_once():
    x = np.random.default_rng(2).normal(size=(32, 2)).astype(np.float32)
    params = {"w": jnp.float32(0.4), "c": jnp.float32(0.2)}
    key = jax.random.key(5)
    loss, _terms = ign_loss(linear, params, x, key=key, rec_weight=1.0, idem_weight=2.0, tight_weight=3.0)
    z = jax.random.normal(key, x.shape)
    by_hand = ign_loss_terms(linear, params, x, z)
    np.testing.assert_allclose(loss, by_hand["rec"] + 2 * by_hand["idem"] + 3 * by_hand["tight"], rtol=1e-6)

    @testing.jit_with_max_traces(n=1)
    def step(p, k):
        return ign_loss(linear, p, x, key=k)[0]

    for seed in range(3):
        assert np.isfinite(float(step(params, jax.random.key(seed))))


def test_bad_shapes_are_rejected():
    with pytest.raises(ValueError, match="equal features"):
        ign_loss_terms(linear, {"w": 1.0, "c": 0.0}, jnp.zeros((4, 2)), jnp.zeros((4, 3)))
    with pytest.raises(ValueError, match="times"):
        apply_repeatedly(linear, {"w": 1.0, "c": 0.0}, jnp.zeros((4, 2)), times=0)


def test_adapter_trains_and_samples_by_repeated_application(tmp_path):
    net = TimeMLP(width=16, depth=1)

    def apply_fn(params, x):
        return net.apply(params, x, jnp.ones(x.shape[:1]))

    method = IGN(apply_fn=apply_fn, init_fn=lambda key, x: net.init(key, x, jnp.ones(x.shape[:1])), data_shape=(2,))
    x = np.random.default_rng(0).normal(size=(32, 2)).astype(np.float32)
    config = TrainConfig(steps=3, batch_size=32, checkpoint_every=3, log_every=1, warmup_steps=0)
    state = train(method, optax.adam(1e-2), lambda step: {"x": x}, config, tmp_path, progress=False)
    key = jax.random.key(3)
    twice = method.sample(state.params, key=key, num=6, steps=2)
    z = jax.random.normal(key, (6, 2))
    np.testing.assert_allclose(twice, apply_fn(state.params, apply_fn(state.params, z)), rtol=1e-5, atol=1e-6)
    assert np.all(np.isfinite(np.asarray(twice)))
