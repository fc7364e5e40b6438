"""YaRN against independently computed frequencies of public checkpoints (Yarn-Llama-2, DeepSeek-V3)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab.nn import RopeConfig, rope_frequencies, scaled_frequencies, yarn_frequencies, yarn_qk_scale
from jaxlab.nn.attention_core import logit_scale
from jaxlab.nn.rope_scaling import qk_scale, rotate, yarn_correction_range

# (dim, L0, factor, base) of two released YaRN models; both use beta_fast 32, beta_slow 1.
LLAMA2_64K = dict(dim=128, original_length=4096, factor=16.0, base=10_000.0)  # NousResearch/Yarn-Llama-2-7b-64k
DEEPSEEK_V3 = dict(dim=64, original_length=4096, factor=40.0, base=10_000.0)  # qk_rope_head_dim 64
SMALL_HI_CLAMPED = dict(dim=8, original_length=1024, factor=4.0, base=100.0)  # ⌈d(1)⌉ = 5 > dim/2 − 1


def published_index_ramp_frequencies(dim, original_length, factor, base, beta_fast=32.0, beta_slow=1.0):
    """Oracle in float64 from the published definition (YaRN code, HF, DeepSeek-V3), not from jaxlab."""
    i = np.arange(dim // 2, dtype=np.float64)
    omega = base ** (-2.0 * i / dim)

    def correction_index(beta):  # the fractional pair index that rotates beta times in L0
        return dim * np.log(original_length / (2 * np.pi * beta)) / (2 * np.log(base))

    lo = max(math.floor(correction_index(beta_fast)), 0)
    hi = min(math.ceil(correction_index(beta_slow)), dim - 1)
    if hi == lo:
        hi += 0.001
    extrapolation = 1.0 - np.clip((i - lo) / (hi - lo), 0.0, 1.0)  # weight on the unscaled ω
    return omega * extrapolation + omega / factor * (1.0 - extrapolation)


def paper_rotation_ramp_frequencies(dim, original_length, factor, base, beta_fast=32.0, beta_slow=1.0):
    """Oracle of the paper's §3.2 ramp, linear in the rotation count r = L0·ω/(2π)."""
    omega = base ** (-np.arange(0, dim, 2, dtype=np.float64) / dim)
    gamma = np.clip((original_length * omega / (2 * np.pi) - beta_slow) / (beta_fast - beta_slow), 0.0, 1.0)
    return (1.0 - gamma) * omega / factor + gamma * omega


def yarn_config(dim, original_length, factor, base, **kwargs):
    del dim
    return RopeConfig(scaling="yarn", factor=factor, original_length=original_length, base=base, **kwargs)


@pytest.mark.parametrize(
    "setting, bounds",
    [(LLAMA2_64K, (20, 46)), (DEEPSEEK_V3, (10, 23)), (SMALL_HI_CLAMPED, (1, 5))],
    ids=["yarn-llama-2-64k", "deepseek-v3", "hi-above-half-dim"],
)
def test_default_index_ramp_matches_the_published_frequencies(setting, bounds):
    # d(32), d(1) = 20.94, 45.03 (Llama) and 10.47, 22.51 (DeepSeek); the small one has hi = 5 > dim/2 − 1 = 3.
    assert RopeConfig().yarn_ramp == "index"
    assert yarn_correction_range(setting["dim"], setting["base"], setting["original_length"]) == bounds
    expected = published_index_ramp_frequencies(**setting)
    got = scaled_frequencies(yarn_config(**setting), setting["dim"], length=0)
    np.testing.assert_allclose(np.asarray(got), expected, rtol=2e-6)
    jitted = jax.jit(lambda: scaled_frequencies(yarn_config(**setting), setting["dim"], length=0))()
    np.testing.assert_allclose(np.asarray(jitted), expected, rtol=2e-6)


def test_index_ramp_guards_an_empty_range():
    # dim 8, L0 4: d(1) = −0.196 → hi = 0, d(32) < 0 → lo = 0; the 0.001 width keeps pair 0, scales the rest.
    setting = dict(dim=8, original_length=4, factor=4.0, base=10_000.0)
    assert yarn_correction_range(8, 10_000.0, 4) == (0, 0)
    got = np.asarray(scaled_frequencies(yarn_config(**setting), 8, length=0))
    omega = np.asarray(rope_frequencies(8))
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, np.concatenate([omega[:1], omega[1:] / 4.0]), rtol=1e-6)
    np.testing.assert_allclose(got, published_index_ramp_frequencies(**setting), rtol=2e-6)
    # dim 128, L0 4: hi = ⌈−3.13⌉ = −3 < lo = 0, a reversed range: the reference arithmetic keeps every pair.
    assert yarn_correction_range(128, 10_000.0, 4) == (0, -3)
    reversed_range = np.asarray(scaled_frequencies(yarn_config(128, 4, 4.0, 10_000.0), 128, length=0))
    np.testing.assert_array_equal(reversed_range, np.asarray(rope_frequencies(128)))
    np.testing.assert_allclose(reversed_range, published_index_ramp_frequencies(128, 4, 4.0, 10_000.0), rtol=2e-6)


@pytest.mark.parametrize("setting", [LLAMA2_64K, DEEPSEEK_V3], ids=["yarn-llama-2-64k", "deepseek-v3"])
def test_rotations_option_is_the_papers_formula(setting):
    got = scaled_frequencies(yarn_config(**setting, yarn_ramp="rotations"), setting["dim"], length=0)
    np.testing.assert_allclose(np.asarray(got), paper_rotation_ramp_frequencies(**setting), rtol=2e-6)
    plain = rope_frequencies(setting["dim"], base=setting["base"])
    direct = yarn_frequencies(plain, setting["factor"], setting["original_length"], ramp="rotations")
    np.testing.assert_allclose(np.asarray(direct), np.asarray(got), rtol=1e-7)


def test_the_two_ramps_differ_for_yarn_llama_2():
    index = np.asarray(scaled_frequencies(yarn_config(**LLAMA2_64K), 128, length=0))
    rotations = np.asarray(scaled_frequencies(yarn_config(**LLAMA2_64K, yarn_ramp="rotations"), 128, length=0))
    differ = ~np.isclose(index, rotations, rtol=1e-4, atol=0.0)
    assert differ.sum() == 25  # pairs 21…45: strictly inside the ramp of at least one of the two
    assert np.flatnonzero(differ).tolist() == list(range(21, 46))
    relative = np.abs(index - rotations) / index
    assert relative.max() == pytest.approx(0.6712, abs=1e-3)
    # Outside the ramps both keep ω (fast pairs) or give ω/s (slow pairs).
    np.testing.assert_array_equal(index[~differ], rotations[~differ])


@pytest.mark.parametrize("setting", [LLAMA2_64K, DEEPSEEK_V3], ids=["yarn-llama-2-64k", "deepseek-v3"])
def test_the_ramps_agree_outside_beta_slow_to_beta_fast(setting):
    dim = setting["dim"]
    plain = np.asarray(rope_frequencies(dim, base=setting["base"]), np.float64)
    rotations = setting["original_length"] * plain / (2 * np.pi)
    for ramp in ("index", "rotations"):
        got = np.asarray(scaled_frequencies(yarn_config(**setting, yarn_ramp=ramp), dim, length=0))
        np.testing.assert_allclose(got[rotations > 32], plain[rotations > 32], rtol=1e-6)
        np.testing.assert_allclose(got[rotations < 1], plain[rotations < 1] / setting["factor"], rtol=1e-6)
        assert np.all(np.diff(got) < 0)  # still strictly decreasing


def test_yarn_llama_2_attention_factor():
    # HF multiplies cos and sin by attention_factor = 0.1·ln 16 + 1, so rotated q·k by its square, then 1/√128.
    config = yarn_config(**LLAMA2_64K)
    attention_factor = 0.1 * np.log(16.0) + 1.0
    assert qk_scale(config) == pytest.approx(attention_factor, rel=1e-12) == yarn_qk_scale(16.0)
    scale = logit_scale(config, jnp.arange(4), 128, ndim=4)
    assert float(scale) == pytest.approx(attention_factor**2 / np.sqrt(128), rel=1e-6)


def test_deepseek_v3_softmax_scale_and_rotated_channel_scale():
    # DeepSeek-V3: mscale(s, c) = 0.1·c·ln s + 1 with mscale = mscale_all_dim = 1 and s = 40.
    def mscale(s, c):
        return 1.0 if s <= 1 else 0.1 * c * np.log(s) + 1.0

    config = yarn_config(**DEEPSEEK_V3)
    qk_head_dim = 128 + 64  # qk_nope_head_dim + qk_rope_head_dim
    softmax_scale = qk_head_dim**-0.5 * mscale(40.0, 1.0) ** 2  # on every channel, nope and rope
    scale = logit_scale(config, jnp.arange(4), qk_head_dim, ndim=4)
    assert float(scale) == pytest.approx(softmax_scale, rel=1e-6)
    assert float(scale) == pytest.approx(qk_head_dim**-0.5 * 1.3688879454113936**2, rel=1e-6)
    # The rotated channels' cos/sin carry mscale(s, mscale)/mscale(s, mscale_all_dim) = 1: rotation keeps norms.
    assert mscale(40.0, 1.0) / mscale(40.0, 1.0) == 1.0
    x = jax.random.normal(jax.random.key(0), (2, 5, 3, 64))
    rotated = rotate(x, jnp.arange(5) * 997, config, length=5)
    np.testing.assert_allclose(jnp.linalg.norm(rotated, axis=-1), jnp.linalg.norm(x, axis=-1), rtol=1e-5)


def test_bad_yarn_ramp_is_rejected_by_name():
    with pytest.raises(ValueError, match=r"`yarn_ramp` must be one of \('index', 'rotations'\); got 'paper'"):
        RopeConfig(scaling="yarn", factor=2.0, yarn_ramp="paper")
    with pytest.raises(ValueError, match=r"`ramp` must be one of"):
        yarn_frequencies(rope_frequencies(8), 2.0, 64, ramp="linear")
