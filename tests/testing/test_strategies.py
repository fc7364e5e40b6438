"""jaxlab.testing.strategies: declared shapes, dtypes and bounds; few shapes; pytrees; no hypothesis at import."""

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from jaxlab.testing.strategies import MAX_SHAPES, arrays, few_shapes, prng_keys, pytrees

SHAPES = ((2, 3), (1, 5, 4))


@pytest.mark.parametrize(
    ("dtype", "low", "high"),
    [
        (jnp.float32, -2.0, 3.0),
        (jnp.bfloat16, 0.1, 0.3),
        (jnp.float16, -1.0, 1.0),
        (jnp.int32, -5, 7),
        (jnp.uint8, 0, 255),
    ],
    ids=["float32", "bfloat16", "float16", "int32", "uint8"],
)
@given(data=st.data())
def test_arrays_have_the_declared_shape_dtype_and_bounds(dtype, low, high, data):
    x = data.draw(arrays(few_shapes(*SHAPES), dtype, min_value=low, max_value=high))
    assert isinstance(x, jax.Array) and x.dtype == dtype and x.shape in SHAPES
    values = np.asarray(x, np.float64)
    assert np.all(np.isfinite(values)) and np.all(values >= low - 1e-3) and np.all(values <= high + 1e-3)


def test_bounds_are_rounded_inward_to_the_dtype():
    bfloat16 = arrays((64,), jnp.bfloat16, min_value=0.1, max_value=0.3)
    low, high = np.float64(np.asarray(jnp.bfloat16(0.1))), 0.3  # bfloat16(0.1) is 0.10009…

    @given(bfloat16)
    def check(x):
        assert np.all(np.asarray(x, np.float64) >= 0.1) and np.all(np.asarray(x, np.float64) <= high)

    check()
    assert low > 0.1


@given(
    x=arrays((3, 2), np.float64, min_value=-1e3, max_value=1e3, backend="numpy"),
    flags=arrays((4,), bool, backend="numpy"),
)
def test_numpy_backend_and_bool_arrays(x, flags):
    assert isinstance(x, np.ndarray) and x.dtype == np.float64 and x.shape == (3, 2) and np.all(np.abs(x) <= 1e3)
    assert flags.dtype == np.bool_ and flags.shape == (4,)


def test_defaults_are_finite_bounded_floats_and_small_integers():
    @given(x=arrays((8,)), i=arrays((8,), jnp.int8))
    def check(x, i):
        assert x.dtype == jnp.float32 and np.all(np.abs(np.asarray(x)) <= 1.0)
        assert np.all(np.abs(np.asarray(i, np.int64)) <= 100)

    check()


SPEC = {"dense": {"kernel": jax.ShapeDtypeStruct((3, 4), jnp.float32), "bias": jax.ShapeDtypeStruct((4,), jnp.float32)}}
SPEC["tokens"] = [jax.ShapeDtypeStruct((2, 5), jnp.int32), np.zeros((2,), jnp.bfloat16)]


@given(tree=pytrees(SPEC, min_value=-3.0, max_value=3.0))
def test_pytrees_keep_the_structure_shapes_and_dtypes_of_the_spec(tree):
    assert jax.tree.structure(tree) == jax.tree.structure(SPEC)
    for leaf, spec in zip(jax.tree.leaves(tree), jax.tree.leaves(SPEC)):
        assert leaf.shape == spec.shape and leaf.dtype == spec.dtype
        assert np.all(np.abs(np.asarray(leaf, np.float64)) <= 3.0)


def test_pytrees_of_a_models_eval_shape_draw_its_parameters():
    import flax.linen as nn

    spec = jax.eval_shape(nn.Dense(3).init, jax.random.key(0), jnp.zeros((1, 2)))

    @given(params=pytrees(spec))
    def check(params):
        assert nn.Dense(3).apply(params, jnp.ones((1, 2))).shape == (1, 3)

    check()


@given(key=prng_keys(), other=prng_keys(impl="rbg"))
def test_prng_keys_are_typed_keys(key, other):
    assert jnp.issubdtype(key.dtype, jax.dtypes.prng_key) and key.shape == ()
    assert jax.random.key_impl(other) == jax.random.key_impl(jax.random.key(0, impl="rbg"))


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match=f"1 to {MAX_SHAPES} shapes"):
        few_shapes(*[(n,) for n in range(MAX_SHAPES + 1)])
    with pytest.raises(ValueError, match="non-negative ints"):
        arrays((2, -1))
    with pytest.raises(ValueError, match="backend"):
        arrays((2,), backend="torch")
    with pytest.raises(ValueError, match="jax_enable_x64"):
        arrays((2,), np.float64)
    with pytest.raises(ValueError, match="empty"):
        arrays((2,), jnp.bfloat16, min_value=0.1001, max_value=0.1002)
    with pytest.raises(ValueError, match="inside uint8"):
        arrays((2,), np.uint8, min_value=-1, max_value=3)
    with pytest.raises(ValueError, match="floating, integer or bool"):
        arrays((2,), np.complex64)
    with pytest.raises(ValueError, match=".shape and .dtype"):
        pytrees({"a": 1.0})


def test_importing_jaxlab_testing_imports_neither_hypothesis_nor_heavy_libraries():
    code = (
        "import sys, jaxlab.testing as t; "
        "assert not {'hypothesis', 'orbax', 'matplotlib', 'tqdm'} & {m.split('.')[0] for m in sys.modules}, sorted(sys.modules); "
        "t.arrays; assert 'hypothesis' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, timeout=120)
