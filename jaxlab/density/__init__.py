"""jaxlab.density — public names re-exported here."""

from jaxlab.density.fourier import (
    FourierParams,
    fit_fourier_density,
    fourier_bin_probabilities,
    fourier_cdf,
    fourier_coefficients,
    fourier_log_prob,
    fourier_nll,
    fourier_sample,
    init_fourier_params,
    num_parameters,
    periodic_cdf,
    periodic_log_prob,
    smoothness_penalty,
)

__all__ = [
    "FourierParams",
    "fit_fourier_density",
    "fourier_bin_probabilities",
    "fourier_cdf",
    "fourier_coefficients",
    "fourier_log_prob",
    "fourier_nll",
    "fourier_sample",
    "init_fourier_params",
    "num_parameters",
    "periodic_cdf",
    "periodic_log_prob",
    "smoothness_penalty",
]
