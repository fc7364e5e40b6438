"""jaxlab.optim — public names re-exported here."""

from jaxlab.optim.dimension_numbers import (
    DimensionNumbers,
    conv_dimension_numbers,
    dense_general_dimension_numbers,
    flax_dimension_numbers,
)
from jaxlab.optim.labels import EMBEDDING_OR_HEAD_NAMES, is_embedding_or_head, muon_labels
from jaxlab.optim.muon import MuonState, muon, scale_by_muon, shape_scale
from jaxlab.optim.spectral_decay import SpectralDecayState, spectral_decay

__all__ = [
    "EMBEDDING_OR_HEAD_NAMES",
    "DimensionNumbers",
    "MuonState",
    "SpectralDecayState",
    "conv_dimension_numbers",
    "dense_general_dimension_numbers",
    "flax_dimension_numbers",
    "is_embedding_or_head",
    "muon",
    "muon_labels",
    "scale_by_muon",
    "shape_scale",
    "spectral_decay",
]
