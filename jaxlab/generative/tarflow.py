"""TARFLOW: a normalizing flow made of autoregressive transformer blocks.

An example (an image (H, W, C) or a vector (d,)) is cut into a sequence of
patches (b, L, D). K blocks map it to Gaussian noise; block k is the affine
autoregressive map of :mod:`jaxlab.generative.tarflow_sampling` applied in
the identity order (k even) or the reversed order (k odd), so every position
is eventually conditioned on every other. The exact log-likelihood is

    log p(x) = log N(z; 0, I) + Σ_k log|det ∂z_k/∂z_{k−1}|,

with the block log-determinants −Σ a. Training minimizes the negative
log-likelihood per dimension of noise-augmented data: uniform dequantization
over a bin (discrete data) and/or Gaussian noise of std σ. A model trained on
σ-noisy data samples noisy data; the score-based denoising step
``x + σ²·∇ₓ log p(x)`` (Tweedie's formula) removes that noise. A
class-conditional model trained with label dropout supports classifier-free
guidance (see :func:`~jaxlab.generative.tarflow_sampling.guided`).

Direction: the flow's "forward" here is data → noise (likelihood), its
inverse noise → data (sampling); this is not a time-indexed process, so the
t = 0 data / t = 1 noise convention of the library is not involved.

References:
  Zhai et al. 2024, "Normalizing Flows are Capable Generative Models"
  (TARFLOW, arXiv:2412.06329).
  Papamakarios et al. 2017, "Masked Autoregressive Flow for Density Estimation".
  Efron 2011, "Tweedie's Formula and Selection Bias" (the denoising step).
  Ho & Salimans 2022, "Classifier-Free Diffusion Guidance".
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax import Array

from jaxlab.base import Context, named_key
from jaxlab.generative._common import drop_labels
from jaxlab.generative.tarflow_sampling import (
    SAMPLERS,
    ApplyFn,
    Sampler,
    block_forward,
    check_block_params,
    order,
    tarflow_inverse,
)

Params = Any


def patchify(x: Array, patch_size: int) -> Array:
    """Examples -> patch sequence: (b, d) -> (b, d/p, p); (b, H, W, C) -> (b, HW/p², p²C), patches row-major."""
    if x.ndim == 2:
        if x.shape[1] % patch_size:
            raise ValueError(f"patch_size {patch_size} must divide the vector length {x.shape[1]}")
        return x.reshape(x.shape[0], -1, patch_size)
    if x.ndim == 4:
        b, h, w, c = x.shape
        if h % patch_size or w % patch_size:
            raise ValueError(f"patch_size {patch_size} must divide the image size {h}x{w}")
        x = x.reshape(b, h // patch_size, patch_size, w // patch_size, patch_size, c)
        return x.transpose(0, 1, 3, 2, 4, 5).reshape(b, (h // patch_size) * (w // patch_size), patch_size**2 * c)
    raise ValueError(f"x must have shape (batch, d) or (batch, H, W, C), got {x.shape}")


def unpatchify(seq: Array, data_shape: tuple[int, ...], patch_size: int) -> Array:
    """The inverse of :func:`patchify`: (b, L, D) -> ``(b, *data_shape)``."""
    if len(data_shape) == 1:
        return seq.reshape(seq.shape[0], *data_shape)
    h, w, c = data_shape
    b = seq.shape[0]
    x = seq.reshape(b, h // patch_size, w // patch_size, patch_size, patch_size, c)
    return x.transpose(0, 1, 3, 2, 4, 5).reshape(b, h, w, c)


def tarflow_forward(apply_fn: ApplyFn, block_params: Sequence[Params], x: Array, labels: Array | None = None) -> tuple[Array, Array]:
    """Data-to-noise map of the block stack.

    Args:
      apply_fn: the causal network, ``(params, u (b, L, D), labels) -> (b, L, 2D)``.
      block_params: a list or tuple of the parameters of blocks 0..K−1.
      x: (b, L, D) patch sequence.
      labels: (b,) int labels or None.

    Returns:
      ``(z, log_det)``: z (b, L, D) and the summed log-determinant (b,), both
      float32 whatever the network's compute dtype (its outputs are cast to
      float32 before the log-scales are summed).

    Raises:
      TypeError: if ``block_params`` is not a list or tuple (e.g. one dict).
      ValueError: if x is not (b, L, D) or ``block_params`` is empty.
    """
    check_block_params(block_params)
    if x.ndim != 3:
        raise ValueError(f"x must have shape (batch, length, features), got {x.shape}")
    # log-dets are sums over L·D log-scales: a 16-bit compute dtype must not reach them, so the
    # network's outputs are cast to float32 before block_forward sums them.
    net = lambda p, u, y: jnp.asarray(apply_fn(p, u, y), jnp.float32)
    x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    log_det = jnp.zeros(x.shape[:1], jnp.float32)
    for k, params in enumerate(block_params):
        z, block_log_det = block_forward(net, params, order(x, flip=k % 2 == 1), labels)
        x, log_det = order(z, flip=k % 2 == 1), log_det + block_log_det.astype(jnp.float32)
    return x, log_det


def tarflow_log_prob(apply_fn: ApplyFn, block_params: Sequence[Params], x: Array, labels: Array | None = None) -> Array:
    """Exact ``log p(x)`` in nats (b,) of a patch sequence x (b, L, D) under a standard normal prior."""
    z, log_det = tarflow_forward(apply_fn, block_params, x, labels)
    dims = z.shape[1] * z.shape[2]
    return -0.5 * jnp.sum(jnp.square(z), axis=(1, 2)) - 0.5 * dims * math.log(2 * math.pi) + log_det


def tarflow_denoise(apply_fn: ApplyFn, block_params: Sequence[Params], x: Array, labels: Array | None = None, *, noise_std: float) -> Array:
    """One score step ``x + σ²·∇ₓ log p(x)`` (b, L, D): the posterior mean of clean data under N(0, σ²) noise."""
    score = jax.grad(lambda y: jnp.sum(tarflow_log_prob(apply_fn, block_params, y, labels)))(x)
    return x + noise_std**2 * score


def _check_positive_int(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


@dataclasses.dataclass(frozen=True)
class TarFlow:
    """Method adapter: TARFLOW on batches ``{"x": (b, *data_shape)[, "label": (b,)]}``.

    Attributes:
      apply_fn: the causal network of one block (a
        :class:`~jaxlab.nn.CausalTransformer`'s ``apply``, or any function with
        its call protocol); every block has its own parameters.
      init_fn: ``init_fn(key, u, labels) -> params`` for one block.
      data_shape: one example: ``(d,)`` or ``(H, W, C)``.
      patch_size: vector chunk / square image patch size.
      num_blocks: K, the number of flow blocks.
      noise_std: σ of the Gaussian noise augmentation (0 = none).
      dequantize_width: width of the uniform dequantization bin around each
        value (0 for continuous data).
      num_classes: 0 for an unconditional model, else labels 0..num_classes−1.
      label_dropout: probability of training an example with the null label.
      guidance: default classifier-free guidance weight for :meth:`sample`.
      denoise: whether :meth:`sample` applies the score-based denoising step.
      sampler: default inverse for :meth:`sample` (see ``tarflow_sampling``):
        ``"auto"`` uses the KV cache when ``apply_fn`` supports it and the
        uncached exact inverse otherwise.
      jacobi_tol: tolerance of the Jacobi samplers.
      segments: Gauss–Seidel segments of ``"gs_jacobi"``.
    """

    apply_fn: ApplyFn
    init_fn: Callable[..., Params]
    data_shape: tuple[int, ...]
    patch_size: int = 1
    num_blocks: int = 4
    noise_std: float = 0.0
    dequantize_width: float = 0.0
    num_classes: int = 0
    label_dropout: float = 0.1
    guidance: float = 0.0
    denoise: bool = False
    sampler: Sampler = "auto"
    jacobi_tol: float = 1e-5
    segments: int = 4

    def __post_init__(self) -> None:
        if len(self.data_shape) not in (1, 3):
            raise ValueError(f"data_shape must be (d,) or (H, W, C), got {self.data_shape}")
        _check_positive_int("patch_size", self.patch_size)
        _check_positive_int("num_blocks", self.num_blocks)
        if any(side % self.patch_size for side in self.data_shape[: 2 if len(self.data_shape) == 3 else 1]):
            raise ValueError(f"patch_size {self.patch_size} must divide data_shape {self.data_shape}")
        if self.noise_std < 0 or self.dequantize_width < 0:
            raise ValueError(f"noise_std and dequantize_width must be >= 0, got {self.noise_std}, {self.dequantize_width}")
        if not 0.0 <= self.label_dropout < 1.0:
            raise ValueError(f"label_dropout must be in [0, 1), got {self.label_dropout}")
        if self.sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {SAMPLERS}, got {self.sampler!r}")
        if self.denoise and self.noise_std == 0:
            raise ValueError("denoise=True needs noise_std > 0 (the step is x + noise_std² · score)")

    # -- shapes -------------------------------------------------------------------------------
    @property
    def sequence_shape(self) -> tuple[int, int]:
        """(L, D) of the patch sequence."""
        if len(self.data_shape) == 1:
            return self.data_shape[0] // self.patch_size, self.patch_size
        h, w, c = self.data_shape
        return (h // self.patch_size) * (w // self.patch_size), self.patch_size**2 * c

    def _check_x(self, x: Array) -> None:
        if tuple(x.shape[1:]) != tuple(self.data_shape) or x.ndim != len(self.data_shape) + 1:
            raise ValueError(f"x must have shape (batch, {', '.join(map(str, self.data_shape))}), got {x.shape}")
        if not jnp.issubdtype(x.dtype, jnp.floating):
            raise ValueError(f"x must be a floating array, got dtype {x.dtype}")

    def _labels(self, batch_or_labels: Any, batch_size: int) -> Array | None:
        labels = batch_or_labels.get("label") if isinstance(batch_or_labels, dict) else batch_or_labels
        if not self.num_classes:
            return None
        if labels is None:
            raise ValueError(f"a class-conditional TarFlow (num_classes={self.num_classes}) needs labels of shape ({batch_size},)")
        if labels.shape != (batch_size,) or not jnp.issubdtype(labels.dtype, jnp.integer):
            raise ValueError(f"labels must be an int array of shape ({batch_size},), got {labels.shape} {labels.dtype}")
        return labels

    def _blocks(self, params: Params) -> list[Params]:
        return [params[f"block_{k}"] for k in range(self.num_blocks)]

    # -- the trainer's interface ----------------------------------------------------------------
    def init(self, key: Array, batch: dict[str, Array]) -> Params:
        x = jnp.asarray(batch["x"])
        self._check_x(x)
        labels = self._labels(batch, x.shape[0])
        seq = patchify(x, self.patch_size)
        return {f"block_{k}": self.init_fn(named_key(key, f"block_{k}"), seq, labels) for k in range(self.num_blocks)}

    def noisy(self, x: Array, *, key: Array) -> Array:
        """Training input: ``x + w·(U − ½) + σ·ε`` (uniform dequantization, Gaussian augmentation)."""
        x = x + self.dequantize_width * (jax.random.uniform(named_key(key, "dequantize"), x.shape, x.dtype) - 0.5)
        return x + self.noise_std * jax.random.normal(named_key(key, "augment"), x.shape, x.dtype)

    def loss(self, params: Params, batch: dict[str, Array], *, key: Array, ctx: Context) -> tuple[Array, dict]:
        """Negative log-likelihood per dimension (nats) of the noise-augmented batch."""
        del ctx
        x = batch["x"]
        self._check_x(x)
        labels = self._labels(batch, x.shape[0])
        if labels is not None and self.label_dropout > 0:
            labels = drop_labels(labels, key=named_key(key, "label_dropout"), rate=self.label_dropout, null_label=self.num_classes)
        seq = patchify(self.noisy(x, key=key), self.patch_size)
        z, log_det = tarflow_forward(self.apply_fn, self._blocks(params), seq, labels)
        dims = math.prod(self.data_shape)
        prior = 0.5 * jnp.sum(jnp.square(z), axis=(1, 2)) + 0.5 * dims * math.log(2 * math.pi)
        nll = jnp.mean(prior - log_det) / dims
        return nll, {"nll_per_dim": nll, "log_det_per_dim": jnp.mean(log_det) / dims}

    def log_prob(self, params: Params, x: Array, labels: Array | None = None) -> Array:
        """Exact ``log p(x | label)`` in nats (b,) of examples x ``(b, *data_shape)`` (null label if None)."""
        self._check_x(x)
        if labels is not None:
            labels = self._labels(labels, x.shape[0])
        return tarflow_log_prob(self.apply_fn, self._blocks(params), patchify(x, self.patch_size), labels)

    def sample_labels(
        self,
        params: Params,
        *,
        key: Array,
        labels: Array | None,
        num: int,
        guidance: float | Array | None = None,
        denoise: bool | None = None,
        sampler: Sampler | None = None,
    ) -> tuple[Array, Array]:
        """Samples ``(num, *data_shape)`` for given labels, and the network passes per block (K,).

        ``guidance``, ``denoise`` and ``sampler`` default to the adapter's fields.
        """
        guidance = self.guidance if guidance is None else guidance
        denoise = self.denoise if denoise is None else denoise
        if labels is not None:
            labels = self._labels(labels, num)
        z = jax.random.normal(key, (num, *self.sequence_shape))
        seq, passes = tarflow_inverse(
            self.apply_fn, self._blocks(params), z, labels, sampler=sampler or self.sampler, guidance=guidance,
            tol=self.jacobi_tol, segments=self.segments,
        )  # fmt: skip
        x = unpatchify(seq, self.data_shape, self.patch_size)
        return (self.denoised(params, x, labels) if denoise else x), passes

    def denoised(self, params: Params, x: Array, labels: Array | None = None) -> Array:
        """The score-based denoising step ``x + σ²·∇ₓ log p(x | label)``, σ = ``noise_std``; x ``(b, *data_shape)``."""
        self._check_x(x)
        if self.noise_std == 0:
            raise ValueError("denoising needs noise_std > 0 (the step is x + noise_std² · score)")
        if labels is not None:
            labels = self._labels(labels, x.shape[0])
        seq = patchify(x, self.patch_size)
        seq = tarflow_denoise(self.apply_fn, self._blocks(params), seq, labels, noise_std=self.noise_std)
        return unpatchify(seq, self.data_shape, self.patch_size)

    def sample(self, params: Params, *, key: Array, num: int, steps: int | None = None) -> Array:
        """``num`` samples; a class-conditional model cycles the labels 0, 1, …; ``steps`` is unused (exact inverse)."""
        del steps
        labels = jnp.arange(num, dtype=jnp.int32) % self.num_classes if self.num_classes else None
        return self.sample_labels(params, key=key, labels=labels, num=num)[0]
