"""Gaussian diffusion: the denoising loss, classifier-free guidance and the method adapter.

A diffusion model learns the forward marginal x_t = α_t·x0 + σ_t·ε of a
schedule (:mod:`jaxlab.generative.schedules`; t = 0 data, t = 1 noise) by
regressing one of four equivalent targets: ε, x0, v = α·ε − σ·x0 or the
path velocity u = α'·x0 + σ'·ε. The loss weighting is chosen separately, as
a weight w(λ) on the ε-space error (Kingma & Gao 2023):

* ``"none"``: the plain MSE of whatever the network predicts,
* ``"eps"``: w = 1,   ``"x0"``: w = e^{−λ},   ``"v"``: w = 1 + e^{−λ} (VP),
* ``"min_snr"``: w = min(1, γ·e^{−λ})  (Min-SNR-γ, Hang et al. 2023),
* ``"sigmoid"``: w = sigmoid(b − λ)  (Kingma & Gao 2023).

With the straight path (``schedules.linear_path``), ``prediction="velocity"``
and ``weighting="none"`` the loss is exactly flow matching, so the same
adapter trains class-conditional rectified flows.

Samplers live in :mod:`jaxlab.generative.samplers` and the ODE likelihood in
:mod:`jaxlab.generative.likelihood`; both are re-exported here.

References:
  Ho, Jain, Abbeel 2020, "Denoising Diffusion Probabilistic Models".
  Kingma, Gao 2023, "Understanding Diffusion Objectives as the ELBO with
  Simple Data Augmentation" (weightings as functions of logSNR).
  Hang et al. 2023, "Efficient Diffusion Training via Min-SNR Weighting Strategy".
  Salimans, Ho 2022, "Progressive Distillation" (v-prediction).
  Ho, Salimans 2022, "Classifier-Free Diffusion Guidance".
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import Array

from jaxlab.base import ApplyFn, Context, Params, named_key
from jaxlab.generative import schedules as schedules_lib
from jaxlab.generative._common import classifier_free_guidance, drop_labels
from jaxlab.generative.likelihood import bits_per_dim, ode_log_likelihood
from jaxlab.generative.samplers import sample_ddim, sample_ddpm, sample_pf_ode, uniform_times
from jaxlab.generative.schedules import Prediction, Schedule, check_prediction, coefficients, eps_error_scale, from_x0_eps

WEIGHTINGS = ("none", "eps", "x0", "v", "min_snr", "sigmoid")
SAMPLERS = ("ddpm", "ddim", "euler", "heun")

__all__ = [
    "Diffusion",
    "bits_per_dim",
    "classifier_free_guidance",
    "diffusion_loss",
    "loss_weight",
    "ode_log_likelihood",
    "sample_ddim",
    "sample_ddpm",
    "sample_pf_ode",
    "uniform_times",
]


def loss_weight(weighting: str, logsnr: Array, *, min_snr_gamma: float = 5.0, sigmoid_bias: float = 0.0) -> Array:
    """The ε-space weight w(λ) of a named weighting (see the module docstring)."""
    if weighting == "eps":
        return jnp.ones_like(logsnr)
    if weighting == "x0":
        return jnp.exp(-logsnr)
    if weighting == "v":
        return 1.0 + jnp.exp(-logsnr)
    if weighting == "min_snr":
        return jnp.minimum(1.0, min_snr_gamma * jnp.exp(-logsnr))
    if weighting == "sigmoid":
        return jax.nn.sigmoid(sigmoid_bias - logsnr)
    raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")


def _check_batch(x0: Array) -> None:
    if not hasattr(x0, "ndim") or x0.ndim < 2:
        raise ValueError(f"x0 must have shape (batch, *features), got {getattr(x0, 'shape', type(x0).__name__)}")
    if not jnp.issubdtype(x0.dtype, jnp.floating):
        raise ValueError(f"x0 must be a floating array, got dtype {x0.dtype}")


def diffusion_loss(
    apply_fn: ApplyFn,
    params: Params,
    x0: Array,
    *,
    key: Array,
    schedule: Schedule,
    prediction: Prediction = "eps",
    weighting: str = "none",
    conditions: tuple[Array, ...] = (),
    t_min: float = 0.0,
    t_max: float = 1.0,
    min_snr_gamma: float = 5.0,
    sigmoid_bias: float = 0.0,
) -> tuple[Array, dict[str, Array]]:
    """The weighted denoising loss at t ~ U(t_min, t_max), ε ~ N(0, I).

    Args:
      apply_fn: ``apply_fn(params, x_t, t, *conditions) -> output`` of x_t's shape.
      params: network parameters.
      x0: ``(b, *features)`` clean data.
      key: typed PRNG key (times and noise).
      schedule: ``t -> (α, σ, logSNR)``.
      prediction: the network's target: ``"eps"``, ``"x0"``, ``"v"`` or ``"velocity"``.
      weighting: one of :data:`WEIGHTINGS`.
      conditions: extra per-example inputs of ``apply_fn`` (class labels).
      t_min, t_max: range of training times (keep away from a schedule's
        singular end, e.g. σ(0) = 0 of ``linear_path`` with x0-weighting).
      min_snr_gamma: γ of ``"min_snr"``.
      sigmoid_bias: b of ``"sigmoid"``.

    Returns:
      ``(loss, {"mse": plain MSE of the output})``.
    """
    _check_batch(x0)
    check_prediction(prediction)
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
    t = jax.random.uniform(named_key(key, "time"), x0.shape[:1], jnp.float32, t_min, t_max)  # (b,)
    eps = jax.random.normal(named_key(key, "noise"), x0.shape, x0.dtype)
    c = coefficients(schedule, t, x0.ndim)
    x_t = c.alpha * x0 + c.sigma * eps
    output = apply_fn(params, x_t, t, *conditions)
    if output.shape != x0.shape:
        raise ValueError(f"apply_fn must return the shape of x_t {x0.shape}, got {output.shape}")
    per_example = jnp.mean(jnp.square(output - from_x0_eps(prediction, x0, eps, c)).reshape(x0.shape[0], -1), axis=-1)
    mse = jnp.mean(per_example)
    if weighting == "none":
        return mse, {"mse": mse}
    weight = loss_weight(weighting, schedule(t).logsnr, min_snr_gamma=min_snr_gamma, sigmoid_bias=sigmoid_bias)
    scale = eps_error_scale(prediction, c).reshape(x0.shape[0])
    return jnp.mean(weight * scale * per_example), {"mse": mse}


@dataclasses.dataclass(frozen=True)
class Diffusion:
    """Method adapter: (optionally class-conditional) diffusion or flow on ``{"x": (b, ...)[, "label": (b,)]}``.

    Attributes:
      apply_fn: ``apply_fn(params, x_t, t[, labels]) -> output``.
      init_fn: ``init_fn(key, x, t[, labels]) -> params`` (a Linen module's ``init``).
      data_shape: shape of one example.
      schedule: ``t -> (α, σ, logSNR)``; default the clipped cosine.
      prediction: the network's target.
      weighting: loss weighting (see :func:`diffusion_loss`).
      sampler: default of :meth:`sample`: ``"ddpm"``, ``"ddim"``, ``"euler"`` or ``"heun"``.
      eta: DDIM's η.
      clip_x0: clip x̂0 while sampling (None: no clipping).
      num_classes: number of classes; 0 for an unconditional model. Label
        ``num_classes`` is the "no label" of classifier-free guidance.
      label_dropout: probability of training on the null label.
      guidance_scale: classifier-free guidance scale used by :meth:`sample`.
      t_min, t_max: training and sampling time range.
    """

    apply_fn: ApplyFn
    init_fn: Callable[..., Params]
    data_shape: tuple[int, ...]
    schedule: Schedule = schedules_lib.cosine
    prediction: Prediction = "eps"
    weighting: str = "none"
    sampler: str = "ddim"
    eta: float = 0.0
    clip_x0: float | None = None
    num_classes: int = 0
    label_dropout: float = 0.1
    guidance_scale: float = 1.0
    t_min: float = 0.0
    t_max: float = 1.0

    def __post_init__(self) -> None:
        check_prediction(self.prediction)
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {self.weighting!r}")
        if self.sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {SAMPLERS}, got {self.sampler!r}")
        if not isinstance(self.num_classes, int) or self.num_classes < 0:
            raise ValueError(f"num_classes must be an int >= 0, got {self.num_classes!r}")
        if not 0.0 <= self.label_dropout <= 1.0:
            raise ValueError(f"label_dropout must be in [0, 1], got {self.label_dropout!r}")
        if not 0.0 <= self.t_min < self.t_max <= 1.0:
            raise ValueError(f"need 0 <= t_min < t_max <= 1, got t_min={self.t_min}, t_max={self.t_max}")

    @property
    def conditional(self) -> bool:
        return self.num_classes > 0

    def _conditions(self, batch: dict[str, Array]) -> tuple[Array, ...]:
        return (batch["label"],) if self.conditional else ()

    def init(self, key: Array, batch: dict[str, Array]) -> Params:
        x = batch["x"]
        return self.init_fn(key, x, jnp.zeros(x.shape[:1]), *self._conditions(batch))

    def loss(self, params: Params, batch: dict[str, Array], *, key: Array, ctx: Context) -> tuple[Array, dict]:
        del ctx
        conditions: tuple[Array, ...] = ()
        if self.conditional:
            drop_key = named_key(key, "label_dropout")
            conditions = (drop_labels(batch["label"], key=drop_key, rate=self.label_dropout, null_label=self.num_classes),)
        return diffusion_loss(
            self.apply_fn,
            params,
            batch["x"],
            key=named_key(key, "loss"),
            schedule=self.schedule,
            prediction=self.prediction,
            weighting=self.weighting,
            conditions=conditions,
            t_min=self.t_min,
            t_max=self.t_max,
        )

    def network(self, labels: Array | None = None, guidance_scale: float | None = None) -> ApplyFn:
        """``(params, x, t) -> output`` with the labels (and guidance) closed over."""
        if not self.conditional:
            return self.apply_fn
        if labels is None:
            raise ValueError(f"labels are required: this model is conditional on {self.num_classes} classes")
        scale = self.guidance_scale if guidance_scale is None else guidance_scale
        guided = classifier_free_guidance(self.apply_fn, scale=scale, null_label=self.num_classes)
        return lambda params, x, t: guided(params, x, t, labels)

    def default_labels(self, num: int) -> Array | None:
        """Labels 0, 1, …, C − 1, 0, 1, … for ``num`` samples (None when unconditional)."""
        return jnp.arange(num) % self.num_classes if self.conditional else None

    def sample(
        self,
        params: Params,
        *,
        key: Array,
        num: int,
        steps: int,
        labels: Array | None = None,
        sampler: str | None = None,
        guidance_scale: float | None = None,
    ) -> Array:
        """``num`` samples with ``steps`` sampler steps from σ(t_max)·N(0, I)."""
        sampler = self.sampler if sampler is None else sampler
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
        labels = self.default_labels(num) if labels is None else labels
        network = self.network(labels, guidance_scale)
        noise_key = named_key(key, "sampler")
        times = uniform_times(steps, t_max=self.t_max, t_min=self.t_min)
        x = self.schedule(times[0]).sigma * jax.random.normal(named_key(key, "start"), (num, *self.data_shape))
        common: dict[str, Any] = dict(schedule=self.schedule, times=times, prediction=self.prediction)
        if sampler == "ddpm":
            return sample_ddpm(network, params, x, key=noise_key, clip_x0=self.clip_x0, **common)
        if sampler == "ddim":
            return sample_ddim(network, params, x, key=noise_key, eta=self.eta, clip_x0=self.clip_x0, **common)
        return sample_pf_ode(network, params, x, solver=sampler, **common)

    def log_prob(
        self,
        params: Params,
        x: Array,
        *,
        labels: Array | None = None,
        steps: int = 128,
        trace: str = "exact",
        key: Array | None = None,
    ) -> Array:
        """(b,) log-density in nats through the probability-flow ODE, unguided.

        A conditional model gives ``log p(x | labels)``, or with ``labels=None``
        the unconditional density its null label learned through label dropout.
        """
        if self.conditional and labels is None:
            labels = jnp.full(x.shape[:1], self.num_classes)
        network = self.network(labels, 1.0) if self.conditional else self.apply_fn
        return ode_log_likelihood(
            network,
            params,
            x,
            schedule=self.schedule,
            prediction=self.prediction,
            steps=steps,
            trace=trace,
            key=key,
            t_min=self.t_min,
            t_max=self.t_max,
        )
