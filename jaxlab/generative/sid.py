"""Score identity Distillation (SiD): a flow-matching teacher distilled into a one-step generator.

SiD trains a generator ``x_g = G_θ(z)`` so that the diffused generator
distribution matches the teacher's diffused data distribution. It alternates

* a **fake-score** update: a network ψ (initialized from the teacher) learns
  the denoiser of the current generator distribution (here: the flow-matching
  loss on stop-gradient generator samples, the loss the teacher was trained
  with; the authors use EDM's weighted loss with lognormal σ, which with
  their σ grid for the generator's times gave worse one-step samples on the
  2-D checkerboard — see the repository's ``docs/results.md``), and
* a **generator** update with the score-identity loss (Zhou et al. 2024, the
  final loss with α, as in the authors' reference implementation), per example

      L_θ = [ (f_φ − f_ψ) · ((f_φ − x_g) − α (f_φ − f_ψ)) ] / w,
          = [ (1 − α) ‖f_φ − f_ψ‖² + (f_φ − f_ψ) · (f_ψ − x_g) ] / w,

  where ``f_φ`` / ``f_ψ`` are the teacher's / fake network's x0-predictions at
  ``x_t`` (gradients flow through ``x_t`` and ``x_g``, never into φ or ψ) and
  ``w = mean |x_g − f_φ|`` (stop-gradient) is the paper's data-free weighting
  standing in for ω(t)/σ_t⁴ (``weighting="batch"`` uses one batch-wide w:
  in one or two dimensions a per-example w, which depends on x_g, can bias
  the expected gradient of the generator's scale). α = 1.2 is the paper's default; α = 0.5 and
  α = 1 are the cases the Flow Generator Matching analysis singles out.

Convention (DESIGN.md): t = 0 is data, t = 1 noise, ``x_t = (1 − t)·x0 + t·ε``.
The teacher and fake networks are *velocity* networks ``v(x_t, t) ≈ ε − x0``
(jaxlab's :class:`~jaxlab.generative.flow.RectifiedFlow`); on this path the
x0-prediction is ``x0_hat = x_t − t·v`` (the score is
``−(x_t − (1 − t)·x0_hat)/t²``). SiD's EDM noise level σ corresponds to
``t/(1 − t)``. The generator reuses the same network with a fixed time
``t_g``: ``G(z) = t_g·z − t_g·v_θ(t_g·z, t_g)`` (the teacher's one-step
x0-prediction from pure noise scaled to time ``t_g``), so at initialization it
is the teacher's own one-step guess, as in the paper (which feeds
``σ_init·z`` with σ_init = 2.5, i.e. t_g = 2.5/3.5 ≈ 0.714, the default).

References:
  Zhou, Zheng, Wang, Yin, Huang 2024, "Score identity Distillation: Exponentially
  Fast Distillation of Pretrained Diffusion Models for One-Step Generation"
  (arXiv:2404.04057).
  Huang et al. 2024, "Flow Generator Matching" (arXiv:2410.19310) — the α = 0.5 / 1 cases.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Literal

import jax
import jax.numpy as jnp
import optax
from jax import Array

from jaxlab.base import ApplyFn, Context, Params
from jaxlab.generative.flow import flow_matching_loss, interpolate

Weighting = Literal["example", "batch", "none"]


def _bt(t: Array, x: Array) -> Array:
    """(b,) -> (b, 1, ..., 1)."""
    return t.reshape(t.shape + (1,) * (x.ndim - 1))


def velocity_to_x0(x_t: Array, t: Array, velocity: Array) -> Array:
    """x0-prediction on the straight path: ``x0_hat = x_t − t·v``; x_t, v: ``(b, *f)``, t: (b,)."""
    return x_t - _bt(t, x_t) * velocity


def generate(apply_fn: ApplyFn, params: Params, z: Array, *, generator_time: float = 1.0) -> Array:
    """One-step generator ``G(z) = t_g·z − t_g·v(t_g·z, t_g)``; z: ``(b, *f)`` -> ``(b, *f)``."""
    t = jnp.full(z.shape[:1], generator_time, z.dtype)
    x_in = generator_time * z
    return velocity_to_x0(x_in, t, apply_fn(params, x_in, t))


def sid_generator_loss_terms(
    apply_fn: ApplyFn,
    teacher_params: Params,
    fake_params: Params,
    x_g: Array,
    noise: Array,
    t: Array,
    *,
    alpha: float = 1.2,
    weighting: Weighting = "example",
) -> tuple[Array, dict[str, Array]]:
    """The SiD generator loss at given generator samples, noise and times (deterministic).

    Gradients flow through ``x_g`` (and hence ``x_t``) only; the teacher and
    fake parameters are wrapped in ``stop_gradient``.

    Args:
      apply_fn: the velocity network shared by the teacher and the fake score.
      teacher_params: the teacher's parameters φ.
      fake_params: the fake-score network's parameters ψ.
      x_g: ``(b, *f)`` generator samples (differentiable).
      noise: ``(b, *f)`` Gaussian noise ε.
      t: (b,) diffusion times in (0, 1).
      alpha: the SiD α (1.2 in the paper).
      weighting: ``"example"`` — w = mean |x_g − f_φ| per example (the paper's
        choice, meant for high-dimensional images); ``"batch"`` — the same mean
        over the whole batch (one constant, so it does not reweight examples,
        which in 1–2 dimensions biases the gradient towards the far tails);
        ``"none"`` — w = 1.

    Returns:
      ``(loss, aux)``: the batch mean of the per-example loss and its two terms
      ``"sid_fisher"`` = mean ‖f_φ − f_ψ‖²/w and ``"sid_cross"`` =
      mean (f_φ − f_ψ)·(f_ψ − x_g)/w (loss = (1 − α)·fisher + cross).
    """
    if noise.shape != x_g.shape:
        raise ValueError(f"noise must have the shape of x_g {x_g.shape}, got {noise.shape}")
    if t.shape != x_g.shape[:1]:
        raise ValueError(f"t must have shape {x_g.shape[:1]} (one time per example), got {t.shape}")
    teacher_params = jax.lax.stop_gradient(teacher_params)
    fake_params = jax.lax.stop_gradient(fake_params)
    x_t = interpolate(x_g, noise, t)  # (b, *f)
    real = velocity_to_x0(x_t, t, apply_fn(teacher_params, x_t, t))
    fake = velocity_to_x0(x_t, t, apply_fn(fake_params, x_t, t))
    axes = tuple(range(1, x_g.ndim))
    distance = jnp.abs(x_g - real)
    if weighting == "example":
        weight = jnp.mean(distance, axis=axes)  # (b,)
    elif weighting == "batch":
        weight = jnp.full(x_g.shape[:1], jnp.mean(distance))
    elif weighting == "none":
        weight = jnp.ones(x_g.shape[:1], x_g.dtype)
    else:
        raise ValueError(f"weighting must be 'example', 'batch' or 'none', got {weighting!r}")
    weight = jax.lax.stop_gradient(jnp.maximum(weight, 1e-5))
    gap = real - fake
    fisher = jnp.sum(jnp.square(gap), axis=axes) / weight  # (b,)
    cross = jnp.sum(gap * (fake - x_g), axis=axes) / weight  # (b,)
    loss = jnp.mean((1.0 - alpha) * fisher + cross)
    return loss, {"sid_fisher": jnp.mean(fisher), "sid_cross": jnp.mean(cross)}


def sample_sid_time(key: Array, num: int, t_min: float, t_max: float) -> Array:
    """Times ~ U(t_min, t_max), shape (num,)."""
    return jax.random.uniform(key, (num,), minval=t_min, maxval=t_max)


def sid_generator_loss(
    apply_fn: ApplyFn,
    generator_params: Params,
    teacher_params: Params,
    fake_params: Params,
    z: Array,
    *,
    key: Array,
    alpha: float = 1.2,
    generator_time: float = 1.0,
    t_min: float = 0.02,
    t_max: float = 0.98,
    weighting: Weighting = "example",
) -> tuple[Array, dict[str, Array]]:
    """SiD generator loss of ``G(z)`` with fresh noise and times drawn from ``key``; z: ``(b, *f)``."""
    noise_key, time_key = jax.random.split(key)
    x_g = generate(apply_fn, generator_params, z, generator_time=generator_time)
    noise = jax.random.normal(noise_key, x_g.shape, x_g.dtype)
    t = sample_sid_time(time_key, x_g.shape[0], t_min, t_max)
    return sid_generator_loss_terms(apply_fn, teacher_params, fake_params, x_g, noise, t, alpha=alpha, weighting=weighting)


def sid_fake_score_loss(apply_fn: ApplyFn, fake_params: Params, x_g: Array, *, key: Array) -> tuple[Array, dict[str, Array]]:
    """Flow-matching loss of the fake network on stop-gradient generator samples x_g: ``(b, *f)``."""
    loss, _ = flow_matching_loss(apply_fn, fake_params, jax.lax.stop_gradient(x_g), key=key)
    return loss, {"fake_loss": loss}


@dataclasses.dataclass(frozen=True)
class SiD:
    """Method adapter: SiD with alternating fake-score / generator updates (two Adam optimizers).

    Params are ``{"generator": …, "fake": …}``, both initialized from the
    teacher, which :meth:`init` takes as ``frozen`` (the trainer passes its
    ``frozen`` tree, as an argument of the jitted init, never a constant);
    the teacher arrives in ``ctx.frozen`` at every step too. Batches only set the batch size (``{"x": (b, *data_shape)}``).

    Attributes:
      apply_fn: velocity network ``apply_fn(params, x_t, t)`` (teacher, fake and generator).
      init_fn: ``init_fn(key, x, t) -> params``, used when :meth:`init` gets no teacher.
      data_shape: shape of one example.
      alpha: SiD's α.
      generator_time: the fixed time ``t_g`` the generator uses; 0.714 is the
        paper's σ_init = 2.5 on the straight path (t = σ/(1 + σ)). With
        ``t_g = 1`` the teacher-initialized generator starts collapsed at
        the data mean; on the 2-D checkerboard 0.714 trained to a closer
        histogram in the same number of steps.
      t_min, t_max: range of the uniform diffusion times of the generator loss
        (the authors draw σ on EDM's ρ = 7 grid, uniformly over its first 80%
        from σ = 0.002, i.e. σ ≤ 24.4; on the 2-D checkerboard uniform t did
        as well).
      generator_lr, fake_lr: Adam learning rates (β1 = 0, β2 = 0.999 as in the paper).
      fake_steps: fake-score updates per generator update.
      grad_clip: global-norm clip of both networks' gradients.
      weighting: the per-example normalizer of the generator loss (see
        :func:`sid_generator_loss_terms`).
    """

    apply_fn: ApplyFn
    init_fn: Callable[..., Params]
    data_shape: tuple[int, ...]
    alpha: float = 1.2
    generator_time: float = 0.714
    t_min: float = 0.02
    t_max: float = 0.98
    generator_lr: float = 1e-4
    fake_lr: float = 1e-4
    fake_steps: int = 1
    grad_clip: float = 1.0
    weighting: Weighting = "example"

    def __post_init__(self) -> None:
        if not 0.0 <= self.t_min < self.t_max <= 1.0:
            raise ValueError(f"t_min, t_max must satisfy 0 <= t_min < t_max <= 1, got {self.t_min}, {self.t_max}")
        if not 0.0 < self.generator_time <= 1.0:
            raise ValueError(f"generator_time must be in (0, 1], got {self.generator_time}")
        if not isinstance(self.fake_steps, int) or self.fake_steps < 1:
            raise ValueError(f"fake_steps must be a positive int, got {self.fake_steps!r}")

    def optimizers(self) -> tuple[optax.GradientTransformation, optax.GradientTransformation]:
        def adam(rate):
            return optax.chain(optax.clip_by_global_norm(self.grad_clip), optax.adam(rate, b1=0.0, b2=0.999))

        return adam(self.generator_lr), adam(self.fake_lr)

    def init(self, key: Array, batch: dict[str, Array], *, frozen: Params | None = None) -> Params:
        """Generator and fake score as copies of the teacher ``frozen`` (fresh ``init_fn`` networks without one)."""
        if frozen is not None:
            return {"generator": jax.tree.map(jnp.asarray, frozen), "fake": jax.tree.map(jnp.asarray, frozen)}
        x = batch["x"]
        gen_key, fake_key = jax.random.split(key)
        t = jnp.zeros(x.shape[:1])
        return {"generator": self.init_fn(gen_key, x, t), "fake": self.init_fn(fake_key, x, t)}

    def init_opt_state(self, params: Params) -> dict[str, Any]:
        opt_g, opt_f = self.optimizers()
        return {"generator": opt_g.init(params["generator"]), "fake": opt_f.init(params["fake"])}

    def _teacher(self, ctx: Context) -> Params:
        if ctx.frozen is None:
            raise ValueError("SiD needs the teacher's parameters in ctx.frozen (train(..., frozen=teacher_params)), got None")
        return ctx.frozen

    def _draw_z(self, key: Array, batch: dict[str, Array]) -> Array:
        return jax.random.normal(key, (batch["x"].shape[0], *self.data_shape))

    def loss(self, params: Params, batch: dict[str, Array], *, key: Array, ctx: Context) -> tuple[Array, dict]:
        """Generator loss (the training objective of θ) with the fake-score loss in ``aux``."""
        teacher = self._teacher(ctx)
        z_key, gen_key, fake_key = jax.random.split(key, 3)
        z = self._draw_z(z_key, batch)
        loss, aux = sid_generator_loss(
            self.apply_fn, params["generator"], teacher, params["fake"], z, key=gen_key, alpha=self.alpha,
            generator_time=self.generator_time, t_min=self.t_min, t_max=self.t_max, weighting=self.weighting,
        )  # fmt: skip
        x_g = generate(self.apply_fn, params["generator"], z, generator_time=self.generator_time)
        fake_loss, _ = sid_fake_score_loss(self.apply_fn, params["fake"], x_g, key=fake_key)
        return loss, {**aux, "fake_loss": fake_loss}

    def train_step(self, params: Params, opt_state: Any, batch: dict[str, Array], *, key: Array, ctx: Context) -> tuple[Params, Any, dict]:
        """``fake_steps`` fake-score updates on fresh generator samples, then one generator update."""
        teacher = self._teacher(ctx)
        opt_g, opt_f = self.optimizers()
        params, opt_state = dict(params), dict(opt_state)
        keys = jax.random.split(key, 2 * self.fake_steps + 2)
        fake_loss = jnp.zeros(())
        for i in range(self.fake_steps):
            z = self._draw_z(keys[2 * i], batch)
            x_g = generate(self.apply_fn, params["generator"], z, generator_time=self.generator_time)

            def fake_objective(fake, x_g=x_g, k=keys[2 * i + 1]):
                return sid_fake_score_loss(self.apply_fn, fake, x_g, key=k)

            (fake_loss, _), grads = jax.value_and_grad(fake_objective, has_aux=True)(params["fake"])
            updates, opt_state["fake"] = opt_f.update(grads, opt_state["fake"], params["fake"])
            params["fake"] = optax.apply_updates(params["fake"], updates)

        z = self._draw_z(keys[-2], batch)

        def generator_objective(generator):
            return sid_generator_loss(
                self.apply_fn, generator, teacher, params["fake"], z, key=keys[-1], alpha=self.alpha,
                generator_time=self.generator_time, t_min=self.t_min, t_max=self.t_max, weighting=self.weighting,
            )  # fmt: skip

        (loss, aux), grads = jax.value_and_grad(generator_objective, has_aux=True)(params["generator"])
        updates, opt_state["generator"] = opt_g.update(grads, opt_state["generator"], params["generator"])
        params["generator"] = optax.apply_updates(params["generator"], updates)
        metrics = {"loss": loss, **aux, "fake_loss": fake_loss, "generator_grad_norm": optax.tree.norm(grads)}
        return params, opt_state, metrics

    def sample(self, params: Params, *, key: Array, num: int, steps: int = 1) -> Array:
        """One-step samples ``G(z)``: ``(num, *data_shape)``. Only ``steps == 1`` exists."""
        if steps != 1:
            raise ValueError(f"SiD is a one-step generator: steps must be 1, got {steps!r}")
        z = jax.random.normal(key, (num, *self.data_shape))
        return generate(self.apply_fn, params["generator"], z, generator_time=self.generator_time)
