"""Coefficient tables ``(a, b, c)`` of ``p(x) = a x + b x^3 + c x^5`` for :func:`msign`.

Two presets:

* ``"keller"`` — Keller Jordan's constants, the same polynomial every step.
  It maximizes the slope at zero and converges to a band around 1 (roughly
  ``[0.68, 1.13]``), not to 1.
* ``"polar_express"`` — per-step minimax polynomials (Amsel et al., 2025),
  derived with :func:`jaxlab.linalg.polar_design.design_polar_express` for
  normalized singular values in ``[POLAR_EXPRESS_LOWER, 1]``, the first
  interval inflated by ``POLAR_EXPRESS_FIRST_MARGIN`` and later ones by
  ``POLAR_EXPRESS_MARGIN``. The table is greedy, so its first ``k`` rows are
  the ``k``-step schedule; past its end the last row repeats.

``POLAR_EXPRESS_BANDS[k - 1]`` is the guaranteed interval of the singular
values after ``k`` steps for every normalized input singular value in
``[POLAR_EXPRESS_LOWER, POLAR_EXPRESS_FIRST_MARGIN]``. :func:`msign` never
scales so that the top value exceeds ``POLAR_EXPRESS_FIRST_MARGIN``, and
scales by at most ``POWER_SAFETY * sigma_1`` unless the top of the spectrum
is flat (then by at most ``s8 / POLAR_EXPRESS_FIRST_MARGIN``, ``s8`` the
Schatten-8 norm), so the range covers every singular value
``>= 1e-3 * max(sigma_1, s8 / 1.1)``.

References:
    Jordan, "Muon: An optimizer for hidden layers in neural networks", 2024.
    https://kellerjordan.github.io/posts/muon/

    Amsel, Persson, Musco, Gower, "The Polar Express: Optimal Matrix Sign
    Methods and Their Application to the Muon Algorithm", 2025.
    https://arxiv.org/abs/2505.16932
"""

from __future__ import annotations

import jax
import numpy as np

__all__ = [
    "KELLER_COEFFS",
    "POLAR_EXPRESS_COEFFS",
    "POLAR_EXPRESS_BANDS",
    "POLAR_EXPRESS_LOWER",
    "POWER_SAFETY",
    "PRESETS",
    "coefficient_table",
]

KELLER_COEFFS: tuple[float, float, float] = (3.4445, -4.7750, 2.0315)

# Safety factor multiplying the power-iteration estimate of sigma_1 in msign.
POWER_SAFETY: float = 1.05

# Design parameters of the Polar Express table below.
POLAR_EXPRESS_LOWER: float = 1e-3 / POWER_SAFETY
POLAR_EXPRESS_FIRST_MARGIN: float = 1.05
POLAR_EXPRESS_MARGIN: float = 1.01

# design_polar_express(POLAR_EXPRESS_LOWER, 10, first_margin=1.05, margin=1.01)
POLAR_EXPRESS_COEFFS: tuple[tuple[float, float, float], ...] = (
    (8.070855922125478, -21.70318360952642, 14.606543920080046),
    (4.148935263629905, -3.022629739821014, 0.5530927008776677),
    (3.9531300489554844, -2.8891787934890423, 0.5383817199369058),
    (3.3392269971399093, -2.457481104512939, 0.490997825801709),
    (2.336037127473792, -1.6766901295055325, 0.40760177062843184),
    (1.8880678883231985, -1.2546168470885695, 0.3670173251195865),
    (1.8657046092335106, -1.231455167807089, 0.36575071437993645),
)

# Guaranteed [lo, hi] after k = 1, 2, ... steps (rounded outwards to 4 digits).
POLAR_EXPRESS_BANDS: tuple[tuple[float, float], ...] = (
    (0.0076, 1.9924),
    (0.0318, 1.9682),
    (0.1259, 1.8741),
    (0.4157, 1.5843),
    (0.8557, 1.1443),
    (0.9979, 1.0021),
    (0.9999, 1.0001),
)

PRESETS: dict[str, tuple[tuple[float, float, float], ...]] = {
    "keller": (KELLER_COEFFS,),
    "polar_express": POLAR_EXPRESS_COEFFS,
}


def coefficient_table(coeffs, name: str = "coeffs"):
    """Validates a preset name or a user table and returns it as an array of rows.

    Args:
        coeffs: ``"keller"``, ``"polar_express"``, one row ``(a, b, c)`` used every
            step, or a table of shape ``(k, 3)`` applied in order (the last row
            repeats past ``k``). A JAX array (possibly traced, e.g. injected by
            ``optax.inject_hyperparams``) is accepted with the same shapes.
        name: argument name used in error messages.

    Returns:
        A NumPy ``float64`` array of shape ``(k, 3)``, or a JAX array of that shape
        when ``coeffs`` is a JAX array.

    Raises:
        ValueError: for an unknown preset or a table of the wrong form.
    """
    if isinstance(coeffs, str):
        if coeffs not in PRESETS:
            raise ValueError(f"{name}: unknown preset {coeffs!r}; expected one of {sorted(PRESETS)} or a (k, 3) table")
        return np.asarray(PRESETS[coeffs], np.float64)
    if isinstance(coeffs, jax.Array):
        table = coeffs
    else:
        try:
            table = np.asarray(coeffs, dtype=np.float64)
        except (TypeError, ValueError) as err:
            expected = "a preset name or numbers of shape (3,) or (k, 3)"
            raise ValueError(f"{name}: expected {expected}, got {coeffs!r}") from err
    if table.ndim == 1:
        table = table[None, :]
    if table.ndim != 2 or table.shape[0] < 1 or table.shape[1] != 3:
        raise ValueError(f"{name}: expected shape (3,) or (k, 3) with k >= 1, got shape {tuple(np.shape(coeffs))}")
    if isinstance(table, np.ndarray) and not np.all(np.isfinite(table)):
        raise ValueError(f"{name}: coefficients must be finite, got {table.tolist()}")
    return table
