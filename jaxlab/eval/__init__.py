"""jaxlab.eval — public names re-exported here."""

from jaxlab.eval.distances import DEFAULT_BANDWIDTHS, energy_distance, mmd_rbf, sliced_wasserstein
from jaxlab.eval.pairwise import mean_pairwise, pairwise_sq_distances, safe_sqrt

__all__ = [
    "DEFAULT_BANDWIDTHS",
    "energy_distance",
    "mean_pairwise",
    "mmd_rbf",
    "pairwise_sq_distances",
    "safe_sqrt",
    "sliced_wasserstein",
]

from jaxlab.eval.features import classify_digits, digits_features, digits_frechet_distance, frechet_distance

__all__ += ["classify_digits", "digits_features", "digits_frechet_distance", "frechet_distance"]
