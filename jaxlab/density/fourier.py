"""The Fourier basis density model: a 1-D density from a squared Fourier series.

Periodic model on u ∈ [−1, 1) (period 2). With complex coefficients
a_0..a_N and ``A(u) = Σ_k a_k e^{ikπu}``,

    f(u) = |A(u)|² = Σ_{n=−N}^{N} c_n e^{inπu},   c_n = Σ_k a_{k+n} conj(a_k),  c_{−n} = conj(c_n),

is non-negative by construction (its coefficients c are the autocorrelation
of a, a positive semi-definite sequence — Herglotz / Fejér–Riesz; every
non-negative trigonometric polynomial of degree N has this form), and

    ∫_{−1}^{1} f(u) du = 2 c_0,    p(u) = f(u) / (2 c_0),
    P(u) = [c_0 (u + 1) + 2 Re Σ_{n≥1} c_n (e^{inπu} − (−1)^n) / (inπ)] / (2 c_0).

Real-line model: y = t + s·atanh(u), i.e. u = tanh((y − t)/s), with a learned
scale s > 0 and offset t, so

    q(y) = p(u) · (1 − u²) / s,    Q(y) = P(u),

whose tails decay like exp(−2|y − t|/s). Bin probabilities are CDF
differences (edges may be ±inf). Fitting is maximum likelihood with an
optional smoothness penalty γ·∫ p'(u)² du = γ·π² Σ_{n≥1} n² |c_n|² / c_0²,
which penalizes high frequencies more than low ones.

Parameters are a :class:`FourierParams` (a pytree): the real and imaginary
parts of a (N+1,), ``log_scale`` and ``offset`` (unused by the periodic model).

References:
  De la Fuente, Singh, Ballé 2024, "Fourier Basis Density Model"
  (arXiv:2402.15345).
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax import Array


class FourierParams(NamedTuple):
    """Parameters of a Fourier basis density with N + 1 coefficients."""

    real: Array  # (N+1,) Re a_k
    imag: Array  # (N+1,) Im a_k
    log_scale: Array  # () log s of the real-line map
    offset: Array  # () t of the real-line map


def num_parameters(num_terms: int, *, periodic: bool = False) -> int:
    """Real parameters of a model of degree ``num_terms`` (N): 2(N+1), plus s and t on the real line."""
    return 2 * (num_terms + 1) + (0 if periodic else 2)


def init_fourier_params(num_terms: int, *, key: Array, loc: float | Array = 0.0, scale: float | Array = 1.0, jitter: float = 1e-2) -> FourierParams:
    """A near-uniform periodic density (a_0 = 1, the rest small) on a real line centred at ``loc``.

    With a uniform p the real-line density is the logistic distribution of
    scale s/2; ``s`` is set so its standard deviation equals ``scale``.
    """
    if not isinstance(num_terms, int) or num_terms < 0:
        raise ValueError(f"num_terms must be a non-negative int, got {num_terms!r}")
    if isinstance(scale, (int, float)) and not scale > 0:
        raise ValueError(f"scale must be > 0, got {scale!r}")
    noise = jitter * jax.random.normal(key, (2, num_terms + 1))
    log_scale = jnp.log(2.0 * math.sqrt(3.0) / math.pi * jnp.asarray(scale, jnp.float32))
    return FourierParams(noise[0].at[0].set(1.0), noise[1].at[0].set(0.0), log_scale, jnp.asarray(loc, jnp.float32))


def _amplitudes(params: FourierParams) -> Array:
    return params.real + 1j * params.imag  # (N+1,)


def fourier_coefficients(a: Array) -> Array:
    """c_n = Σ_k a_{k+n} conj(a_k) for n = 0..N: the density's non-negative-frequency coefficients (N+1,)."""
    size = a.shape[0]
    return jnp.stack([jnp.sum(a[n:] * jnp.conj(a[: size - n])) for n in range(size)])


def _check_x(x: Array) -> Array:
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"x must be a floating array, got dtype {x.dtype}")
    return x


def periodic_log_prob(params: FourierParams, u: Array) -> Array:
    """log p(u) for u in [−1, 1) (any shape), computed from ``|A(u)|²`` (no cancellation)."""
    u = _check_x(u)
    a = _amplitudes(params)
    frequencies = jnp.arange(a.shape[0])
    series = jnp.sum(a * jnp.exp(1j * jnp.pi * frequencies * u[..., None]), axis=-1)  # (...,)
    normalizer = 2.0 * jnp.sum(jnp.abs(a) ** 2)  # 2 c_0
    return jnp.log(jnp.abs(series) ** 2) - jnp.log(normalizer)


def periodic_cdf(params: FourierParams, u: Array) -> Array:
    """P(u) = ∫_{−1}^{u} p for u in [−1, 1] (any shape), in closed form."""
    u = _check_x(u)
    c = fourier_coefficients(_amplitudes(params))  # (N+1,)
    n = jnp.arange(1, c.shape[0])
    phase = jnp.exp(1j * jnp.pi * n * u[..., None]) - (-1.0) ** n  # (..., N)
    oscillating = 2.0 * jnp.real(jnp.sum(c[1:] * phase / (1j * jnp.pi * n), axis=-1))
    cdf = (jnp.real(c[0]) * (u + 1.0) + oscillating) / (2.0 * jnp.real(c[0]))
    return jnp.clip(cdf, 0.0, 1.0)


def _log_sech_squared(v: Array) -> Array:
    """log(1 − tanh²v) = 2·(log 2 − |v| − log(1 + e^{−2|v|})), stable for large |v|."""
    v = jnp.abs(v)
    return 2.0 * (math.log(2.0) - v - jax.nn.softplus(-2.0 * v))


def fourier_log_prob(params: FourierParams, x: Array, *, periodic: bool = False) -> Array:
    """log-density of x (any shape): periodic on [−1, 1), or on the real line through u = tanh((x − t)/s)."""
    x = _check_x(x)
    if periodic:
        return periodic_log_prob(params, x)
    v = (x - params.offset) / jnp.exp(params.log_scale)
    return periodic_log_prob(params, jnp.tanh(v)) + _log_sech_squared(v) - params.log_scale


def fourier_cdf(params: FourierParams, x: Array, *, periodic: bool = False) -> Array:
    """CDF of x (any shape; ±inf allowed on the real line)."""
    x = _check_x(x)
    if periodic:
        return periodic_cdf(params, x)
    return periodic_cdf(params, jnp.tanh((x - params.offset) / jnp.exp(params.log_scale)))


def fourier_bin_probabilities(params: FourierParams, edges: Array, *, periodic: bool = False) -> Array:
    """Probabilities (m,) of the bins between increasing ``edges`` (m + 1,); sum 1 when the edges span the support."""
    edges = _check_x(edges)
    if edges.ndim != 1 or edges.shape[0] < 2:
        raise ValueError(f"edges must have shape (m + 1,) with m >= 1, got {edges.shape}")
    return jnp.diff(fourier_cdf(params, edges, periodic=periodic))


def smoothness_penalty(params: FourierParams) -> Array:
    """``∫_{−1}^{1} p'(u)² du = π² Σ_{n≥1} n² |c_n|² / c_0²`` of the periodic density."""
    c = fourier_coefficients(_amplitudes(params))
    n = jnp.arange(1, c.shape[0])
    return jnp.pi**2 * jnp.sum(n**2 * jnp.abs(c[1:]) ** 2) / jnp.real(c[0]) ** 2


def fourier_nll(params: FourierParams, x: Array, *, periodic: bool = False, smoothness: float = 0.0) -> Array:
    """Mean negative log-likelihood (nats) of the samples x (n,) plus ``smoothness`` × the roughness penalty."""
    return -jnp.mean(fourier_log_prob(params, x, periodic=periodic)) + smoothness * smoothness_penalty(params)


def fit_fourier_density(
    x: Array,
    *,
    num_terms: int,
    key: Array,
    steps: int = 2000,
    learning_rate: float = 1e-2,
    periodic: bool = False,
    smoothness: float = 0.0,
) -> tuple[FourierParams, Array]:
    """Maximum-likelihood fit by full-batch Adam.

    Args:
      x: (n,) samples (in [−1, 1) when ``periodic``).
      num_terms: N, the degree of the density's trigonometric polynomial.
      key: typed PRNG key (initial jitter of the coefficients).
      steps: optimizer steps.
      learning_rate: Adam step size.
      periodic: fit the periodic model instead of the real-line one.
      smoothness: weight γ of :func:`smoothness_penalty`.

    Returns:
      ``(params, losses (steps,))``. The real-line model starts as a
      logistic density at the median with the interquartile range's scale.
    """
    x = _check_x(x)
    if x.ndim != 1 or x.shape[0] < 2:
        raise ValueError(f"x must have shape (n,) with n >= 2, got {x.shape}")
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    if not isinstance(num_terms, int) or num_terms < 0:
        raise ValueError(f"num_terms must be a non-negative int, got {num_terms!r}")
    return _fit(x, key, num_terms, steps, learning_rate, periodic, smoothness)


@functools.partial(jax.jit, static_argnums=(2, 3, 4, 5, 6))
def _fit(x, key, num_terms, steps, learning_rate, periodic, smoothness):
    if periodic:
        params = init_fourier_params(num_terms, key=key)
    else:
        quartiles = jnp.quantile(x, jnp.array([0.25, 0.5, 0.75]))  # robust start: heavy tails would inflate the std
        scale = (quartiles[2] - quartiles[0]) / 1.349 + 1e-6  # the std of a normal with this interquartile range
        params = init_fourier_params(num_terms, key=key, loc=quartiles[1], scale=scale)
    optimizer = optax.adam(learning_rate)
    loss_fn = jax.value_and_grad(lambda p: fourier_nll(p, x, periodic=periodic, smoothness=smoothness))

    def step(carry, _):
        params, opt_state = carry
        loss, grads = loss_fn(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    (params, _), losses = jax.lax.scan(step, (params, optimizer.init(params)), None, length=steps)
    return params, losses


@functools.partial(jax.jit, static_argnames=("num", "periodic", "iterations"))
def fourier_sample(params: FourierParams, *, key: Array, num: int, periodic: bool = False, iterations: int = 40) -> Array:
    """``num`` samples by inverting the CDF with bisection on u (float32 resolves u up to about 1 − 1e-7)."""
    target = jax.random.uniform(key, (num,))
    low, high = -jnp.ones(num), jnp.ones(num)

    def bisect(_, bounds):
        low, high = bounds
        middle = 0.5 * (low + high)
        below = periodic_cdf(params, middle) < target
        return jnp.where(below, middle, low), jnp.where(below, high, middle)

    low, high = jax.lax.fori_loop(0, iterations, bisect, (low, high))
    u = 0.5 * (low + high)
    if periodic:
        return u
    u = jnp.clip(u, -1.0 + 1e-7, 1.0 - 1e-7)
    return params.offset + jnp.exp(params.log_scale) * jnp.arctanh(u)
