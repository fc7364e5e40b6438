"""jaxlab.testing's rounding tolerance: it admits reordered sums and rejects real differences."""

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from jaxlab.testing import assert_close_up_to_rounding, rounding_tolerance


@given(seed=st.integers(0, 2**31 - 1), n=st.sampled_from([16, 1024, 65536]))
def test_float32_sums_in_two_orders_agree_within_the_tolerance(seed, n):
    rng = np.random.default_rng(seed)
    terms = rng.standard_normal((8, n)).astype(np.float32)
    forward = np.cumsum(terms, axis=1, dtype=np.float32)[:, -1]  # strictly sequential, the worst common order
    shuffled = np.sum(terms[:, rng.permutation(n)], axis=1, dtype=np.float32)  # numpy's pairwise order
    # Normwise against the size of the terms' partial sums (√n for unit normals), as the helper compares.
    scale = np.full(8, np.sqrt(n), np.float32)
    assert_close_up_to_rounding(np.concatenate([forward, scale]), np.concatenate([shuffled, scale]), terms=n)


def test_a_difference_of_a_hundred_ulps_fails():
    x = np.linspace(-1, 1, 64, dtype=np.float32)
    bumped = x + 100 * np.finfo(np.float32).eps
    with pytest.raises(AssertionError, match="exceeds"):
        assert_close_up_to_rounding(bumped, x, terms=64)


def test_the_tolerance_scales_with_eps_and_the_square_root_of_the_terms():
    assert rounding_tolerance(np.float32, 100) == pytest.approx(4 * 2.0**-23 * 10)
    assert rounding_tolerance(jnp.bfloat16, 1) == pytest.approx(4 * 2.0**-7)
    assert rounding_tolerance(np.float64, 4, safety=1.0) == pytest.approx(2 * 2.0**-52)


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: rounding_tolerance(np.int32, 3), TypeError, "floating dtype"),
        (lambda: rounding_tolerance(np.float32, 0), ValueError, "terms must be an int >= 1"),
        (lambda: rounding_tolerance(np.float32, 3, safety=0.0), ValueError, "safety must be > 0"),
        (lambda: assert_close_up_to_rounding(np.ones(3), np.ones(4), terms=1), AssertionError, "shapes differ"),
    ],
)
def test_bad_arguments_are_named(call, error, match):
    with pytest.raises(error, match=match):
        call()
