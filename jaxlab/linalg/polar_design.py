"""Design of per-step odd quintic polynomials for the matrix sign (Polar Express).

This module is plain NumPy and is *not* imported by :mod:`jaxlab.linalg.msign`:
it is the build-time tool that produced jaxlab's table
(``"polar_express_jaxlab"`` in :mod:`jaxlab.linalg.polar_coeffs`; the paper's
own table is stored as published), kept here so that the table can be
re-derived (and is re-derived by the tests) and so that users can design a
schedule for another lower bound ``lower`` on the normalized singular values.

The design is the greedy minimax construction of Amsel et al. (2025): at step
``t`` the singular values of the iterate lie in an interval ``[lo_t, hi_t]``;
the step polynomial ``p_t(x) = a x + b x^3 + c x^5`` minimizes
``max_{x in [lo_t, hi_t]} |1 - p_t(x)|`` (a Chebyshev/Remez problem with four
alternation points), and the next interval is the image ``p_t([lo_t, hi_t])``.
Greedy optimality means that the first ``k`` rows of the table are the best
``k``-step schedule, so one table serves every step count.

Safety margins: the upper end of each design interval is inflated (by
``first_margin`` on the first step, ``margin`` afterwards) so that inputs a
little above the nominal interval — an under-estimated top singular value on
the first step, round-off later — stay inside the region where the polynomial
is controlled instead of being blown up by the ``c x^5`` term.

References:
    Amsel, Persson, Musco, Gower, "The Polar Express: Optimal Matrix Sign
    Methods and Their Application to the Muon Algorithm", 2025.
    https://arxiv.org/abs/2505.16932
"""

from __future__ import annotations

import numpy as np

__all__ = ["compose_band", "design_polar_express", "minimax_odd_quintic", "odd_quintic"]


def odd_quintic(coeffs, x: np.ndarray) -> np.ndarray:
    """Evaluates ``a x + b x^3 + c x^5`` for ``coeffs = (a, b, c)``."""
    a, b, c = coeffs
    x2 = x * x
    return x * (a + x2 * (b + c * x2))


def _extrema(coeffs, lo: float, hi: float) -> np.ndarray:
    """Endpoints plus interior critical points of the odd quintic on [lo, hi]."""
    a, b, c = coeffs
    roots = np.roots([5.0 * c, 3.0 * b, a]) if c != 0 else np.roots([3.0 * b, a])
    crit = [np.sqrt(r.real) for r in roots if abs(r.imag) < 1e-12 and r.real > 0]
    crit = [x for x in crit if lo < x < hi]
    return np.sort(np.array([lo, hi, *crit]))


def minimax_odd_quintic(lo: float, hi: float, *, iters: int = 60) -> tuple[tuple[float, float, float], float]:
    """Remez exchange for the odd quintic closest to 1 in sup-norm on ``[lo, hi]``.

    Args:
        lo: lower end of the interval, ``0 < lo < hi``.
        hi: upper end of the interval.
        iters: maximum number of exchange iterations.

    Returns:
        ``((a, b, c), err)`` with ``err = max_{[lo, hi]} |1 - p(x)|`` measured on a
        dense grid.

    Raises:
        ValueError: if ``not 0 < lo < hi``.
    """
    if not 0.0 < lo < hi:
        raise ValueError(f"minimax_odd_quintic: expected 0 < lo < hi, got lo={lo}, hi={hi}")
    ref = lo + (hi - lo) * (1.0 - np.cos(np.pi * np.arange(4) / 3.0)) / 2.0
    signs = (-1.0) ** np.arange(4)
    coeffs = (1.0, 0.0, 0.0)
    for _ in range(iters):
        system = np.stack([ref, ref**3, ref**5, signs], axis=1)
        a, b, c, _ = np.linalg.solve(system, np.ones(4))
        coeffs = (float(a), float(b), float(c))
        new_ref = _extrema(coeffs, lo, hi)
        if new_ref.shape[0] != 4:
            break
        if np.max(np.abs(new_ref - ref)) <= 1e-15 * hi:
            ref = new_ref
            break
        ref = new_ref
    grid = np.linspace(lo, hi, 100_001)
    err = float(np.max(np.abs(1.0 - odd_quintic(coeffs, grid))))
    return coeffs, err


def design_polar_express(lower: float, steps: int, *, first_margin: float = 1.0, margin: float = 1.0, min_width: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
    """Greedy per-step minimax schedule for singular values in ``[lower, 1]``.

    Args:
        lower: lower bound of the normalized singular values, ``0 < lower < 1``.
        steps: maximum number of polynomials to design.
        first_margin: factor (>= 1) inflating the upper end of the first interval.
        margin: factor (>= 1) inflating the upper end of every later interval.
        min_width: stop early once the interval half-width falls below this
            (further steps would only fit round-off).

    Returns:
        ``(table, bands)``: ``table`` of shape ``(k, 3)`` with rows ``(a, b, c)``
        and ``bands`` of shape ``(k, 2)``, the guaranteed image ``[lo, hi]`` of
        the (inflated) design interval after each step; ``k <= steps``.

    References:
        Amsel et al., "The Polar Express", 2025, Algorithm 1 (greedy design).
    """
    if not 0.0 < lower < 1.0:
        raise ValueError(f"design_polar_express: expected 0 < lower < 1, got lower={lower}")
    lo, hi = float(lower), 1.0
    rows, bands = [], []
    for t in range(steps):
        top = hi * (first_margin if t == 0 else margin)
        coeffs, _ = minimax_odd_quintic(lo, top)
        grid = np.linspace(lo, top, 200_001)
        image = odd_quintic(coeffs, grid)
        lo, hi = float(image.min()), float(image.max())
        rows.append(coeffs)
        bands.append((lo, hi))
        if hi - lo < 2.0 * min_width:
            break
    return np.asarray(rows), np.asarray(bands)


def compose_band(table, x: np.ndarray) -> np.ndarray:
    """Applies the rows of ``table`` in order to scalar inputs ``x`` (float64)."""
    y = np.asarray(x, np.float64)
    for row in np.asarray(table, np.float64):
        y = odd_quintic(row, y)
    return y
