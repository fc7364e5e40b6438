"""Shortcut models: one network for every step size, trained by flow matching plus self-consistency.

The network ``s_θ(x_t, t, d)`` is conditioned on the time t *and* the step
size d and predicts the normalized jump of a step of size d. In jaxlab's
convention (t = 0 data, t = 1 noise, ``x_t = (1 − t)·x0 + t·x1``, sampling
runs from t = 1 down), a step of size d goes ``x_{t−d} = x_t − d·s(x_t, t, d)``,
and the two training targets are

* d = 0: the flow-matching velocity, ``s(x_t, t, 0) → x1 − x0``;
* 2d > 0: self-consistency, one step of size 2d equals two steps of size d,

      s(x_t, t, 2d) ← ½·[s(x_t, t, d) + s(x_t − d·s(x_t, t, d), t − d, d)],

  with the right side from the EMA parameters and no gradient.

The paper (Frans et al. 2024) runs time the other way (t = 0 noise, steps
``x_{t+d} = x_t + d·s``); the target above is its rewriting, not a copy.
Step sizes live on the power-of-two grid d ∈ {1/M, 2/M, …, 1} with M = 128
smallest steps. jaxlab treats the smallest step as the flow itself (the
d = 0 base case): querying d = 1/M uses the condition d = 0, so the bootstrap
targets of 2d = 2/M are two flow (Euler) steps and sampling with M steps is
exactly Euler integration of the flow-matching velocity. Bootstrap times are drawn on the
grid of multiples of 2d in [2d, 1], so both half steps stay in [0, 1].

Bootstrap fraction. The paper's text uses 1/4 of each batch for the
self-consistency targets; the authors' code (``bootstrap_every = 8``) uses
1/8, which halves the cost of the two extra forward passes per target on
images. jaxlab defaults to the paper's 1/4: the targets of every step size
but the smallest are learned only from these rows, spread over log2 M = 7
levels, and 1/8 leaves each level few rows. With the OT coupling below the
flow part needs fewer rows still (``fewstep-toy2d`` uses 3/4; too many
bootstrap rows starve the flow).

Bootstrap targets. The paper computes them with the EMA parameters
(``ctx.ema_params``, the default here). Each level of the step-size ladder
learns from the level below, so an EMA of decay β delays the largest step by
about log2(M)/(1 − β) steps (7,000 for M = 128, β = 0.999): negligible in the
paper's runs of hundreds of thousands of steps, decisive in short ones, where
``bootstrap_target="online"`` (stop-gradient current parameters, the μ = 0
choice of improved consistency training) works far better. iSM names the same
conflict between the EMA lag and self-consistency.

Coupling. The paper pairs each data point with independent noise.
``coupling="minibatch_ot"`` pairs the batch by its optimal assignment
instead (:mod:`jaxlab.generative.coupling`), as the improved shortcut models
(iSM, Nguyen et al. 2025) do: straighter paths leave the large-step levels
less to learn, and the flow-matching targets are less noisy.

Step sizes of the bootstrap rows. The paper draws the level j of 2d = 2^-j
uniformly. The one-step level is the hardest (its target has passed through
every level below) and sees only 1/log2 M of the rows; ``large_step_bias``
draws j with probability ∝ log2 M − j instead. What these choices measured
on the 2-D checkerboard is in the repository's ``docs/results.md``.

Classifier-free guidance: with ``num_classes > 0`` the batch carries
``"label"`` (the key every jaxlab adapter reads); each label is replaced by the null label ``num_classes`` with
probability ``label_dropout``, and sampling mixes
``s_null + w·(s_label − s_null)``.

References:
  Frans, Hafner, Levine, Abbeel 2024, "One Step Diffusion via Shortcut
  Models" (arXiv:2410.12557).
  Ho & Salimans 2022, "Classifier-Free Diffusion Guidance" (arXiv:2207.12598).
  Nguyen et al. 2025, "Improved Training Technique for Shortcut Models"
  (arXiv:2510.21250): the OT coupling, and the EMA lag of bootstrap targets.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, Literal

import jax
import jax.numpy as jnp
from jax import Array

from jaxlab.base import ApplyFn, Context, Params
from jaxlab.generative._common import along_batch, check_data, drop_labels, guide
from jaxlab.generative.coupling import minibatch_ot_pairing
from jaxlab.generative.flow import interpolate

Coupling = Literal["independent", "minibatch_ot"]
COUPLINGS = ("independent", "minibatch_ot")


def _check_max_steps(max_steps: Any) -> int:
    if not isinstance(max_steps, int) or isinstance(max_steps, bool) or max_steps < 2 or max_steps & (max_steps - 1):
        raise ValueError(f"max_steps must be a power of two >= 2, got {max_steps!r}")
    return max_steps


def _check_steps(steps: Any, max_steps: int) -> int:
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1 or steps & (steps - 1) or steps > max_steps:
        raise ValueError(f"steps must be a power of two in [1, {max_steps}], got {steps!r}")
    return steps


def _check_coupling(coupling: Any) -> None:
    if coupling not in COUPLINGS:
        raise ValueError(f"coupling must be one of {COUPLINGS}, got {coupling!r}")


def step_condition(d: Array, max_steps: int) -> Array:
    """The network's step-size input for a step of size d: 0 (the flow) for d ≤ 1/M, else d."""
    return jnp.where(d <= 1.0 / max_steps + 1e-9, 0.0, d)


def shortcut_velocity(apply_fn: ApplyFn, params: Params, x: Array, t: Array, d: Array, labels: Array | None, max_steps: int) -> Array:
    """``s(x, t, d)`` with the smallest step mapped to the flow (d = 0); t, d, labels (b,)."""
    cond = step_condition(d, max_steps)
    if labels is None:
        return apply_fn(params, x, t, cond)
    return apply_fn(params, x, t, cond, labels=labels)


def shortcut_targets(
    apply_fn: ApplyFn,
    params: Params,
    x_t: Array,
    t: Array,
    d: Array,
    *,
    labels: Array | None = None,
    max_steps: int = 128,
) -> Array:
    """Self-consistency target of a step of size 2d: the mean normalized jump of two steps of size d.

    Args:
      apply_fn: ``apply_fn(params, x, t, d[, labels=…])``.
      params: the parameters the targets come from (the EMA parameters in training).
      x_t: ``(b, *features)`` points at time t.
      t: (b,) times, t ≥ 2d.
      d: (b,) half step sizes.
      labels: optional (b,) int labels.
      max_steps: M; a step d ≤ 1/M is queried as the flow (d = 0).

    Returns:
      ``(b, *features)`` ``½·[s(x_t, t, d) + s(x_t − d·s(x_t, t, d), t − d, d)]``.
    """
    first = shortcut_velocity(apply_fn, params, x_t, t, d, labels, max_steps)
    x_mid = x_t - along_batch(d, x_t) * first
    second = shortcut_velocity(apply_fn, params, x_mid, t - d, d, labels, max_steps)
    return 0.5 * (first + second)


def bootstrap_step_sizes(key: Array, num: int, *, max_steps: int = 128, large_step_bias: bool = False) -> Array:
    """The trained step sizes 2d = 2^-j of ``num`` self-consistency rows, j ∈ {0, …, log2 M − 1}.

    Args:
      key: typed PRNG key.
      num: number of rows (static).
      max_steps: M (a power of two).
      large_step_bias: draw j with probability ∝ log2 M − j (the one-step level
        log2 M times as often as the smallest) instead of uniformly (the paper).

    Returns:
      (num,) float32 step sizes 2d.
    """
    levels = int(math.log2(_check_max_steps(max_steps)))
    if large_step_bias:
        level = jax.random.categorical(key, jnp.log(jnp.arange(levels, 0, -1.0)), shape=(num,))
    else:
        level = jax.random.randint(key, (num,), 0, levels)
    return 2.0 ** -level.astype(jnp.float32)


def shortcut_loss(
    apply_fn: ApplyFn,
    params: Params,
    target_params: Params,
    x0: Array,
    *,
    key: Array,
    labels: Array | None = None,
    num_classes: int = 0,
    label_dropout: float = 0.1,
    bootstrap_fraction: float = 0.25,
    max_steps: int = 128,
    coupling: Coupling = "independent",
    large_step_bias: bool = False,
) -> tuple[Array, dict[str, Array]]:
    """Flow matching (d = 0) on part of the batch, self-consistency on ``bootstrap_fraction`` of it.

    Args:
      apply_fn: the shortcut network ``s_θ(x, t, d[, labels=…])``.
      params: trained parameters θ.
      target_params: parameters of the bootstrap targets (EMA of θ; not differentiated).
      x0: ``(b, *features)`` data.
      key: typed PRNG key.
      labels: optional (b,) int labels in [0, num_classes).
      num_classes: number of classes; label ``num_classes`` is the null label.
      label_dropout: probability of replacing a label by the null label.
      bootstrap_fraction: share of the batch trained on self-consistency targets.
      max_steps: M, the number of smallest steps (power of two).
      coupling: ``"independent"`` noise per data point (the paper) or
        ``"minibatch_ot"``, the batch's optimal assignment of data to noise.
      large_step_bias: favour large bootstrap steps (see :func:`bootstrap_step_sizes`).

    Returns:
      ``(loss, {"flow_mse", "bootstrap_mse"})``.
    """
    check_data("x0", x0)
    _check_max_steps(max_steps)
    if not 0.0 <= bootstrap_fraction < 1.0:
        raise ValueError(f"bootstrap_fraction must be in [0, 1), got {bootstrap_fraction!r}")
    _check_coupling(coupling)
    if labels is not None and labels.shape != x0.shape[:1]:
        raise ValueError(f"labels must have shape {x0.shape[:1]}, got {labels.shape}")
    b = x0.shape[0]
    nb = round(b * bootstrap_fraction)
    noise_key, time_key, level_key, grid_key, drop_key = jax.random.split(key, 5)
    x1 = jax.random.normal(noise_key, x0.shape, x0.dtype)
    if coupling == "minibatch_ot":
        pairing = minibatch_ot_pairing(x0, x1)  # (b,): x0[pairing[i]] goes with x1[i]
        x0 = x0[pairing]
        labels = None if labels is None else labels[pairing]
    if labels is not None:
        labels = drop_labels(labels, key=drop_key, rate=label_dropout, null_label=num_classes)

    # Bootstrap rows: 2d = 2^-j, j ∈ {0, …, log2 M − 1}; t ∈ {2d, 4d, …, 1}.
    two_d = bootstrap_step_sizes(level_key, nb, max_steps=max_steps, large_step_bias=large_step_bias)  # (nb,)
    multiples = jnp.floor(jax.random.uniform(grid_key, (nb,)) / two_d) + 1.0
    t_boot = jnp.minimum(multiples * two_d, 1.0)
    # Flow rows: t uniform in (0, 1], d = 0.
    t_flow = 1.0 - jax.random.uniform(time_key, (b - nb,))
    t = jnp.concatenate([t_boot, t_flow])  # (b,)
    d_in = jnp.concatenate([two_d, jnp.zeros((b - nb,))])  # (b,) the trained step sizes
    x_t = interpolate(x0, x1, t)

    boot_labels = None if labels is None else labels[:nb]
    boot_target = shortcut_targets(apply_fn, target_params, x_t[:nb], t_boot, 0.5 * two_d, labels=boot_labels, max_steps=max_steps)
    target = jnp.concatenate([jax.lax.stop_gradient(boot_target), (x1 - x0)[nb:]])
    prediction = shortcut_velocity(apply_fn, params, x_t, t, d_in, labels, max_steps)
    if prediction.shape != x0.shape:
        raise ValueError(f"apply_fn must return the shape of x_t {x0.shape}, got {prediction.shape}")
    per_example = jnp.mean(jnp.square(prediction - target).reshape(b, -1), axis=-1)  # (b,)
    metrics = {"flow_mse": jnp.mean(per_example[nb:]), "bootstrap_mse": jnp.mean(per_example[:nb]) if nb else jnp.zeros(())}
    return jnp.mean(per_example), metrics


def sample_shortcut(
    apply_fn: ApplyFn,
    params: Params,
    x1: Array,
    *,
    steps: int,
    max_steps: int = 128,
    labels: Array | None = None,
    null_label: int | None = None,
    guidance_scale: float = 1.0,
) -> Array:
    """``steps`` shortcut steps of size 1/steps from t = 1 (``x1``) to t = 0.

    Args:
      apply_fn, params: the shortcut network.
      x1: ``(b, *features)`` Gaussian noise.
      steps: a power of two in [1, max_steps] (static).
      max_steps: M of training.
      labels: optional (b,) labels; with ``guidance_scale != 1`` also ``null_label``.
      null_label: the null label of classifier-free guidance.
      guidance_scale: w in ``s_null + w·(s_label − s_null)``.

    Returns:
      ``(b, *features)`` samples.
    """
    check_data("x1", x1)
    _check_steps(steps, _check_max_steps(max_steps))
    null_labels: Array | None = None  # set when guiding
    if labels is not None and guidance_scale != 1.0:
        if null_label is None:
            raise ValueError(f"guidance_scale={guidance_scale} needs null_label, got None")
        null_labels = jnp.full_like(labels, null_label)
    num = x1.shape[0]
    d = jnp.full((num,), 1.0 / steps)

    def velocity(x, t):
        s = shortcut_velocity(apply_fn, params, x, t, d, labels, max_steps)
        if null_labels is not None:
            s_null = shortcut_velocity(apply_fn, params, x, t, d, null_labels, max_steps)
            s = guide(s, s_null, guidance_scale)
        return s

    def body(i, x):
        t = jnp.full((num,), 1.0 - i / steps)
        return x - along_batch(d, x) * velocity(x, t)

    return jax.lax.fori_loop(0, steps, body, x1)


@dataclasses.dataclass(frozen=True)
class Shortcut:
    """Shortcut-model adapter on batches ``{"x": (b, *data_shape)[, "label": (b,)]}``.

    Bootstrap targets come from ``ctx.ema_params`` (the trainer's EMA, as in
    the paper) or, with ``bootstrap_target="online"``, from the stop-gradient
    current parameters (better for short runs; see the module docstring).

    Attributes:
      apply_fn: ``apply_fn(params, x, t, d[, labels=…])``, e.g. ``TimeMLP.apply``.
      init_fn: ``init_fn(key, x, t, d[, labels=…])``.
      data_shape: shape of one example.
      bootstrap_fraction: share of each batch on self-consistency targets (paper 1/4, code 1/8).
      max_steps: M, number of smallest steps (a power of two).
      num_classes: 0 for unconditional; else labels in [0, num_classes), null label ``num_classes``.
      label_dropout: classifier-free-guidance label dropout.
      guidance_scale: w at sampling.
      bootstrap_target: ``"ema"`` (``ctx.ema_params``) or ``"online"`` (stop-gradient params).
      coupling: ``"independent"`` (the paper) or ``"minibatch_ot"`` (see the module docstring).
      large_step_bias: draw large bootstrap steps more often (see the module docstring).
    """

    apply_fn: ApplyFn
    init_fn: Callable[..., Params]
    data_shape: tuple[int, ...]
    bootstrap_fraction: float = 0.25
    max_steps: int = 128
    num_classes: int = 0
    label_dropout: float = 0.1
    guidance_scale: float = 1.0
    bootstrap_target: Literal["ema", "online"] = "ema"
    coupling: Coupling = "independent"
    large_step_bias: bool = False

    def __post_init__(self) -> None:
        _check_max_steps(self.max_steps)
        _check_coupling(self.coupling)
        if self.bootstrap_target not in ("ema", "online"):
            raise ValueError(f"bootstrap_target must be 'ema' or 'online', got {self.bootstrap_target!r}")
        if not 0.0 <= self.bootstrap_fraction < 1.0:
            raise ValueError(f"bootstrap_fraction must be in [0, 1), got {self.bootstrap_fraction!r}")
        if not isinstance(self.num_classes, int) or self.num_classes < 0:
            raise ValueError(f"num_classes must be an int >= 0, got {self.num_classes!r}")

    def _labels(self, batch: dict[str, Array]) -> Array | None:
        if self.num_classes == 0:
            return None
        if "label" not in batch:
            raise ValueError(f"num_classes={self.num_classes} needs batch['label'], got keys {sorted(batch)}")
        return batch["label"]

    def init(self, key: Array, batch: dict[str, Array]) -> Params:
        x = batch["x"]
        zeros = jnp.zeros(x.shape[:1])
        labels = self._labels(batch)
        return self.init_fn(key, x, zeros, zeros) if labels is None else self.init_fn(key, x, zeros, zeros, labels=labels)

    def loss(self, params: Params, batch: dict[str, Array], *, key: Array, ctx: Context) -> tuple[Array, dict]:
        return shortcut_loss(
            self.apply_fn, params, ctx.ema_params if self.bootstrap_target == "ema" else params, batch["x"], key=key, labels=self._labels(batch),
            num_classes=self.num_classes, label_dropout=self.label_dropout,
            bootstrap_fraction=self.bootstrap_fraction, max_steps=self.max_steps, coupling=self.coupling,
            large_step_bias=self.large_step_bias,
        )  # fmt: skip

    def sample(self, params: Params, *, key: Array, num: int, steps: int, labels: Array | None = None) -> Array:
        noise_key, label_key = jax.random.split(key)
        x1 = jax.random.normal(noise_key, (num, *self.data_shape))
        if self.num_classes and labels is None:
            labels = jax.random.randint(label_key, (num,), 0, self.num_classes)
        null = self.num_classes if self.num_classes else None
        return sample_shortcut(
            self.apply_fn, params, x1, steps=steps, max_steps=self.max_steps, labels=labels,
            null_label=null, guidance_scale=self.guidance_scale,
        )  # fmt: skip
