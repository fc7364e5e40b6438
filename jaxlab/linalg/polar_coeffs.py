"""Coefficient tables ``(a, b, c)`` of ``p(x) = a x + b x^3 + c x^5`` for :func:`msign`.

Presets:

* ``"keller"`` — Keller Jordan's constants, the same polynomial every step.
  It maximizes the slope at zero and converges to a band around 1 (roughly
  ``[0.68, 1.13]``), not to 1.
* ``"polar_express_jaxlab"`` (the default of :func:`msign` and Muon) — jaxlab's
  own re-derivation of the Polar Express construction (Amsel et al., 2025) with
  :func:`jaxlab.linalg.polar_design.design_polar_express`, for normalized
  singular values in ``[POLAR_EXPRESS_LOWER, 1]``, the first interval inflated
  by ``POLAR_EXPRESS_FIRST_MARGIN`` and later ones by ``POLAR_EXPRESS_MARGIN``
  (margins sized for :func:`msign`'s power-iteration normalization). The table
  is greedy, so its first ``k`` rows are the ``k``-step schedule; past its end
  the last row repeats.
* ``"polar_express_paper"`` — the table published in the paper (Algorithm 1,
  ``l = 1e-3``): ``POLAR_EXPRESS_PAPER_RAW`` with the paper's safety factor
  applied, ``p_t(x / 1.01)`` on every row but the last. It is designed for
  Frobenius normalization (``sigma_1 <= 1``; the paper's code divides by
  ``1.01 |X|_F + 1e-7``) and diverges for normalized singular values above
  ``~1.01`` (``PRESET_MAX_INPUT``).
* ``"polar_express"`` — alias of ``"polar_express_jaxlab"``, kept so that
  existing configurations keep their numbers; it is *not* the paper's table.

Default: the jaxlab table — closer to 1 after 5-7 steps on ``[1e-3, 1]`` and
safe up to the 1.05 overshoot power normalization allows (from 8 steps on
only the paper's reaches 1 exactly in float64; figures in ``docs/results.md``).

``POLAR_EXPRESS_BANDS[k - 1]`` is the guaranteed interval of the singular
values after ``k`` steps of the jaxlab table for every normalized input
singular value in ``[POLAR_EXPRESS_LOWER, POLAR_EXPRESS_FIRST_MARGIN]``.
:func:`msign` never scales so that the top value exceeds the preset's
``PRESET_MAX_INPUT`` (``POLAR_EXPRESS_FIRST_MARGIN`` for tables without an
entry), and scales by at most ``POWER_SAFETY * sigma_1`` unless the top of the
spectrum is flat (then by at most ``s8 / max_input``, ``s8`` the Schatten-8
norm), so the jaxlab range covers every singular value
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
    "POLAR_EXPRESS_BANDS",
    "POLAR_EXPRESS_COEFFS",
    "POLAR_EXPRESS_JAXLAB_COEFFS",
    "POLAR_EXPRESS_LOWER",
    "POLAR_EXPRESS_PAPER_COEFFS",
    "POLAR_EXPRESS_PAPER_RAW",
    "POLAR_EXPRESS_PAPER_SAFETY",
    "POWER_SAFETY",
    "PRESETS",
    "PRESET_MAX_INPUT",
    "coefficient_table",
    "max_input",
]

KELLER_COEFFS: tuple[float, float, float] = (3.4445, -4.7750, 2.0315)

# Safety factor multiplying the power-iteration estimate of sigma_1 in msign.
POWER_SAFETY: float = 1.05

# Design parameters of the Polar Express table below.
POLAR_EXPRESS_LOWER: float = 1e-3 / POWER_SAFETY
POLAR_EXPRESS_FIRST_MARGIN: float = 1.05
POLAR_EXPRESS_MARGIN: float = 1.01

# design_polar_express(POLAR_EXPRESS_LOWER, 10, first_margin=1.05, margin=1.01)
POLAR_EXPRESS_JAXLAB_COEFFS: tuple[tuple[float, float, float], ...] = (
    (8.070855922125478, -21.70318360952642, 14.606543920080046),
    (4.148935263629905, -3.022629739821014, 0.5530927008776677),
    (3.9531300489554844, -2.8891787934890423, 0.5383817199369058),
    (3.3392269971399093, -2.457481104512939, 0.490997825801709),
    (2.336037127473792, -1.6766901295055325, 0.40760177062843184),
    (1.8880678883231985, -1.2546168470885695, 0.3670173251195865),
    (1.8657046092335106, -1.231455167807089, 0.36575071437993645),
)

POLAR_EXPRESS_COEFFS = POLAR_EXPRESS_JAXLAB_COEFFS  # the name before the paper's table was added

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

# Amsel et al. (2025), Algorithm 1, as printed: the polynomials for l = 1e-3 before the
# safety factor; the last row is the limit they reach (scaled Newton-Schulz).
POLAR_EXPRESS_PAPER_RAW: tuple[tuple[float, float, float], ...] = (
    (8.28721201814563, -23.595886519098837, 17.300387312530933),
    (4.107059111542203, -2.9478499167379106, 0.5448431082926601),
    (3.9486908534822946, -2.908902115962949, 0.5518191394370137),
    (3.3184196573706015, -2.488488024314874, 0.51004894012372),
    (2.300652019954817, -1.6689039845747493, 0.4188073119525673),
    (1.891301407787398, -1.2679958271945868, 0.37680408948524835),
    (1.8750014808534479, -1.2500016453999487, 0.3750001645474248),
    (1.875, -1.25, 0.375),
)
POLAR_EXPRESS_PAPER_SAFETY: float = 1.01

# p(x / s) for every row but the last, evaluated as the paper's code does.
POLAR_EXPRESS_PAPER_COEFFS: tuple[tuple[float, float, float], ...] = tuple(
    (a / POLAR_EXPRESS_PAPER_SAFETY, b / POLAR_EXPRESS_PAPER_SAFETY**3, c / POLAR_EXPRESS_PAPER_SAFETY**5) for a, b, c in POLAR_EXPRESS_PAPER_RAW[:-1]
) + (POLAR_EXPRESS_PAPER_RAW[-1],)

PRESETS: dict[str, tuple[tuple[float, float, float], ...]] = {
    "keller": (KELLER_COEFFS,),
    "polar_express_jaxlab": POLAR_EXPRESS_JAXLAB_COEFFS,
    "polar_express_paper": POLAR_EXPRESS_PAPER_COEFFS,
    "polar_express": POLAR_EXPRESS_JAXLAB_COEFFS,  # alias, see the module docstring
}

# Largest normalized singular value a preset is designed for; msign's power
# normalization never scales the top value beyond it.
PRESET_MAX_INPUT: dict[str, float] = {"polar_express_paper": POLAR_EXPRESS_PAPER_SAFETY}


def max_input(coeffs) -> float:
    """The largest normalized singular value ``coeffs`` tolerates (``POLAR_EXPRESS_FIRST_MARGIN`` by default)."""
    if isinstance(coeffs, str):
        return PRESET_MAX_INPUT.get(coeffs, POLAR_EXPRESS_FIRST_MARGIN)
    return POLAR_EXPRESS_FIRST_MARGIN


def coefficient_table(coeffs, name: str = "coeffs"):
    """Validates a preset name or a user table and returns it as an array of rows.

    Args:
        coeffs: a preset name (``"keller"``, ``"polar_express_jaxlab"``,
            ``"polar_express_paper"`` or its alias ``"polar_express"``, see
            the module docstring), one row ``(a, b, c)`` used every step, or
            a table of shape ``(k, 3)`` applied in order (the last row repeats
            past ``k``). A JAX array (possibly traced, e.g. injected by
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
    table: jax.Array | np.ndarray
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
