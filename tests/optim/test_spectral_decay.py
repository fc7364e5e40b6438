"""spectral_decay: direction vs autodiff of 1/2 sigma_1^2 (by SVD), warm-start convergence, chaining."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxlab.optim as jo


def gapped(m, n, seed):
    rng = np.random.default_rng(seed)
    u, _ = np.linalg.qr(rng.standard_normal((m, min(m, n))))
    v, _ = np.linalg.qr(rng.standard_normal((n, min(m, n))))
    sig = np.concatenate([[2.0], np.linspace(1.2, 0.2, min(m, n) - 1)])
    return jnp.asarray((u * sig) @ v.T, jnp.float32)


def spectral_grad(w):
    """Oracle: jax.grad of 1/2 sigma_1(w)^2 with sigma_1 from the SVD."""
    return jax.grad(lambda w: 0.5 * jnp.linalg.svd(w, compute_uv=False)[0] ** 2)(w)


@pytest.mark.parametrize("shape", [(7, 5), (5, 9)])
def test_direction_matches_autodiff_of_half_sigma_squared(shape):
    w = {"w": gapped(*shape, seed=0), "b": jnp.ones(shape[1])}
    zeros = jax.tree.map(jnp.zeros_like, w)
    tx = jo.spectral_decay(0.3, power_steps=40)
    u, _ = tx.update(zeros, tx.init(w), w)
    np.testing.assert_allclose(u["w"], 0.3 * spectral_grad(w["w"]), atol=1e-5)
    np.testing.assert_array_equal(u["b"], 0.0)  # not a matrix: unchanged


def test_warm_start_converges_over_steps():
    w = {"w": gapped(12, 10, seed=1)}
    target = spectral_grad(w["w"])
    tx = jo.spectral_decay(1.0)  # one power step per update
    state = tx.init(w)
    update = jax.jit(tx.update)
    errors = []
    for _ in range(12):
        u, state = update(jax.tree.map(jnp.zeros_like, w), state, w)
        errors.append(float(jnp.abs(u["w"] - target).max()))
    assert errors[0] > 1e-2 and errors[-1] < 1e-5
    assert all(b <= a * 1.01 + 1e-7 for a, b in itertools.pairwise(errors))


def test_chains_like_add_decayed_weights():
    params = {"w": gapped(6, 4, seed=2), "b": jnp.ones(4)}
    grads = jax.tree.map(lambda x: 0.1 * jnp.ones_like(x), params)
    rate, lr = 0.5, 0.1
    with_sd = optax.chain(optax.scale_by_adam(), jo.spectral_decay(rate, power_steps=40), optax.scale(-lr))
    without = optax.chain(optax.scale_by_adam(), optax.scale(-lr))
    u1, _ = jax.jit(with_sd.update)(grads, with_sd.init(params), params)
    u0, _ = without.update(grads, without.init(params), params)
    np.testing.assert_allclose(u1["w"] - u0["w"], -lr * rate * spectral_grad(params["w"]), atol=1e-5)
    np.testing.assert_allclose(u1["b"], u0["b"])


def test_mask_and_zero_matrix():
    """A masked-out matrix gets no decay and a zero matrix adds zero (finite, no division by its norm)."""
    params = {"a": gapped(5, 5, seed=3), "z": jnp.zeros((4, 3))}
    zeros = jax.tree.map(jnp.zeros_like, params)
    masked = jo.spectral_decay(1.0, mask={"a": False, "z": True})
    u, _ = masked.update(zeros, masked.init(params), params)
    assert np.all(u["a"] == 0) and np.all(u["z"] == 0) and np.all(np.isfinite(u["z"]))


def test_bad_input():
    with pytest.raises(ValueError, match="rate"):
        jo.spectral_decay(jnp.ones(2))
    with pytest.raises(ValueError, match="power_steps"):
        jo.spectral_decay(0.1, power_steps=0)
    tx = jo.spectral_decay(0.1)
    params = {"w": jnp.ones((2, 2))}
    with pytest.raises(ValueError, match="params"):
        tx.update(params, tx.init(params))
