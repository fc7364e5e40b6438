"""jaxlab.nn — Flax Linen layers and networks."""

from jaxlab.nn.embeddings import sinusoidal_embedding
from jaxlab.nn.mlp import ClassifierMLP, ResidualBlock, TimeMLP
from jaxlab.nn.precision import COMPUTE_DTYPES, compute_dtype, dtype_name

__all__ = ["COMPUTE_DTYPES", "ClassifierMLP", "ResidualBlock", "TimeMLP", "compute_dtype", "dtype_name", "sinusoidal_embedding"]

from jaxlab.nn.causal_transformer import CausalTransformer, empty_cache

__all__ += ["CausalTransformer", "empty_cache"]

from jaxlab.nn.attention import AttentionConfig, MultiHeadAttention
from jaxlab.nn.kv_cache import (
    KVCache,
    LatentCache,
    cache_bytes,
    cache_bytes_per_token,
    cache_size_per_token,
    check_room,
    init_cache,
    with_cache_checks,
)
from jaxlab.nn.mla import DEEPSEEK_V2, MLAConfig, MultiHeadLatentAttention
from jaxlab.nn.rerope import rectified_relative_positions, rerope_logits
from jaxlab.nn.rope import (
    apply_rope,
    axial_rope_angles,
    grid_positions,
    mrope_angles,
    mrope_position_ids,
    rope,
    rope_angles,
    rope_frequencies,
    rope_tie_angles,
    rope_tie_position_ids,
)
from jaxlab.nn.rope_scaling import (
    RopeConfig,
    dynamic_ntk_factor,
    logn_scale,
    ntk_base,
    pi_frequencies,
    scaled_frequencies,
    yarn_frequencies,
    yarn_qk_scale,
)
from jaxlab.nn.streaming import (
    LinearAttentionState,
    elu_feature_map,
    linear_attention_parallel,
    linear_attention_recurrent,
    streaming_attention,
)
from jaxlab.nn.transformer import (
    DecoderLM,
    TransformerConfig,
    attention_layer,
    count_params,
    greedy_generate,
    init_caches,
    token_losses,
)

__all__ += [
    "DEEPSEEK_V2",
    "AttentionConfig",
    "DecoderLM",
    "KVCache",
    "LatentCache",
    "LinearAttentionState",
    "MLAConfig",
    "MultiHeadAttention",
    "MultiHeadLatentAttention",
    "RopeConfig",
    "TransformerConfig",
    "apply_rope",
    "attention_layer",
    "axial_rope_angles",
    "cache_bytes",
    "cache_bytes_per_token",
    "cache_size_per_token",
    "check_room",
    "count_params",
    "dynamic_ntk_factor",
    "elu_feature_map",
    "greedy_generate",
    "grid_positions",
    "init_cache",
    "init_caches",
    "linear_attention_parallel",
    "linear_attention_recurrent",
    "logn_scale",
    "mrope_angles",
    "mrope_position_ids",
    "ntk_base",
    "pi_frequencies",
    "rectified_relative_positions",
    "rerope_logits",
    "rope",
    "rope_angles",
    "rope_frequencies",
    "rope_tie_angles",
    "rope_tie_position_ids",
    "scaled_frequencies",
    "streaming_attention",
    "token_losses",
    "with_cache_checks",
    "yarn_frequencies",
    "yarn_qk_scale",
]

from jaxlab.nn.unet import ConditionedResBlock, UNet

__all__ += ["ConditionedResBlock", "UNet"]

from jaxlab.nn.dit import (
    DiT,
    DiTBlock,
    DiTConfig,
    dit_config,
    dit_names,
    patchify,
    sincos_2d_embedding,
    stack_blocks,
    unpatchify,
    unstack_blocks,
)

__all__ += [
    "DiT",
    "DiTBlock",
    "DiTConfig",
    "dit_config",
    "dit_names",
    "patchify",
    "sincos_2d_embedding",
    "stack_blocks",
    "unpatchify",
    "unstack_blocks",
]
