"""The stored coefficient tables re-derived and verified with the NumPy minimax design."""

import numpy as np

from jaxlab.linalg import KELLER_COEFFS, POLAR_EXPRESS_BANDS, POLAR_EXPRESS_COEFFS, POLAR_EXPRESS_LOWER
from jaxlab.linalg import coefficient_table
from jaxlab.linalg.polar_coeffs import POLAR_EXPRESS_FIRST_MARGIN, POLAR_EXPRESS_MARGIN
from jaxlab.linalg.polar_design import compose_band, design_polar_express, minimax_odd_quintic, odd_quintic


def test_table_is_reproduced_by_the_design():
    table, bands = design_polar_express(
        POLAR_EXPRESS_LOWER, 10, first_margin=POLAR_EXPRESS_FIRST_MARGIN, margin=POLAR_EXPRESS_MARGIN
    )
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
    assert all(b < a for a, b in zip(widths, widths[1:]))
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
