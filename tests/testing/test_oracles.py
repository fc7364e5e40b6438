"""jaxlab.testing's NumPy oracles against independent computations: jax.nn, per-query loops, explicit rotations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special

from jaxlab.testing import (
    attention_from_logits,
    causal_mask,
    dot_product_attention,
    masked_softmax,
    mla_attention,
    rms_norm,
    rope,
)

RNG = np.random.default_rng(0)
JAX_ATTENTION = jax.jit(jax.nn.dot_product_attention, static_argnames="is_causal")


def normal(*shape):
    return RNG.normal(size=shape).astype(np.float32)


def loop_attention(q, k, v, keep):
    """One query at a time: scipy's softmax over the kept keys, kv head ``j // group`` for query head j."""
    b, t, h, d = q.shape
    group = h // k.shape[2]
    out = np.zeros((b, t, h, v.shape[-1]))
    for n in range(b):
        for j in range(h):
            for m in range(t):
                kept = np.flatnonzero(keep[n, j, m])
                logits = k[n, kept, j // group].astype(np.float64) @ q[n, m, j] / np.sqrt(d)
                out[n, m, j] = scipy.special.softmax(logits) @ v[n, kept, j // group]
    return out


@pytest.mark.parametrize(("kv", "causal"), [(4, True), (2, False), (1, True)], ids=["mha", "gqa", "mqa"])
def test_dense_attention_matches_jax_nn_with_causal_and_padding_masks(kv, causal):
    q, k, v = normal(2, 6, 4, 8), normal(2, 6, kv, 8), normal(2, 6, kv, 8)  # jax.nn needs dv = d
    valid = np.array([[True] * 6, [True] * 4 + [False] * 2])  # (b, s) key padding
    ours = dot_product_attention(q, k, v, causal=causal, mask=valid[:, None, None, :])
    theirs = JAX_ATTENTION(q, k, v, mask=valid[:, None, None, :], is_causal=causal)
    assert ours.dtype == np.float64 and ours.shape == (2, 6, 4, 8)
    np.testing.assert_allclose(ours, theirs, atol=2e-6)


@pytest.mark.parametrize("causal", [False, True])
def test_dense_attention_matches_a_per_query_loop_when_queries_follow_cached_keys(causal):
    q, k, v = normal(2, 3, 4, 8), normal(2, 7, 2, 8), normal(2, 7, 2, 5)
    keep = np.broadcast_to(causal_mask(3, 7) if causal else True, (2, 4, 3, 7))
    np.testing.assert_allclose(dot_product_attention(q, k, v, causal=causal), loop_attention(q, k, v, keep), atol=1e-12)


def test_causal_mask_aligns_queries_with_the_last_keys():
    np.testing.assert_array_equal(causal_mask(3), np.tril(np.ones((3, 3), bool)))
    np.testing.assert_array_equal(causal_mask(2, 4), [[1, 1, 1, 0], [1, 1, 1, 1]])
    with pytest.raises(ValueError, match="t <= s"):
        causal_mask(4, 2)


def test_masked_softmax_zeroes_masked_entries_and_rejects_empty_rows():
    logits = normal(3, 5) * 30  # large logits: the shift keeps exp finite
    keep = np.array([[1, 0, 1, 1, 0], [0, 0, 0, 0, 1], [1] * 5], bool)
    probs = masked_softmax(logits, keep)
    assert np.all(probs[~keep] == 0)
    for row in range(3):
        np.testing.assert_allclose(probs[row, keep[row]], scipy.special.softmax(logits[row, keep[row]].astype(np.float64)))
    with pytest.raises(ValueError, match="keeps no key"):
        masked_softmax(logits, np.zeros((3, 5), bool))


def test_attention_from_logits_with_a_bias_equals_jax_nn_with_that_bias():
    q, k, v = normal(1, 4, 2, 8), normal(1, 4, 2, 8), normal(1, 4, 2, 8)
    bias = normal(1, 2, 4, 4)
    logits = np.einsum("bthd,bshd->bhts", q, k) / np.sqrt(8) + bias
    expected = JAX_ATTENTION(q, k, v, bias=bias, is_causal=True)
    np.testing.assert_allclose(attention_from_logits(logits, v, causal=True), expected, atol=2e-6)


def rotation_matrix_rope(x, position, frequencies):
    """RoPE as a block rotation: pair (i, i + d/2) turned by the angle position·ω_i."""
    half = len(frequencies)
    x = np.asarray(x, np.float64)
    out = x.copy()
    for i, w in enumerate(frequencies):
        c, s = np.cos(position * w), np.sin(position * w)
        out[i], out[i + half] = c * x[i] - s * x[i + half], s * x[i] + c * x[i + half]
    return out


def test_rope_is_a_block_rotation_and_its_dot_products_depend_on_relative_positions():
    frequencies = 1.0 / 10_000 ** (np.arange(4) / 4)
    x, y = normal(5, 8).astype(np.float64), normal(5, 8)
    positions = np.array([0, 1, 3, 10, 250])
    rotated = rope(x, positions, frequencies)
    for n in range(5):
        np.testing.assert_allclose(rotated[n], rotation_matrix_rope(x[n], positions[n], frequencies), atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(rotated, axis=-1), np.linalg.norm(x, axis=-1), rtol=1e-12)
    shifted = np.sum(rope(x, positions + 17, frequencies) * rope(y, positions[::-1] + 17, frequencies), -1)
    np.testing.assert_allclose(shifted, np.sum(rotated * rope(y, positions[::-1], frequencies), -1), atol=1e-10)


def test_rms_norm_has_unit_root_mean_square_before_the_scale():
    x = normal(4, 6) * 5
    np.testing.assert_allclose(np.sqrt(np.mean(rms_norm(x, 1.0, 0.0) ** 2, -1)), 1.0, rtol=1e-12)
    np.testing.assert_allclose(rms_norm(x, np.arange(6.0), 0.0), rms_norm(x, 1.0, 0.0) * np.arange(6.0))


H, C, N, R, DV, F = 2, 6, 4, 4, 3, 8


def mla_params(q_lora_rank):
    p = {"w_dkv": normal(F, C + R), "kv_norm": {"scale": 1 + normal(C) / 4}, "w_uk": normal(C, H * N)}
    p |= {"w_uv": normal(C, H * DV), "w_o": normal(H * DV, F)}
    if q_lora_rank is None:
        return p | {"w_q": normal(F, H * (N + R))}
    return p | {
        "w_dq": normal(F, q_lora_rank),
        "q_norm": {"scale": 1 + normal(q_lora_rank)},
        "w_uq": normal(q_lora_rank, H * (N + R)),
    }


def loop_mla(p, x, frequencies, eps):
    """Token by token: the no-RoPE logit through the absorbed query (W_UKᵀ q_C)·c_KV, RoPE by block rotations."""
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), p)
    x = np.asarray(x, np.float64)
    b, t, _ = x.shape
    norm = lambda z, s: z / np.sqrt(np.mean(z**2) + eps) * s
    out = np.zeros((b, t, F))
    for n in range(b):
        kv = [x[n, s].astype(np.float64) @ p["w_dkv"] for s in range(t)]
        latents = [norm(row[:C], p["kv_norm"]["scale"]) for row in kv]
        k_rope = [rotation_matrix_rope(row[C:], s, frequencies) for s, row in enumerate(kv)]
        for m in range(t):
            if "w_q" in p:
                q = x[n, m] @ p["w_q"]
            else:
                q = norm(x[n, m] @ p["w_dq"], p["q_norm"]["scale"]) @ p["w_uq"]
            heads = []
            for j in range(H):
                q_j = q[j * (N + R) : (j + 1) * (N + R)]
                absorbed = p["w_uk"][:, j * N : (j + 1) * N] @ q_j[:N]  # (C,)
                q_rope = rotation_matrix_rope(q_j[N:], m, frequencies)
                logits = np.array([absorbed @ latents[s] + q_rope @ k_rope[s] for s in range(m + 1)]) / np.sqrt(N + R)
                mixed = scipy.special.softmax(logits) @ np.array(latents[: m + 1])  # attention over latents
                heads.append(mixed @ p["w_uv"][:, j * DV : (j + 1) * DV])
            out[n, m] = np.concatenate(heads) @ p["w_o"]
    return out


@pytest.mark.parametrize("q_lora_rank", [None, 5])
def test_mla_oracle_matches_the_absorbed_token_by_token_loop(q_lora_rank):
    params, x = mla_params(q_lora_rank), normal(2, 5, F)
    frequencies = 1.0 / 100 ** (np.arange(R // 2) / (R // 2))
    ours = mla_attention({"params": params}, x, num_heads=H, kv_lora_rank=C, qk_nope_dim=N, frequencies=frequencies)
    assert ours.shape == (2, 5, F)
    np.testing.assert_allclose(ours, loop_mla(params, x, frequencies, 1e-6), rtol=1e-10, atol=1e-10)


def test_mla_oracle_positions_shift_and_masks_follow_dense_attention():
    params, x = mla_params(None), normal(2, 5, F)
    common = dict(num_heads=H, kv_lora_rank=C, qk_nope_dim=N, frequencies=np.array([1.0, 0.1]))
    base = mla_attention(params, x, **common)
    np.testing.assert_allclose(mla_attention(params, x, positions=np.arange(5) + 9, **common), base, atol=1e-10)
    everything = np.ones((2, 1, 5, 5), bool)
    np.testing.assert_allclose(mla_attention(params, x, causal=False, mask=np.tril(everything), **common), base)
    assert not np.allclose(mla_attention(params, x, causal=False, **common), base)
    np.testing.assert_allclose(mla_attention(params, x, scale=1 / np.sqrt(N + R), **common), base)


def test_oracles_reject_malformed_shapes():
    with pytest.raises(ValueError, match="must divide"):
        dot_product_attention(normal(1, 2, 3, 4), normal(1, 2, 2, 4), normal(1, 2, 2, 4))
    with pytest.raises(ValueError, match=r"\(b, t, h, d\)"):
        dot_product_attention(normal(2, 3, 4), normal(1, 2, 2, 4), normal(1, 2, 2, 4))
    with pytest.raises(ValueError, match="even last axis"):
        rope(normal(3, 5), np.arange(3), np.ones(2))
    with pytest.raises(ValueError, match=r"\(b, h, t, s\)"):
        attention_from_logits(normal(2, 3, 3), normal(1, 3, 1, 2))


def test_oracles_accept_jax_and_bfloat16_inputs():
    q = jnp.asarray(normal(1, 3, 2, 4), jnp.bfloat16)
    out = dot_product_attention(q, q, q, causal=True)
    assert out.dtype == np.float64
    np.testing.assert_allclose(
        out,
        dot_product_attention(np.asarray(q, np.float32), np.asarray(q, np.float32), np.asarray(q, np.float32), causal=True),
    )
