"""The stored coefficient tables: jaxlab's re-derived with the NumPy minimax design, the paper's as printed."""

import itertools

import numpy as np
import pytest

from jaxlab.linalg import KELLER_COEFFS, POLAR_EXPRESS_BANDS, POLAR_EXPRESS_COEFFS, POLAR_EXPRESS_LOWER, coefficient_table
from jaxlab.linalg.polar_coeffs import (
    POLAR_EXPRESS_FIRST_MARGIN,
    POLAR_EXPRESS_JAXLAB_COEFFS,
    POLAR_EXPRESS_MARGIN,
    POLAR_EXPRESS_PAPER_COEFFS,
    POLAR_EXPRESS_PAPER_RAW,
    PRESETS,
    max_input,
)
from jaxlab.linalg.polar_design import compose_band, design_polar_express, minimax_odd_quintic, odd_quintic


def test_table_is_reproduced_by_the_design():
    table, bands = design_polar_express(POLAR_EXPRESS_LOWER, 10, first_margin=POLAR_EXPRESS_FIRST_MARGIN, margin=POLAR_EXPRESS_MARGIN)
    np.testing.assert_allclose(table, np.array(POLAR_EXPRESS_COEFFS), rtol=1e-7)
    stored = np.array(POLAR_EXPRESS_BANDS)
    assert np.all(stored[:, 0] <= bands[:, 0]) and np.all(bands[:, 1] <= stored[:, 1])


def test_composed_polynomial_band_tightens_each_step():
    grid = np.linspace(POLAR_EXPRESS_LOWER, POLAR_EXPRESS_FIRST_MARGIN, 200_001)
    widths = []
    for k in range(1, len(POLAR_EXPRESS_COEFFS) + 1):
        image = compose_band(POLAR_EXPRESS_COEFFS[:k], grid)
        lo, hi = POLAR_EXPRESS_BANDS[k - 1]
        assert lo <= image.min() and image.max() <= hi
        widths.append(image.max() - image.min())
    assert all(b < a for a, b in itertools.pairwise(widths))
    assert widths[4] < 0.3 and widths[5] < 5e-3  # 5 steps: |sigma - 1| < 0.15


def test_minimax_equioscillates():
    (a, b, c), err = minimax_odd_quintic(0.1, 1.0)
    grid = np.linspace(0.1, 1.0, 100_001)
    e = 1 - odd_quintic((a, b, c), grid)
    assert abs(np.abs(e).max() - err) < 1e-9
    assert abs(e[0] - err) < 1e-6 and abs(e[-1] + err) < 1e-6  # alternation at the ends


def test_coefficient_table_forms():
    assert coefficient_table("keller").tolist() == [list(KELLER_COEFFS)]
    assert coefficient_table((1.0, 2.0, 3.0)).shape == (1, 3)
    assert coefficient_table([[1, 2, 3], [4, 5, 6]]).shape == (2, 3)


# Amsel, Persson, Musco, Gower, "The Polar Express", arXiv:2505.16932, Algorithm 1 (degree 5,
# l = 1e-3), as printed; the code there then applies p(x / 1.01) to every row but the last.
PAPER_ALGORITHM_1 = [
    (8.28721201814563, -23.595886519098837, 17.300387312530933),
    (4.107059111542203, -2.9478499167379106, 0.5448431082926601),
    (3.9486908534822946, -2.908902115962949, 0.5518191394370137),
    (3.3184196573706015, -2.488488024314874, 0.51004894012372),
    (2.300652019954817, -1.6689039845747493, 0.4188073119525673),
    (1.891301407787398, -1.2679958271945868, 0.37680408948524835),
    (1.8750014808534479, -1.2500016453999487, 0.3750001645474248),
    (1.875, -1.25, 0.375),
]


def test_paper_table_digit_for_digit():
    assert [tuple(row) for row in POLAR_EXPRESS_PAPER_RAW] == PAPER_ALGORITHM_1  # exact float equality
    with_safety = [(a / 1.01, b / 1.01**3, c / 1.01**5) for a, b, c in PAPER_ALGORITHM_1[:-1]] + PAPER_ALGORITHM_1[-1:]
    assert coefficient_table("polar_express_paper").tolist() == [list(row) for row in with_safety]
    assert with_safety[0][0] == pytest.approx(8.205160414005569, rel=1e-15)  # the first coefficient as quoted


def test_presets_and_alias():
    assert PRESETS["polar_express"] is POLAR_EXPRESS_JAXLAB_COEFFS is POLAR_EXPRESS_COEFFS
    assert coefficient_table("polar_express").tolist() == coefficient_table("polar_express_jaxlab").tolist()
    assert coefficient_table("polar_express_jaxlab")[0, 0] == pytest.approx(8.070855922125478)
    assert max_input("polar_express_paper") == 1.01
    assert max_input("polar_express") == max_input("keller") == max_input([1.0, 2.0, 3.0]) == POLAR_EXPRESS_FIRST_MARGIN


def _steps(table, k):
    table = [tuple(row) for row in table]
    return table[:k] + table[-1:] * max(0, k - len(table))


UNIT_GRID = np.unique(np.concatenate([np.geomspace(1e-3, 1.0, 100_001), np.linspace(1e-3, 1.0, 100_001)]))


def test_default_table_is_closer_to_one_at_five_to_seven_steps_and_tolerates_overshoot():
    """The reasons the jaxlab table is the default, checked in float64 on [1e-3, 1]."""
    err = lambda table, k, x=UNIT_GRID: np.abs(compose_band(_steps(table, k), x) - 1).max()
    for k in (5, 6, 7):
        assert err(POLAR_EXPRESS_JAXLAB_COEFFS, k) < err(POLAR_EXPRESS_PAPER_COEFFS, k)
    # the paper's table converges past its end (its last row is exact at 1), jaxlab's plateaus
    assert err(POLAR_EXPRESS_PAPER_COEFFS, 9) < 1e-12 < err(POLAR_EXPRESS_JAXLAB_COEFFS, 9) < 1e-6
    # a top singular value normalized to 1.05 (power normalization allows it): jaxlab's stays in
    # its band, the paper's table (safe up to 1.01) blows up
    over = np.array([1.01, 1.05])
    lo, hi = POLAR_EXPRESS_BANDS[4]
    assert np.all((lo <= compose_band(POLAR_EXPRESS_JAXLAB_COEFFS[:5], over)) & (compose_band(POLAR_EXPRESS_JAXLAB_COEFFS[:5], over) <= hi))
    with np.errstate(over="ignore", invalid="ignore"):
        paper = compose_band(POLAR_EXPRESS_PAPER_COEFFS[:5], over)
    assert paper[0] < 1.1 and not paper[1] < 1e6
