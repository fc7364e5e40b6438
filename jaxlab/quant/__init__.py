"""jaxlab.quant — vector quantization (STE, rotation trick, SimVQ), FSQ, k-means and codebook metrics."""

from jaxlab.quant.fsq import (
    FSQOutput,
    fsq_bound,
    fsq_codes_to_indices,
    fsq_indices_to_codes,
    fsq_num_codes,
    fsq_quantize,
    round_ste,
)
from jaxlab.quant.kmeans import KMeansResult, distortion, kmeans, kmeans_plus_plus, replace_dead_codes
from jaxlab.quant.metrics import (
    code_counts,
    codebook_metrics,
    dead_codes,
    perplexity,
    perplexity_of_counts,
    utilization,
)
from jaxlab.quant.rotation import rotation_matrix, rotation_trick
from jaxlab.quant.simvq import simvq_codebook, simvq_init, simvq_quantize
from jaxlab.quant.vq import (
    ESTIMATORS,
    VQOutput,
    codebook_losses,
    nearest_code,
    squared_distances,
    straight_through,
    vector_quantize,
)

__all__ = [
    "ESTIMATORS",
    "FSQOutput",
    "KMeansResult",
    "VQOutput",
    "code_counts",
    "codebook_losses",
    "codebook_metrics",
    "dead_codes",
    "distortion",
    "fsq_bound",
    "fsq_codes_to_indices",
    "fsq_indices_to_codes",
    "fsq_num_codes",
    "fsq_quantize",
    "kmeans",
    "kmeans_plus_plus",
    "nearest_code",
    "perplexity",
    "perplexity_of_counts",
    "replace_dead_codes",
    "rotation_matrix",
    "rotation_trick",
    "round_ste",
    "simvq_codebook",
    "simvq_init",
    "simvq_quantize",
    "squared_distances",
    "straight_through",
    "utilization",
    "vector_quantize",
]
