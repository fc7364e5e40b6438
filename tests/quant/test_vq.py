"""STE, rotation trick and SimVQ: forward values and gradients against the closed forms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxlab import quant


def random(seed, shape):
    return jax.random.normal(jax.random.key(seed), shape, jnp.float32)


def test_nearest_code_matches_brute_force():
    z, codebook = random(0, (5, 7, 3)), random(1, (11, 3))
    brute = np.argmin(((np.asarray(z)[..., None, :] - np.asarray(codebook)) ** 2).sum(-1), axis=-1)
    np.testing.assert_array_equal(quant.nearest_code(z, codebook), brute)


@pytest.mark.parametrize("estimator", ["ste", "rotation"])
def test_forward_value_is_the_nearest_code(estimator):
    z, codebook = random(2, (6, 4)), random(3, (9, 4))
    out = quant.vector_quantize(z, codebook, estimator=estimator)
    np.testing.assert_allclose(out.quantized, codebook[out.indices], atol=1e-5)
    e = codebook[out.indices]
    np.testing.assert_allclose(out.codebook_loss, np.mean((np.asarray(z) - np.asarray(e)) ** 2), rtol=1e-6)
    np.testing.assert_allclose(out.loss, 1.25 * out.codebook_loss, rtol=1e-6)


@pytest.mark.parametrize("jit", [False, True])
def test_ste_gradient_passes_through_and_losses_have_their_closed_forms(jit):
    z, codebook, weights = random(4, (6, 4)), random(5, (9, 4)), random(6, (6, 4))
    beta = 0.25

    def objective(z, codebook):
        out = quant.vector_quantize(z, codebook, beta=beta)
        return jnp.sum(weights * out.quantized) + out.loss

    grad = jax.jit(jax.grad(objective, argnums=(0, 1))) if jit else jax.grad(objective, argnums=(0, 1))
    gz, gc = grad(z, codebook)
    idx = quant.nearest_code(z, codebook)
    e = codebook[idx]
    n = z.size
    # d/dz: the task gradient passes straight through, plus β·2(z − e)/n from the commitment term.
    np.testing.assert_allclose(gz, weights + beta * 2.0 * (z - e) / n, rtol=1e-5, atol=1e-6)
    # d/de_k: only the codebook loss, Σ over the points assigned to k of 2(e − z)/n.
    expected_gc = np.zeros_like(np.asarray(codebook))
    np.add.at(expected_gc, np.asarray(idx), 2.0 * np.asarray(e - z) / n)
    np.testing.assert_allclose(gc, expected_gc, rtol=1e-5, atol=1e-6)


@settings(max_examples=5)
@given(st.integers(0, 10_000))
def test_rotation_matrix_is_orthogonal_and_maps_z_hat_to_e_hat(seed):
    z, e = random(seed, (3, 5)), random(seed + 1, (3, 5))
    R = np.asarray(quant.rotation_matrix(z, e), np.float64)
    np.testing.assert_allclose(R @ np.swapaxes(R, -1, -2), np.broadcast_to(np.eye(5), R.shape), atol=1e-5)
    np.testing.assert_allclose(np.linalg.det(R), 1.0, atol=1e-4)
    z_hat = np.asarray(z) / np.linalg.norm(z, axis=-1, keepdims=True)
    e_hat = np.asarray(e) / np.linalg.norm(e, axis=-1, keepdims=True)
    np.testing.assert_allclose(np.einsum("bij,bj->bi", R, z_hat), e_hat, atol=1e-5)


@settings(max_examples=5)
@given(st.integers(0, 10_000))
def test_rotation_trick_gradient_is_scaled_transposed_rotation(seed):
    z, e, g = random(seed, (4, 6)), random(seed + 1, (4, 6)) * 3.0, random(seed + 2, (4, 6))
    value = quant.rotation_trick(z, e)
    np.testing.assert_allclose(value, e, rtol=1e-4, atol=1e-5)
    grad = jax.grad(lambda z: jnp.sum(g * quant.rotation_trick(z, e)))(z)
    R = np.asarray(quant.rotation_matrix(z, e), np.float64)
    scale = np.linalg.norm(e, axis=-1) / np.linalg.norm(z, axis=-1)
    expected = scale[:, None] * np.einsum("bji,bj->bi", R, np.asarray(g, np.float64))
    np.testing.assert_allclose(grad, expected, rtol=1e-4, atol=1e-5)
    # and no gradient flows into the code through the trick
    np.testing.assert_array_equal(jax.grad(lambda e: jnp.sum(g * quant.rotation_trick(z, e)))(e), 0.0)


def test_rotation_trick_is_the_identity_gradient_when_z_equals_e():
    z, g = random(7, (3, 4)), random(8, (3, 4))
    grad = jax.grad(lambda z: jnp.sum(g * quant.rotation_trick(z, z)))(z)
    np.testing.assert_allclose(grad, g, rtol=1e-5, atol=1e-6)


def test_simvq_codebook_is_frozen_basis_times_projection_and_only_w_learns():
    frozen, w = quant.simvq_init(jax.random.key(0), 16, 3)
    np.testing.assert_array_equal(w, np.eye(3))
    w = w + 0.1 * random(1, (3, 3))
    np.testing.assert_allclose(quant.simvq_codebook(frozen, w), np.asarray(frozen) @ np.asarray(w), rtol=1e-6)
    z = random(2, (10, 3))
    g_frozen, g_w = jax.grad(lambda c, w: quant.simvq_quantize(z, c, w).loss, argnums=(0, 1))(frozen, w)
    np.testing.assert_array_equal(g_frozen, 0.0)
    # closed form: d/dW mean((sg z − C W)_assigned²) = Cᵀ·one_hot(idx)ᵀ·2(e − z)/n
    idx = quant.nearest_code(z, frozen @ w)
    e = (frozen @ w)[idx]
    one_hot = jax.nn.one_hot(idx, 16)
    np.testing.assert_allclose(g_w, frozen.T @ one_hot.T @ (2.0 * (e - z) / z.size), rtol=1e-4, atol=1e-6)


def test_bad_inputs_name_the_argument():
    with pytest.raises(ValueError, match="z must have last dimension 4"):
        quant.vector_quantize(jnp.zeros((2, 3)), jnp.zeros((5, 4)))
    with pytest.raises(ValueError, match="codebook must have shape"):
        quant.vector_quantize(jnp.zeros((2, 4)), jnp.zeros((5, 4, 1)))
    with pytest.raises(TypeError, match="z must be a floating array"):
        quant.vector_quantize(jnp.zeros((2, 4), jnp.int32), jnp.zeros((5, 4)))
    with pytest.raises(ValueError, match="estimator"):
        quant.vector_quantize(jnp.zeros((2, 4)), jnp.zeros((5, 4)), estimator="gumbel")
