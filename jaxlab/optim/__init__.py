"""jaxlab.optim — public names re-exported here."""

from jaxlab.optim.dimension_numbers import (
    DimensionNumbers,
    attention_dimension_numbers,
    conv_dimension_numbers,
    dense_general_dimension_numbers,
    flax_dimension_numbers,
)
from jaxlab.optim.labels import (
    EMBEDDING_OR_HEAD_NAMES,
    MuonFallbackWarning,
    RoutingRow,
    RoutingTable,
    describe_routing,
    is_embedding_or_head,
    muon_labels,
)
from jaxlab.optim.lora import (
    LORA_A,
    LORA_B,
    LoraPair,
    default_lora_predicate,
    lora_apply,
    lora_init,
    lora_labels,
    lora_merge,
    lora_plus,
    lora_scale,
    lora_targets,
)
from jaxlab.optim.lora_variants import (
    LoraProAdamState,
    lora_equivalent_gradient,
    lora_ga_init,
    lora_pro_adam,
    lora_pro_gradients,
    scale_by_lora_pro,
)
from jaxlab.optim.muon import MuonState, muon, scale_by_muon, shape_scale
from jaxlab.optim.spectral_decay import SpectralDecayState, spectral_decay

__all__ = [
    "EMBEDDING_OR_HEAD_NAMES",
    "LORA_A",
    "LORA_B",
    "DimensionNumbers",
    "LoraPair",
    "LoraProAdamState",
    "MuonFallbackWarning",
    "MuonState",
    "RoutingRow",
    "RoutingTable",
    "SpectralDecayState",
    "attention_dimension_numbers",
    "conv_dimension_numbers",
    "default_lora_predicate",
    "dense_general_dimension_numbers",
    "describe_routing",
    "flax_dimension_numbers",
    "is_embedding_or_head",
    "lora_apply",
    "lora_equivalent_gradient",
    "lora_ga_init",
    "lora_init",
    "lora_labels",
    "lora_merge",
    "lora_plus",
    "lora_pro_adam",
    "lora_pro_gradients",
    "lora_scale",
    "lora_targets",
    "muon",
    "muon_labels",
    "scale_by_lora_pro",
    "scale_by_muon",
    "shape_scale",
    "spectral_decay",
]
