"""The Diffusion Transformer (DiT): a ViT over image patches with adaLN-Zero conditioning.

The image (b, H, W, C) is cut into p×p patches, each linearly embedded (a
p×p convolution of stride p), plus a fixed 2-D sin-cos position embedding;
``depth`` transformer blocks with full attention follow, each modulated by
the condition ``c``: affine-free LayerNorm, ``x·(1 + scale) + shift``, and
the residual branch times a ``gate``, all six from one zero-initialised
Dense of ``silu(c)`` (adaLN-Zero), so every block starts as the identity.
The final layer (modulated LayerNorm, zero-initialised projection to
p·p·C_out) makes the untrained network output exactly 0; its tokens are
folded back into an image (b, H, W, C_out).

``c`` sums an MLP of the sinusoidal features of t, one of a second time
(``second_time``: the step size d of shortcut models, MeanFlow's r) and a
label embedding whose extra index ``num_classes`` is the null label of
classifier-free guidance. Label dropout is the caller's job
(:class:`~jaxlab.generative.Diffusion` swaps in the null label at
``label_dropout``), so the network is deterministic.

Calling convention — the inputs after ``t`` are positional in the order
``d`` (if ``second_time``) then ``labels`` (if ``num_classes``), or
``labels`` by keyword, so a DiT drops in for the U-Net
(``apply(params, x, t, labels)``) and for the shortcut networks
(``apply(params, x, t, d, labels=labels)``)::

    net = DiT(dit_config("S/2", in_channels=1, num_classes=10))
    params = net.init(key, x, t, labels)
    out = net.apply(params, x, t, labels)          # (b, H, W, C) float32

References:
  Peebles, Xie 2023, "Scalable Diffusion Models with Transformers" (arXiv:2212.09748).
  Dosovitskiy et al. 2021, "An Image is Worth 16x16 Words" (arXiv:2010.11929) — patches.
  Frans, Hafner, Levine, Abbeel 2024, "One Step Diffusion via Shortcut Models"
  (arXiv:2410.12557) — the step size d embedded like t.
  Geng et al. 2025, "Mean Flows for One-step Generative Modeling" (arXiv:2505.13447).
  Ho, Salimans 2022, "Classifier-Free Diffusion Guidance" (the null label).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import Array

from jaxlab.nn.embeddings import sinusoidal_embedding
from jaxlab.nn.precision import dtype_name
from jaxlab.nn.sharding import BATCH, EMBED, HEADS, LENGTH, MLP, constrain

ACTIVATION = (BATCH, LENGTH, EMBED)  # (b, L, D): tokens at block boundaries
VECTOR = (BATCH, EMBED)  # (b, D): the condition
SIZES = {"S": (12, 384, 6), "B": (12, 768, 12), "L": (24, 1024, 16), "XL": (28, 1152, 16)}  # depth, hidden, heads (Table 1)
PATCH_SIZES = (2, 4, 8)
POS_EMBEDS = ("sincos", "learned", "none")
ATTENTION_IMPLS = (None, "xla", "cudnn")
_SIZE_FIELDS = ("depth", "hidden_size", "num_heads", "patch_size")


@dataclasses.dataclass(frozen=True)
class DiTConfig:
    """DiT hyperparameters (static, hashable). :func:`dit_config` gives the paper's named sizes.

    Attributes:
      depth: number of transformer blocks.
      hidden_size: token width D.
      num_heads: attention heads (D / num_heads per head).
      patch_size: p; image height and width must be divisible by it.
      in_channels: C of the input images.
      out_channels: C_out of the output (None: ``in_channels``).
      mlp_ratio: MLP hidden width / D.
      num_classes: number of class labels (None: unconditional); the
        embedding has ``num_classes + 1`` rows, the last the null label.
      second_time: take a second time input (d or r), embedded by its own MLP.
      pos_embed: "sincos" (fixed, the paper's, any grid size), "learned"
        (one grid size, the one ``init`` sees) or "none".
      time_features: size of the sinusoidal features of each time input.
      norm_eps: LayerNorm epsilon.
      dtype: compute dtype (float32, bfloat16 or float16); time embeddings,
        LayerNorm statistics, softmax and the output stay float32.
      param_dtype: parameter dtype.
      remat: recompute each block in the backward pass (``nn.remat``).
      scan: run the blocks with ``nn.scan``; parameters stacked on a leading
        axis of size ``depth`` under ``blocks`` (see :func:`stack_blocks`).
      attention_impl: ``implementation`` of ``jax.nn.dot_product_attention``:
        None (XLA in this JAX version), "xla", or "cudnn" (fused flash
        attention on NVIDIA GPUs; needs a 16-bit ``dtype``).
    """

    depth: int = 12
    hidden_size: int = 384
    num_heads: int = 6
    patch_size: int = 2
    in_channels: int = 4
    out_channels: int | None = None
    mlp_ratio: float = 4.0
    num_classes: int | None = None
    second_time: bool = False
    pos_embed: Literal["sincos", "learned", "none"] = "sincos"
    time_features: int = 256
    norm_eps: float = 1e-6
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    remat: bool = False
    scan: bool = False
    attention_impl: Literal["xla", "cudnn"] | None = None

    def __post_init__(self) -> None:
        for name in ("depth", "hidden_size", "num_heads", "patch_size", "in_channels", "time_features"):
            _check_positive_int(name, getattr(self, name))
        for name in ("out_channels", "num_classes"):
            if getattr(self, name) is not None:
                _check_positive_int(name, getattr(self, name))
        if self.hidden_size % self.num_heads:
            raise ValueError(f"`hidden_size` must be divisible by num_heads = {self.num_heads}; got {self.hidden_size}.")
        if self.pos_embed not in POS_EMBEDS:
            raise ValueError(f"`pos_embed` must be one of {POS_EMBEDS}; got {self.pos_embed!r}.")
        if self.pos_embed == "sincos" and self.hidden_size % 4:
            raise ValueError(f"`hidden_size` must be divisible by 4 for the 2-D sin-cos embedding; got {self.hidden_size}.")
        if self.time_features % 2:
            raise ValueError(f"`time_features` must be even; got {self.time_features}.")
        if not self.mlp_ratio > 0 or int(self.hidden_size * self.mlp_ratio) < 1:
            raise ValueError(f"`mlp_ratio` must give a positive MLP width; got {self.mlp_ratio!r}.")
        dtype = dtype_name("dtype", self.dtype)
        dtype_name("param_dtype", self.param_dtype)
        if self.attention_impl not in ATTENTION_IMPLS:
            raise ValueError(f"`attention_impl` must be one of {ATTENTION_IMPLS}; got {self.attention_impl!r}.")
        if self.attention_impl == "cudnn" and dtype == "float32":
            raise ValueError("`attention_impl` 'cudnn' needs dtype bfloat16 or float16; got float32.")

    @property
    def output_channels(self) -> int:
        """C_out: ``out_channels``, or ``in_channels`` when that is None."""
        return self.in_channels if self.out_channels is None else self.out_channels


def _check_positive_int(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"`{name}` must be a positive int; got {value!r}.")


def dit_names() -> tuple[str, ...]:
    """The paper's model names: "S/2", "S/4", …, "XL/8"."""
    return tuple(f"{size}/{patch}" for size in SIZES for patch in PATCH_SIZES)


def dit_config(name: str, **overrides: Any) -> DiTConfig:
    """The :class:`DiTConfig` of a named DiT size ("B/2": DiT-B with 2×2 patches), other fields from ``overrides``.

    Sizes (depth / hidden / heads, Peebles & Xie 2023, Table 1): S 12/384/6,
    B 12/768/12, L 24/1024/16, XL 28/1152/16; patch sizes 2, 4, 8.

    Raises:
      ValueError: for an unknown name, or ``overrides`` of the fields the name fixes.
    """
    if name not in dit_names():
        raise ValueError(f"`name` must be one of {', '.join(dit_names())}; got {name!r}.")
    fixed = sorted(set(overrides) & set(_SIZE_FIELDS))
    if fixed:
        raise ValueError(f"{name!r} fixes {', '.join(_SIZE_FIELDS)}; got overrides of {', '.join(fixed)} (build a DiTConfig directly).")
    size, patch = name.split("/")
    depth, hidden, heads = SIZES[size]
    return DiTConfig(depth=depth, hidden_size=hidden, num_heads=heads, patch_size=int(patch), **overrides)


def patchify(x: Array, patch_size: int) -> Array:
    """(b, H, W, C) -> (b, (H/p)·(W/p), p·p·C): patches in row-major order, each flattened as (row, column, channel)."""
    p = patch_size
    if x.ndim != 4 or x.shape[1] % p or x.shape[2] % p:
        raise ValueError(f"`x` must have shape (batch, height, width, channels) with height and width divisible by {p}; got {x.shape}.")
    b, height, width, c = x.shape
    x = x.reshape(b, height // p, p, width // p, p, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, (height // p) * (width // p), p * p * c)


def unpatchify(tokens: Array, patch_size: int, height: int, width: int) -> Array:
    """The inverse of :func:`patchify`: (b, (H/p)·(W/p), p·p·C) -> (b, H, W, C) for an H×W image."""
    p = patch_size
    rows, cols = height // p, width // p
    if height % p or width % p or tokens.ndim != 3 or tokens.shape[1] != rows * cols or tokens.shape[2] % (p * p):
        raise ValueError(f"`tokens` must have shape (batch, {rows * cols}, p·p·channels) with p = {p} for a {height}×{width} image; got {tokens.shape}.")
    b, _, features = tokens.shape
    x = tokens.reshape(b, rows, cols, p, p, features // (p * p)).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, height, width, features // (p * p))


def sincos_2d_embedding(rows: int, cols: int, dim: int, *, max_period: float = 10_000.0) -> Array:
    """Fixed 2-D sin-cos position features (rows·cols, dim), float32, in :func:`patchify`'s token order.

    The first half of the features encodes the row, the second the column,
    each as ``[sin(ω_k i), cos(ω_k i)]`` with dim/4 frequencies ω_k geometric
    in (1/max_period, 1]; so the inner product of two positions' features
    depends only on their offset.
    """
    if dim % 4:
        raise ValueError(f"`dim` must be divisible by 4; got {dim}.")
    quarter = dim // 4
    omega = max_period ** -(jnp.arange(quarter, dtype=jnp.float32) / quarter)  # (dim/4,)
    row, col = jnp.meshgrid(jnp.arange(rows, dtype=jnp.float32), jnp.arange(cols, dtype=jnp.float32), indexing="ij")

    def axis(position: Array) -> Array:  # (rows, cols) -> (rows·cols, dim/2)
        angles = position.reshape(-1, 1) * omega
        return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)

    return jnp.concatenate([axis(row), axis(col)], axis=-1)


def _modulated_norm(h: Array, shift: Array, scale: Array, eps: float, dtype: Any) -> Array:
    """``LayerNorm(h)·(1 + scale) + shift`` with statistics (and the modulation) in float32."""
    h = h.astype(jnp.float32)
    mean = h.mean(-1, keepdims=True)
    var = jnp.square(h - mean).mean(-1, keepdims=True)
    normed = (h - mean) * jax.lax.rsqrt(var + eps)
    return (normed * (1.0 + scale.astype(jnp.float32)) + shift.astype(jnp.float32)).astype(dtype)


def _dense(cfg: DiTConfig, features: int, name: str, *, zero: bool = False) -> nn.Dense:
    """Dense in the compute dtype: xavier-uniform kernels, zero biases (zero kernels for adaLN-Zero)."""
    init = nn.initializers.zeros if zero else nn.initializers.xavier_uniform()
    return nn.Dense(features, dtype=cfg.dtype, param_dtype=cfg.param_dtype, kernel_init=init, name=name)


class _TimeEmbedding(nn.Module):
    """t (b,) in [0, 1] -> (b, hidden) float32: sinusoidal features of 1000·t, Dense, SiLU, Dense."""

    hidden_size: int
    features: int = 256
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, t: Array) -> Array:
        init = nn.initializers.normal(0.02)
        dense = lambda name: nn.Dense(self.hidden_size, dtype=jnp.float32, param_dtype=self.param_dtype, kernel_init=init, name=name)
        h = constrain(dense("in")(sinusoidal_embedding(t, self.features)), VECTOR)
        return dense("out")(nn.silu(h))


class DiTBlock(nn.Module):
    """adaLN-Zero block: ``h + gate·Attn(mod(LN(h)))`` then ``h + gate·MLP(mod(LN(h)))``; (b, L, D), (b, D) -> (b, L, D)."""

    config: DiTConfig

    @nn.compact
    def __call__(self, h: Array, cond: Array) -> Array:
        cfg = self.config
        width, heads = cfg.hidden_size, cfg.num_heads
        modulation = constrain(_dense(cfg, 6 * width, "adaLN_modulation", zero=True)(nn.silu(cond)), VECTOR)
        shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = jnp.split(modulation[:, None, :], 6, axis=-1)  # (b, 1, D) each
        b, length, _ = h.shape

        y = _modulated_norm(h, shift_a, scale_a, cfg.norm_eps, cfg.dtype)
        qkv = _dense(cfg, 3 * width, "qkv")(y).reshape(b, length, 3, heads, width // heads)
        q, k, v = (constrain(qkv[:, :, i], (BATCH, LENGTH, HEADS, None)) for i in range(3))
        attended = jax.nn.dot_product_attention(q, k, v, implementation=cfg.attention_impl)  # softmax in float32
        attended = constrain(attended.reshape(b, length, width), (BATCH, LENGTH, HEADS))
        h = h + gate_a * _dense(cfg, width, "proj")(attended)

        y = _modulated_norm(h, shift_m, scale_m, cfg.norm_eps, cfg.dtype)
        hidden = constrain(_dense(cfg, int(width * cfg.mlp_ratio), "mlp_in")(y), (BATCH, LENGTH, MLP))
        h = h + gate_m * _dense(cfg, width, "mlp_out")(nn.gelu(hidden, approximate=True))
        return constrain(h, ACTIVATION)


class DiT(nn.Module):
    """``f(x, t[, d][, labels]) -> (b, H, W, C_out)`` float32: the Diffusion Transformer on NHWC images.

    The call ``(x, t, *conditions, labels=None)`` takes

    - ``x``: (b, H, W, in_channels) images (or latents), H and W divisible by p;
    - ``t``: (b,) or () times in [0, 1] (t = 0 data, t = 1 noise);
    - ``conditions``: ``d`` (b,) or () if ``config.second_time``, then the
      integer ``labels`` (b,) in [0, num_classes] if ``config.num_classes``
      and they are not passed by keyword;
    - ``labels``: the labels by keyword (only with ``num_classes``).

    Attributes:
      config: the hyperparameters.

    Raises:
      ValueError: for a wrong shape, dtype or channel count, or conditions
        that do not match the config (a missing or extra d, labels given to an
        unconditional net).

    References:
      Peebles, Xie 2023, "Scalable Diffusion Models with Transformers" (arXiv:2212.09748).
    """

    config: DiTConfig

    def _check(self, x: Any, t: Any, conditions: tuple, labels: Any) -> tuple[Any, Any]:
        cfg = self.config
        p = cfg.patch_size
        if getattr(x, "ndim", None) != 4 or x.shape[1] % p or x.shape[2] % p:
            raise ValueError(
                f"`x` must have shape (batch, height, width, channels) with height and width divisible by patch_size = {p}; got {getattr(x, 'shape', None)}."
            )
        if x.shape[3] != cfg.in_channels:
            raise ValueError(f"`x` must have in_channels = {cfg.in_channels} channels; got shape {x.shape}.")
        if not jnp.issubdtype(x.dtype, jnp.floating):
            raise ValueError(f"`x` must be a floating array; got dtype {x.dtype}.")
        if labels is not None and cfg.num_classes is None:
            raise ValueError("`labels` were given, but config.num_classes is None (an unconditional DiT).")
        expected = ("d",) * cfg.second_time + ("labels",) * (cfg.num_classes is not None and labels is None)
        if len(conditions) != len(expected):
            raise ValueError(
                f"this DiT takes ({', '.join(('x', 't', *expected))}) (second_time={cfg.second_time}, num_classes={cfg.num_classes}); got {2 + len(conditions)} inputs."
            )
        named = dict(zip(expected, conditions))
        labels = named.get("labels", labels)
        batch = x.shape[:1]
        for name, value in (("t", t), ("d", named.get("d"))):
            if value is not None and jnp.shape(value) not in ((), batch):
                raise ValueError(f"`{name}` must have shape {batch} or (); got {jnp.shape(value)}.")
        if labels is not None and (jnp.shape(labels) != batch or not jnp.issubdtype(jnp.result_type(labels), jnp.integer)):
            raise ValueError(f"`labels` must be an integer array of shape {batch}; got {jnp.result_type(labels)} {jnp.shape(labels)}.")
        return named.get("d"), labels

    @nn.compact
    def __call__(self, x: Array, t: Array, *conditions: Array, labels: Array | None = None) -> Array:
        cfg = self.config
        d, labels = self._check(x, t, conditions, labels)
        b, height, width, _ = x.shape
        p, hidden = cfg.patch_size, cfg.hidden_size
        rows, cols = height // p, width // p

        def per_example(s: Array) -> Array:
            return jnp.broadcast_to(jnp.asarray(s, jnp.float32), (b,))

        cond = _TimeEmbedding(hidden, cfg.time_features, cfg.param_dtype, name="t_embedder")(per_example(t))
        if d is not None:
            cond = cond + _TimeEmbedding(hidden, cfg.time_features, cfg.param_dtype, name="d_embedder")(per_example(d))
        if labels is not None and cfg.num_classes is not None:
            embed = nn.Embed(cfg.num_classes + 1, hidden, param_dtype=cfg.param_dtype, embedding_init=nn.initializers.normal(0.02), name="y_embedder")
            cond = cond + embed(labels).astype(jnp.float32)
        cond = constrain(cond, VECTOR)  # (b, D) float32

        h = _dense(cfg, hidden, "patch_embed")(patchify(x.astype(cfg.dtype), p))  # (b, L, D)
        if cfg.pos_embed == "sincos":
            h = h + sincos_2d_embedding(rows, cols, hidden).astype(cfg.dtype)
        elif cfg.pos_embed == "learned":
            known = self.get_variable("params", "pos_embed") if self.has_variable("params", "pos_embed") else None
            if known is not None and known.shape != (rows * cols, hidden):
                raise ValueError(f"`x` must give the learned embedding's {known.shape[0]} patches; got {rows}×{cols} = {rows * cols} (shape {x.shape}).")
            h = h + self.param("pos_embed", nn.initializers.normal(0.02), (rows * cols, hidden), cfg.param_dtype).astype(cfg.dtype)
        h = constrain(h, ACTIVATION)

        block = nn.remat(DiTBlock, prevent_cse=not cfg.scan) if cfg.remat else DiTBlock
        if cfg.scan:
            body = nn.scan(
                lambda module, carry, c: (module(carry, c), None),
                variable_axes={"params": 0},
                split_rngs={"params": True},
                in_axes=nn.broadcast,
                length=cfg.depth,
            )
            h, _ = body(block(cfg, name="blocks"), h, cond)
        else:
            for i in range(cfg.depth):
                h = block(cfg, name=f"block_{i}")(h, cond)

        shift, scale = jnp.split(constrain(_dense(cfg, 2 * hidden, "final_modulation", zero=True)(nn.silu(cond)), VECTOR)[:, None], 2, axis=-1)
        y = _modulated_norm(h, shift, scale, cfg.norm_eps, cfg.dtype)
        out = _dense(cfg, p * p * cfg.output_channels, "final_proj", zero=True)(y)  # (b, L, p·p·C_out)
        return unpatchify(out.astype(jnp.float32), p, height, width)


def stack_blocks(variables: Any) -> Any:
    """The variables of a plain DiT (``block_0`` … ``block_{n-1}``) for the same config with ``scan=True`` (``blocks``)."""
    params = _params(variables, "block_0")
    blocks = [params.pop(f"block_{i}") for i in range(sum(name.startswith("block_") for name in params))]
    params["blocks"] = jax.tree.map(lambda *leaves: jnp.stack(leaves), *blocks)
    return {**variables, "params": params}


def unstack_blocks(variables: Any) -> Any:
    """The inverse of :func:`stack_blocks`: ``blocks`` with a leading depth axis -> ``block_0`` … ``block_{n-1}``."""
    params = _params(variables, "blocks")
    stacked = params.pop("blocks")
    depth = jax.tree.leaves(stacked)[0].shape[0]
    params.update({f"block_{i}": jax.tree.map(lambda leaf, i=i: leaf[i], stacked) for i in range(depth)})
    return {**variables, "params": params}


def _params(variables: Any, holding: str) -> dict:
    """A copy of ``variables["params"]``, checked to hold ``holding``."""
    params: Any = variables.get("params") if hasattr(variables, "get") else None
    if not hasattr(params, "keys") or holding not in params:
        found = sorted(params) if hasattr(params, "keys") else type(variables).__name__
        raise ValueError(f"`variables` must be a DiT's {{'params': …}} as `init` returns them, holding {holding!r}; got {found}.")
    return dict(params)
