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

# fid.frechet_distance takes Gaussian moments; the name frechet_distance above (feature samples) predates it.
from jaxlab.eval.fid import RunningStatistics, feature_statistics, image_batches, load_statistics, save_statistics
from jaxlab.eval.fid import frechet_distance as gaussian_frechet_distance
from jaxlab.eval.inception import (
    FIDInceptionV3,
    convert_torch_weights,
    default_weights_path,
    inception_features,
    inception_statistics,
    load_inception_variables,
    save_inception_variables,
)

__all__ += [
    "FIDInceptionV3",
    "RunningStatistics",
    "convert_torch_weights",
    "default_weights_path",
    "feature_statistics",
    "gaussian_frechet_distance",
    "image_batches",
    "inception_features",
    "inception_statistics",
    "load_inception_variables",
    "load_statistics",
    "save_inception_variables",
    "save_statistics",
]
