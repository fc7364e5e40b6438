"""Linen SSM layer and models: the conv / scan / assoc / step modes agree; parameterization."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlab.ssm.layers as layers_mod
from jaxlab.ssm import (
    SSM,
    S4DParams,
    SSMAutoregressive,
    SSMClassifier,
    causal_conv,
    diag_associative_scan,
    diag_scan,
    diag_step,
    s4d_discretize,
    s4d_init,
    s4d_kernel,
)
from jaxlab.ssm.s4d import S4D_INITS
from jaxlab.testing import rounding_tolerance

B, L, H, N = 2, 24, 4, 8
KEY = jax.random.key(0)
U = jax.random.normal(jax.random.key(1), (B, L, H))


@pytest.fixture(scope="module")
def s4d_layer():
    layer = SSM(features=16, d_state=N, dt_min=1e-3, dt_max=1e-1)
    u = jax.random.normal(jax.random.key(1), (B, L, 16))
    return layer, jax.jit(layer.init)(KEY, u), u


def _widen_steps(variables, h):
    """Large steps, so that the kernel is far from trivial over L taps."""
    return jax.tree_util.tree_map_with_path(lambda p, x: jnp.log(jnp.linspace(0.05, 0.5, h)) if p[-1].key == "log_step" else x, variables)


@jax.jit
def _diag_modes(Ab, Bb, C, u):
    x0 = jnp.zeros(u.shape[:1] + Ab.shape, Ab.dtype)
    y_scan, x_scan = diag_scan(Ab, Bb, C, u)
    y_assoc, x_assoc = diag_associative_scan(Ab, Bb, C, u)
    _, y_step = jax.lax.scan(lambda x, u_t: diag_step(Ab, Bb, C, x, u_t)[::-1], x0, jnp.swapaxes(u, 0, 1))
    # prefill the first half, continue from the carried state
    half = u.shape[1] // 2
    y1, x1 = diag_scan(Ab, Bb, C, u[:, :half])
    y2, _ = diag_associative_scan(Ab, Bb, C, u[:, half:], x1)
    y_split = jnp.concatenate([y1, y2], axis=1)
    return y_scan, y_assoc, jnp.swapaxes(y_step, 0, 1), y_split, x_scan, x_assoc


@pytest.mark.parametrize("method", ["zoh", "bilinear"])
def test_s4d_conv_scan_assoc_step_agree(method):
    conv = jax.jit(lambda p, u: causal_conv(u, s4d_kernel(p, u.shape[1], method=method)))
    rng = np.random.default_rng(0)
    for init in S4D_INITS:
        lam, b = s4d_init(init, N)
        c = rng.normal(size=(H, N // 2)) + 1j * rng.normal(size=(H, N // 2))
        tile = lambda x: jnp.asarray(np.tile(x, (H, 1)), jnp.complex64)
        params = S4DParams(tile(lam), tile(b), jnp.asarray(c, jnp.complex64), jnp.linspace(0.05, 0.5, H))
        y_conv = conv(params, U)
        Ab, Bb = s4d_discretize(params, method)
        y_scan, y_assoc, y_step, y_split, x_scan, x_assoc = _diag_modes(Ab, Bb, params.c, U)
        close = dict(rtol=1e-4, atol=1e-4 * float(jnp.abs(y_conv).max()))
        for y in (y_scan, y_assoc, y_step, y_split):
            np.testing.assert_allclose(y, y_conv, err_msg=init, **close)
        np.testing.assert_allclose(x_assoc, x_scan, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", ["s4d", "s4"])
def test_layer_modes_agree(kind, s4d_layer):
    if kind == "s4d":
        layer, variables, u = s4d_layer
    else:
        layer, u = SSM(features=H, d_state=N, kind="s4", l_max=32), U
        variables = jax.jit(layer.init)(KEY, u)
    variables = _widen_steps(variables, layer.features)
    apply = jax.jit(layer.apply, static_argnames="mode")
    y_conv = apply(variables, u, mode="conv")
    chex.assert_shape(y_conv, u.shape)
    close = dict(rtol=1e-4, atol=1e-4 * float(jnp.abs(y_conv).max()))
    np.testing.assert_allclose(apply(variables, u, mode="scan"), y_conv, **close)
    if kind == "s4d":
        np.testing.assert_allclose(apply(variables, u, mode="assoc"), y_conv, **close)
    step = jax.jit(lambda v, u_t, s: layer.apply(v, u_t, s, method=SSM.step))
    state, ys = layer.initial_state((B,)), []
    for t in range(L):
        y, state = step(variables, u[:, t], state)
        ys.append(y)
    np.testing.assert_allclose(jnp.stack(ys, 1), y_conv, **close)


@pytest.mark.parametrize("mode", ["conv", "scan"])
def test_bfloat16_input_computes_in_float32_and_returns_bfloat16(mode, s4d_layer):
    """bf16 in, bf16 out; against the float32 result only the input and output roundings differ."""
    layer, variables, u = s4d_layer
    variables = _widen_steps(variables, layer.features)
    apply = jax.jit(layer.apply, static_argnames="mode")
    expected = np.asarray(apply(variables, u, mode=mode), np.float64)
    y = apply(variables, u.astype(jnp.bfloat16), mode=mode)
    assert y.dtype == jnp.bfloat16
    # each output sums L kernel taps and the skip term, each over a bf16-rounded input
    bound = rounding_tolerance(jnp.bfloat16, L + 1) * np.max(np.abs(expected))
    assert np.max(np.abs(np.asarray(y, np.float64) - expected)) <= bound
    if mode == "scan":  # the decoding step keeps the dtype too
        step = jax.jit(lambda v, u_t, s: layer.apply(v, u_t, s, method=SSM.step))
        y_0, state = step(variables, u[:, 0].astype(jnp.bfloat16), layer.initial_state((B,)))
        assert y_0.dtype == jnp.bfloat16 and state.dtype == jnp.complex64
        error = np.max(np.abs(np.asarray(y_0, np.float64) - expected[:, 0]))
        assert error <= rounding_tolerance(jnp.bfloat16, 2) * np.max(np.abs(expected[:, 0]))  # B̄·u_0 and D·u_0


def test_parameterization(s4d_layer):
    layer, variables, _ = s4d_layer
    params = jax.tree.map(np.asarray, variables["params"])
    step = np.exp(params["log_step"])
    assert step.min() >= 1e-3 * (1 - 1e-6) and step.max() <= 1e-1 * (1 + 1e-6)
    assert np.log10(step).std() > 0.3  # spread over the decades, not clustered
    assert params["C"].shape == params["B"].shape == (16, N // 2, 2)
    # whatever the stored value, Re λ = -exp(·) < 0
    params["lambda_log_neg_re"] = np.full((16, N // 2), -30.0, np.float32)
    lam = jax.jit(lambda p: layer.apply({"params": p}, method=lambda m: m.ssm_params().lambda_))(params)
    assert bool(np.all(np.asarray(lam).real < 0))


def test_kernel_computed_once_per_call_regardless_of_batch(monkeypatch, s4d_layer):
    calls = []
    original = layers_mod.s4d_kernel

    def counting(*args, **kwargs):
        calls.append(args[1])
        return original(*args, **kwargs)

    monkeypatch.setattr(layers_mod, "s4d_kernel", counting)
    layer, variables, _ = s4d_layer
    for batch in [(), (1,), (8,), (2, 3)]:
        out = jax.eval_shape(layer.apply, variables, jax.ShapeDtypeStruct(batch + (L, 16), jnp.float32))
        chex.assert_shape(out, batch + (L, 16))
    assert calls == [L] * 4  # one (H, L) kernel per call, shared by the whole batch


def test_classifier_shapes_grads_and_dropout():
    model = SSMClassifier(num_classes=5, d_model=H, n_layers=1, d_state=N, pool="last", dropout=0.5)
    x = jnp.ones((B, L))
    v = jax.jit(model.init)(KEY, x)
    chex.assert_shape(jax.eval_shape(model.apply, v, x), (B, 5))

    @jax.jit
    def loss_and_grad(v, key):
        def loss(p):
            return jnp.sum(model.apply(p, x, deterministic=False, rngs={"dropout": key}) ** 2)

        return jax.value_and_grad(loss)(v)

    (loss_a, grads), (loss_b, _) = loss_and_grad(v, jax.random.key(3)), loss_and_grad(v, jax.random.key(4))
    assert np.isfinite(loss_a) and loss_a != loss_b  # dropout is active and keyed
    chex.assert_tree_all_finite(grads)
    with pytest.raises(ValueError, match="pool"):
        _init_abstract(SSMClassifier(num_classes=5, d_model=H, pool="max"), x)


def test_autoregressive_causal_and_decode_agrees():
    model = SSMAutoregressive(vocab_size=7, d_model=H, n_layers=2, d_state=N)
    tokens = jax.random.randint(KEY, (B, L), 0, 7)
    v = jax.jit(model.init)(KEY, tokens)
    logits = jax.jit(model.apply)(v, tokens)
    chex.assert_shape(logits, (B, L, 7))
    # causality: changing the last half of the tokens leaves the first half's logits unchanged
    other = tokens.at[:, L // 2 :].set((tokens[:, L // 2 :] + 1) % 7)
    np.testing.assert_allclose(jax.jit(model.apply)(v, other)[:, : L // 2], logits[:, : L // 2], atol=1e-5)
    step = jax.jit(lambda v, t, s: model.apply(v, t, s, method=model.step))
    states, outs = model.initial_state(B), []
    for t in range(L):
        out, states = step(v, tokens[:, t], states)
        outs.append(out)
    np.testing.assert_allclose(jnp.stack(outs, 1), logits, rtol=1e-4, atol=1e-4)


def _init_abstract(module, x, **kwargs):
    return jax.eval_shape(lambda k: module.init(k, x, **kwargs), KEY)


def test_errors():
    with pytest.raises(ValueError, match="mode"):
        _init_abstract(SSM(features=H, d_state=N), U, mode="fft")
    with pytest.raises(ValueError, match="u"):
        _init_abstract(SSM(features=H + 1, d_state=N), U)
    with pytest.raises(ValueError, match="d_state"):
        _init_abstract(SSM(features=H, d_state=7), U)
    with pytest.raises(ValueError, match="init_scheme"):
        _init_abstract(SSM(features=H, d_state=N, init_scheme="hippo"), U)
    with pytest.raises(ValueError, match="l_max"):
        _init_abstract(SSM(features=H, d_state=N, kind="s4"), U)
    with pytest.raises(ValueError, match="l_max"):
        _init_abstract(SSM(features=H, d_state=N, kind="s4", l_max=L - 1), U)
    with pytest.raises(ValueError, match="assoc"):
        _init_abstract(SSM(features=H, d_state=N, kind="s4", l_max=L), U, mode="assoc")
    with pytest.raises(ValueError, match="tokens"):
        _init_abstract(SSMAutoregressive(vocab_size=3, d_model=H, n_layers=1, d_state=N), U)
