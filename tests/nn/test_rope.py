"""RoPE family: rotation oracle, relative-position property, multi-axis variants, context extensions, ReRoPE."""

import math

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from jaxlab.nn import (
    RopeConfig,
    apply_rope,
    axial_rope_angles,
    dynamic_ntk_factor,
    logn_scale,
    mrope_angles,
    mrope_position_ids,
    rectified_relative_positions,
    rerope_logits,
    rope_angles,
    rope_frequencies,
    rope_tie_angles,
    rope_tie_position_ids,
    scaled_frequencies,
    yarn_frequencies,
    yarn_qk_scale,
)
from jaxlab.nn.rope_scaling import SCALINGS, qk_scale

D = 16
RNG = np.random.default_rng(0)
Q, K = RNG.normal(size=(2, D)).astype(np.float32)


def complex_rope(x, positions, frequencies):
    """Independent oracle: pair (x_i, x_{i+d/2}) as a complex number times e^{i·pos·ω_i}."""
    half = x.shape[-1] // 2
    z = (x[..., :half] + 1j * x[..., half:]) * np.exp(1j * np.asarray(positions)[..., None] * np.asarray(frequencies))
    return np.concatenate([z.real, z.imag], axis=-1)


def test_frequencies_and_rotation_match_the_complex_oracle():
    freq = np.asarray(rope_frequencies(D, base=100.0))
    np.testing.assert_allclose(freq, 100.0 ** (-np.arange(0, D, 2) / D), rtol=1e-6)
    x = RNG.normal(size=(3, 5, D)).astype(np.float32)
    pos = np.arange(5) * 7.0
    got = apply_rope(jnp.asarray(x), rope_angles(pos, freq))
    np.testing.assert_allclose(got, complex_rope(x, pos, freq), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=-1), np.linalg.norm(x, axis=-1), rtol=1e-5)  # a rotation


@given(m=st.integers(0, 2000), n=st.integers(0, 2000), shift=st.integers(-1000, 1000))
def test_relative_position_property(m, n, shift):
    """⟨R_m q, R_n k⟩ depends only on m − n."""
    freq = rope_frequencies(D)

    def logit(a, b):
        return float(jnp.dot(apply_rope(Q, rope_angles(a, freq)), apply_rope(K, rope_angles(b, freq))))

    # float32 angles of ~3000 rad carry ~2e-4 rad of rounding; a wrong rotation is off by O(|q||k|).
    np.testing.assert_allclose(logit(m, n), logit(m + shift, n + shift), atol=5e-3)


@given(a=st.tuples(st.integers(0, 60), st.integers(0, 60)), shift=st.tuples(st.integers(-30, 30), st.integers(-30, 30)))
def test_axial_2d_depends_only_on_coordinate_differences(a, shift):
    b = (7, 11)
    angles = lambda p: axial_rope_angles(jnp.asarray(p, jnp.float32), D)
    base = jnp.dot(apply_rope(Q, angles(a)), apply_rope(K, angles(b)))
    moved = jnp.dot(apply_rope(Q, angles(np.add(a, shift))), apply_rope(K, angles(np.add(b, shift))))
    np.testing.assert_allclose(base, moved, atol=1e-4)


def test_axial_3d_axes_use_separate_channel_groups():
    angles = axial_rope_angles(jnp.array([[2.0, 0.0, 0.0], [0.0, 0.0, 5.0]]), 24)  # (2, 12)
    assert angles.shape == (2, 12)
    assert np.all(np.asarray(angles[0, 4:]) == 0) and np.all(np.asarray(angles[1, :8]) == 0)
    np.testing.assert_allclose(angles[1, 8:], 5.0 * np.asarray(rope_frequencies(8)), rtol=1e-6)


@pytest.mark.parametrize("kind", ["mrope", "rope_tie"])
def test_multimodal_rope_on_text_equals_1d_rope(kind):
    n = 9
    if kind == "mrope":
        ids = mrope_position_ids([("text", n)])
        angles = mrope_angles(ids, D, (2, 3, 3))
    else:
        ids = rope_tie_position_ids([("text", n)])
        angles = rope_tie_angles(ids, D)
    np.testing.assert_array_equal(angles, rope_angles(np.arange(n), rope_frequencies(D)))


def test_mrope_position_ids_of_text_image_text():
    ids = mrope_position_ids([("text", 2), ("image", 2, 3), ("text", 2)])
    expected_image = [[2, 2 + i, 2 + j] for i in range(2) for j in range(3)]
    np.testing.assert_array_equal(ids, [[0, 0, 0], [1, 1, 1], *expected_image, [5, 5, 5], [6, 6, 6]])
    video = mrope_position_ids([("video", 2, 1, 2)])
    np.testing.assert_array_equal(video, [[0, 0, 0], [0, 0, 1], [1, 0, 0], [1, 0, 1]])


def test_rope_tie_position_ids_and_image_relative_positions():
    ids = rope_tie_position_ids([("text", 3), ("image", 2, 4), ("text", 1)])
    assert ids.shape == (12, 2)
    np.testing.assert_array_equal(ids[3], [3, 3])
    np.testing.assert_array_equal(ids[10], [4, 6])
    np.testing.assert_array_equal(ids[11], [7, 7])  # resumes one past the image's largest coordinate
    with pytest.raises(ValueError, match="segments"):
        rope_tie_position_ids([("video", 1, 2, 2)])
    with pytest.raises(ValueError, match="segments"):
        mrope_position_ids([("audio", 3)])


@pytest.mark.parametrize("scaling", [s for s in SCALINGS if s != "none"])
def test_every_scaling_at_factor_one_is_plain_rope(scaling):
    config = RopeConfig(scaling=scaling, factor=1.0, original_length=64)
    for length in (16, 64, 1000):
        np.testing.assert_array_equal(scaled_frequencies(config, D, length=length), rope_frequencies(D))
    assert qk_scale(config) == 1.0


def test_the_scaling_formulas_themselves_reduce_to_rope_at_factor_one():
    plain = rope_frequencies(D)
    np.testing.assert_allclose(yarn_frequencies(plain, 1.0, 64), plain, rtol=1e-6)
    np.testing.assert_allclose(scaled_frequencies(RopeConfig(scaling="ntk", factor=1.0 + 1e-9), D, length=0), plain, rtol=1e-6)
    assert float(dynamic_ntk_factor(10_000, 64, 1.0)) == 1.0
    assert yarn_qk_scale(1.0) == 1.0


def test_dynamic_ntk_follows_the_length_between_one_and_its_factor():
    config = RopeConfig(scaling="dynamic_ntk", factor=8.0, original_length=64)
    np.testing.assert_array_equal(scaled_frequencies(config, D, length=64), rope_frequencies(D))
    for length, s in [(256, 4.0), (64 * 100, 8.0)]:
        assert float(dynamic_ntk_factor(length, 64, 8.0)) == s
        ntk = RopeConfig(scaling="ntk", factor=s)
        np.testing.assert_allclose(scaled_frequencies(config, D, length=length), scaled_frequencies(ntk, D, length=0), rtol=1e-5)


def test_pi_and_ntk_closed_forms():
    plain = np.asarray(rope_frequencies(D))
    np.testing.assert_allclose(scaled_frequencies(RopeConfig(scaling="pi", factor=4.0), D, length=0), plain / 4, rtol=1e-6)
    ntk = np.asarray(scaled_frequencies(RopeConfig(scaling="ntk", factor=4.0), D, length=0))
    assert ntk[0] == 1.0  # highest frequency kept
    assert ntk[-1] == pytest.approx(plain[-1] / 4, rel=1e-5)  # lowest interpolated by exactly s


@pytest.mark.parametrize("ramp", ["index", "rotations"])
def test_yarn_ramp_and_temperature(ramp):
    plain = np.asarray(rope_frequencies(64))
    length, s = 256, 8.0
    got = np.asarray(yarn_frequencies(jnp.asarray(plain), s, length, beta_fast=32.0, beta_slow=1.0, ramp=ramp))
    rotations = length * plain / (2 * math.pi)
    fast, slow = rotations > 32, rotations < 1
    assert fast.any() and slow.any()
    np.testing.assert_allclose(got[fast], plain[fast], rtol=1e-6)
    np.testing.assert_allclose(got[slow], plain[slow] / s, rtol=1e-6)
    between = ~fast & ~slow
    assert np.all((got[between] < plain[between]) & (got[between] > plain[between] / s))
    assert yarn_qk_scale(s) == pytest.approx(0.1 * math.log(s) + 1)


def test_logn_scale_is_one_inside_the_trained_context():
    scale = np.asarray(logn_scale(jnp.array([0, 63, 64, 4095]), 64))
    np.testing.assert_allclose(scale, [1.0, 1.0, math.log(65) / math.log(64), 2.0], rtol=1e-6)


def _plain_logits(q, k, frequencies):
    t, s = q.shape[3], k.shape[2]
    qr = apply_rope(q, rope_angles(jnp.arange(t), frequencies))
    kr = apply_rope(k, rope_angles(jnp.arange(s), frequencies))
    return jnp.einsum("bkgtd,bksd->bkgts", qr, kr)


@pytest.mark.parametrize("slope", [0.0, 1 / 16])
def test_rerope_within_window_equals_rope_and_beyond_uses_clipped_position(slope):
    t, window = 12, 5
    q = jnp.asarray(RNG.normal(size=(1, 2, 1, t, D)), jnp.float32)  # (b, kv, g, t, d)
    k = jnp.asarray(RNG.normal(size=(1, 2, t, D)), jnp.float32)  # (b, kv, s, d)
    freq = rope_frequencies(D)
    got = np.asarray(rerope_logits(q, k, jnp.arange(t), jnp.arange(t), freq, window=window, slope=slope))
    plain = np.asarray(_plain_logits(q, k, freq))
    wide = rerope_logits(q, k, jnp.arange(t), jnp.arange(t), freq, window=t, slope=slope)
    np.testing.assert_allclose(wide, plain, atol=1e-5)  # whole sequence inside the window: plain RoPE
    relative = np.arange(t)[:, None] - np.arange(t)[None, :]
    inside = relative < window
    np.testing.assert_allclose(got[..., inside], plain[..., inside], atol=1e-5)
    clipped = np.asarray(rectified_relative_positions(jnp.asarray(relative, jnp.float32), window=window, slope=slope))
    for m, n in [(window, 0), (t - 1, 0), (t - 1, 2)]:  # oracle: ⟨q, R_{r} k⟩ with the clipped r
        expected = np.einsum("kd,kd->k", np.asarray(q[0, :, 0, m]), complex_rope(np.asarray(k[0, :, n]), -clipped[m, n], freq))
        np.testing.assert_allclose(got[0, :, 0, m, n], expected, atol=1e-4)
    assert clipped[t - 1, 0] == pytest.approx(window + slope * (t - 1 - window))


def test_validation_errors_name_the_argument():
    with pytest.raises(ValueError, match="`x` must have an even last dimension"):
        apply_rope(jnp.zeros((2, 5)), jnp.zeros((2, 2)))
    with pytest.raises(ValueError, match="`angles`"):
        apply_rope(jnp.zeros((2, 8)), jnp.zeros((2, 3)))
    with pytest.raises(ValueError, match="`sections`"):
        mrope_angles(jnp.zeros((4, 3)), D, (2, 2, 2))
    with pytest.raises(ValueError, match="`scaling`"):
        RopeConfig(scaling="alibi")
    with pytest.raises(ValueError, match="`factor`"):
        RopeConfig(factor=0.5)
    with pytest.raises(ValueError, match="`dim`"):
        rope_frequencies(7)
