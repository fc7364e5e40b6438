"""jaxlab.linalg — public names re-exported here."""

from jaxlab.linalg.interpolative import interpolative, pivoted_qr
from jaxlab.linalg.lowrank import cr_approx, cr_probabilities, pinv, randomized_svd, truncated_svd
from jaxlab.linalg.msign import msign, msign_svd
from jaxlab.linalg.polar_coeffs import (
    KELLER_COEFFS,
    POLAR_EXPRESS_BANDS,
    POLAR_EXPRESS_COEFFS,
    POLAR_EXPRESS_LOWER,
    POWER_SAFETY,
    coefficient_table,
)
from jaxlab.linalg.power_iteration import power_iteration, psd_eigenvalue_lower_bound

__all__ = [
    "KELLER_COEFFS",
    "POLAR_EXPRESS_BANDS",
    "POLAR_EXPRESS_COEFFS",
    "POLAR_EXPRESS_LOWER",
    "POWER_SAFETY",
    "coefficient_table",
    "cr_approx",
    "cr_probabilities",
    "interpolative",
    "msign",
    "msign_svd",
    "pinv",
    "pivoted_qr",
    "power_iteration",
    "psd_eigenvalue_lower_bound",
    "randomized_svd",
    "truncated_svd",
]
