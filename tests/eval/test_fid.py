"""FID: the Fréchet statistic against scipy and closed forms, streaming moments, the Inception network, its weights, ``jaxlab fid-stats``."""

import jax
import numpy as np
import pytest
import scipy.linalg
from flax import traverse_util
from hypothesis import given
from hypothesis import strategies as st

from jaxlab.eval import fid, inception
from tests.cli_helpers import run_cli


def random_spd(rng, k, rank=None):
    a = rng.normal(size=(k, rank or k))
    return a @ a.T / (rank or k) + (0.0 if rank else 0.1 * np.eye(k))


def scipy_frechet(mu1, sigma1, mu2, sigma2):
    """The textbook formula with scipy's general (non-symmetric) matrix square root of Σ₁Σ₂."""
    root = scipy.linalg.sqrtm(sigma1 @ sigma2)
    return np.sum((mu1 - mu2) ** 2) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(root).real


@given(seed=st.integers(0, 2**16), rank=st.sampled_from([None, 3]))
def test_frechet_matches_scipy_sqrtm_and_is_symmetric_and_non_negative(seed, rank):
    rng = np.random.default_rng(seed)
    k = 6
    mu1, mu2 = rng.normal(size=k), rng.normal(size=k)
    sigma1, sigma2 = random_spd(rng, k, rank), random_spd(rng, k)
    d = fid.frechet_distance(mu1, sigma1, mu2, sigma2)
    assert d == pytest.approx(scipy_frechet(mu1, sigma1, mu2, sigma2), rel=1e-6, abs=1e-9)
    # Swapping changes which covariance is square-rooted; a rank-deficient one's zero eigenvalues (±1e-16) enter as ~1e-8.
    assert d == pytest.approx(fid.frechet_distance(mu2, sigma2, mu1, sigma1), rel=1e-7, abs=1e-12)
    assert d >= 0.0


def test_frechet_closed_forms():
    rng = np.random.default_rng(0)
    a, b = rng.uniform(0.1, 3.0, size=5), rng.uniform(0.1, 3.0, size=5)
    mu, shift = rng.normal(size=5), rng.normal(size=5)
    # Diagonal covariances: Σᵢ (√aᵢ − √bᵢ)² plus the mean gap.
    assert fid.frechet_distance(mu, np.diag(a), mu + shift, np.diag(b)) == pytest.approx(np.sum((np.sqrt(a) - np.sqrt(b)) ** 2) + shift @ shift, rel=1e-12)
    sigma = random_spd(rng, 5)
    assert fid.frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-10)  # identical
    assert fid.frechet_distance(mu, sigma, mu + shift, sigma) == pytest.approx(shift @ shift, rel=1e-9)  # translation only
    rotation = np.linalg.qr(rng.normal(size=(5, 5)))[0]  # invariant under a common rotation
    rotated = fid.frechet_distance(rotation @ mu, rotation @ sigma @ rotation.T, rotation @ (mu + shift), rotation @ np.diag(b) @ rotation.T)
    assert rotated == pytest.approx(fid.frechet_distance(mu, sigma, mu + shift, np.diag(b)), rel=1e-9)
    # Rank-deficient (n < k) covariances, as 2048-d features from few images give: still real, finite, >= 0.
    low = random_spd(rng, 5, rank=2)
    assert fid.frechet_distance(mu, low, mu, low) == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((np.zeros(3), np.eye(3), np.zeros(4), np.eye(4)), r"same dimension, got mu1 \(3,\) and mu2 \(4,\)"),
        ((np.zeros(3), np.eye(3), np.zeros(3), np.ones((3, 4))), r"sigma2 must be a square matrix \(3, 3\).*got \(3, 4\)"),
        ((np.zeros((3, 1)), np.eye(3), np.zeros(3), np.eye(3)), r"mu1 must be a vector \(k,\), got shape \(3, 1\)"),
        ((np.zeros(2), np.array([[1.0, 0.5], [0.0, 1.0]]), np.zeros(2), np.eye(2)), "sigma1 must be symmetric"),
        ((np.zeros(2), np.eye(2), np.zeros(2), np.diag([1.0, -1.0])), "sigma2 must be positive semi-definite"),
        ((np.zeros(2), np.eye(2) * np.nan, np.zeros(2), np.eye(2)), "must be finite"),
    ],
)
def test_frechet_rejects_bad_statistics(args, message):
    with pytest.raises(ValueError, match=message):
        fid.frechet_distance(*args)


def test_feature_statistics_and_the_streaming_accumulator_match_numpy():
    rng = np.random.default_rng(1)
    features = rng.normal(size=(103, 7)) @ rng.normal(size=(7, 7)) + 1e4  # a large offset: no E[xxᵀ] − μμᵀ cancellation
    mu, sigma = fid.feature_statistics(features.astype(np.float32))
    np.testing.assert_allclose(mu, features.astype(np.float32).astype(np.float64).mean(0), rtol=1e-12)
    np.testing.assert_allclose(sigma, np.cov(features.astype(np.float32).astype(np.float64), rowvar=False), rtol=1e-9)
    stats = fid.RunningStatistics.empty(7)
    for chunk in np.split(features, [1, 40, 40, 97]):  # a chunk of one, an empty one
        stats = stats.update(chunk)
    streamed_mu, streamed_sigma = stats.statistics()
    assert stats.samples == 103
    np.testing.assert_allclose(streamed_mu, features.mean(0), rtol=1e-12)
    np.testing.assert_allclose(streamed_sigma, np.cov(features, rowvar=False), rtol=1e-9, atol=1e-9)
    with pytest.raises(ValueError, match=r"features must be \(m, 7\), got shape \(3, 6\)"):
        stats.update(np.zeros((3, 6)))
    with pytest.raises(ValueError, match="at least 2 samples, got 1"):
        fid.RunningStatistics.empty(7).update(features[:1]).statistics()
    with pytest.raises(ValueError, match=r"n >= 2, got shape \(1, 7\)"):
        fid.feature_statistics(features[:1])


def test_statistics_files_round_trip(tmp_path):
    rng = np.random.default_rng(2)
    mu, sigma = rng.normal(size=4), random_spd(rng, 4)
    fid.save_statistics(tmp_path / "ref.npz", mu, sigma, count=9)
    loaded_mu, loaded_sigma = fid.load_statistics(tmp_path / "ref.npz")
    np.testing.assert_array_equal(loaded_mu, mu)
    np.testing.assert_array_equal(loaded_sigma, sigma)
    np.savez(tmp_path / "bad.npz", mean=mu)
    with pytest.raises(ValueError, match="must hold arrays 'mu' and 'sigma', got \\['mean'\\]"):
        fid.load_statistics(tmp_path / "bad.npz")


# ----- the Inception network -----

TORCHVISION_INCEPTION_V3_PARAMETERS = 27_161_264  # torchvision's published count, with the aux head and a 1000-way fc
AUX_HEAD = (768 * 128 + 2 * 128) + (128 * 768 * 25 + 2 * 768) + (768 * 1000 + 1000)  # conv0+bn, conv1+bn, fc
FC = 2048 * 1000 + 1000


def test_variable_tree_has_the_fid_inception_layers_and_parameter_count():
    shapes = inception.inception_variable_shapes()
    params = {name: s.shape for name, s in shapes.items() if name.startswith("params/")}
    assert sum(int(np.prod(shape)) for shape in params.values()) == TORCHVISION_INCEPTION_V3_PARAMETERS - AUX_HEAD - FC
    layers = {name.rsplit("/", 2)[0] for name in params}
    assert len(layers) == 94  # 5 stem + 3·7 (A) + 4 (B) + 4·10 (C) + 6 (D) + 2·9 (E) conv+BN layers
    assert params["params/Conv2d_1a_3x3/conv/kernel"] == (3, 3, 3, 32)
    assert params["params/Mixed_6b/branch7x7_2/conv/kernel"] == (1, 7, 128, 128)
    assert params["params/Mixed_7c/branch_pool/conv/kernel"] == (1, 1, 2048, 192)
    assert shapes["batch_stats/Mixed_5b/branch_pool/bn/var"].shape == (32,)


def random_variables(seed=0):
    """He-scaled random kernels and random positive BatchNorm statistics, so activations stay O(1) over 94 layers."""
    rng = np.random.default_rng(seed)
    flat = {}
    for name, shape in inception.inception_variable_shapes().items():
        if name.endswith("/kernel"):
            flat[name] = rng.normal(size=shape.shape) * np.sqrt(2.0 / np.prod(shape.shape[:3]))
        elif name.endswith("/var"):
            flat[name] = rng.uniform(0.5, 2.0, size=shape.shape)
        else:  # scale, bias, mean
            flat[name] = rng.normal(1.0 if name.endswith("/scale") else 0.0, 0.1, size=shape.shape)
    return traverse_util.unflatten_dict({name: value.astype(np.float32) for name, value in flat.items()}, sep="/")


@pytest.fixture(scope="module")
def variables():
    return jax.tree.map(jax.numpy.asarray, random_variables())  # device arrays, as loaded: one jit cache entry per shape


def test_features_are_2048_per_image_and_batching_padding_grey_and_uint8_agree(variables):
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, size=(2, 21, 17), dtype=np.uint8)  # grey, not square, smaller than 299
    one_by_one = inception.inception_features(variables, images, batch_size=1)
    assert one_by_one.shape == (2, inception.FEATURES) and one_by_one.dtype == np.float32
    assert np.isfinite(one_by_one).all() and (one_by_one >= 0).all() and one_by_one.std() > 0  # means of ReLUs
    assert not np.allclose(one_by_one[0], one_by_one[1], rtol=1e-3)
    padded = inception.inception_features(variables, images[:1], batch_size=2)  # one image and one of padding
    np.testing.assert_allclose(padded, one_by_one[:1], rtol=1e-4, atol=1e-5)
    rgb_float = np.repeat(images[..., None], 3, axis=-1).astype(np.float32) / 255.0
    np.testing.assert_allclose(inception.inception_features(variables, rgb_float, batch_size=2), one_by_one, rtol=1e-4, atol=1e-5)


def test_preprocess_matches_torch_bilinear_interpolation_without_antialiasing():
    """The oracle: ``F.interpolate(align_corners=False)``'s formula — src = (dst + ½)·in/out − ½, clamped at 0 — in NumPy."""

    def torch_bilinear_axis(x, axis, size):
        n = x.shape[axis]
        src = np.maximum((np.arange(size) + 0.5) * n / size - 0.5, 0.0)
        low = np.minimum(np.floor(src).astype(int), n - 1)
        high, frac = np.minimum(low + 1, n - 1), src - low
        shape = [1] * x.ndim
        shape[axis] = size
        return np.take(x, low, axis) * (1 - frac).reshape(shape) + np.take(x, high, axis) * frac.reshape(shape)

    rng = np.random.default_rng(4)
    for height, width in ((5, 8), (613, 450)):  # up-sampling, and down-sampling (where antialiasing would differ)
        images = rng.uniform(size=(1, height, width, 3)).astype(np.float32)
        expected = 2 * torch_bilinear_axis(torch_bilinear_axis(images.astype(np.float64), 1, 299), 2, 299) - 1
        # float32 sample positions round to ~5e-5 (torch's float32 kernel too); a wrong kernel or grid is off by O(0.1).
        np.testing.assert_allclose(np.asarray(inception.preprocess(images)), expected, atol=3e-4)
        antialiased = jax.image.resize(2 * images - 1, (1, 299, 299, 3), "bilinear", antialias=True)
        assert np.abs(np.asarray(antialiased) - expected).max() > (1e-2 if height > 299 else 0.0)


def test_fid_pooling_variants():
    """TF's 3×3 average pool counts real pixels only; E_2's pool branch is a max pool."""
    x = np.arange(16.0).reshape(1, 4, 4, 1)
    corner = np.asarray(inception._avg_pool_3x3(x))[0, 0, 0, 0]
    assert corner == pytest.approx(np.mean([0, 1, 4, 5]))  # 4 real pixels, not 9 with zeros
    assert np.asarray(inception._max_pool_3x3(-x))[0, 3, 3, 0] == -10.0  # padding is -inf, not 0
    assert np.asarray(inception._max_pool_3x3(x, stride=2)).shape == (1, 1, 1, 1)  # VALID, as torch's MaxPool2d(3, 2)


def test_input_checks_name_the_problem(variables):
    with pytest.raises(ValueError, match=r"images must be \(n, h, w\).*got shape \(2, 8, 8, 4\)"):
        inception.inception_features(variables, np.zeros((2, 8, 8, 4), np.uint8))
    with pytest.raises(ValueError, match=r"float images must lie in \[0, 1\].*\[-1, 1\]"):
        inception.inception_features(variables, np.linspace(-1, 1, 2 * 64 * 3).reshape(2, 8, 8, 3))
    with pytest.raises(TypeError, match="got dtype int64"):
        inception.inception_features(variables, np.zeros((2, 8, 8, 3), np.int64))


# ----- weights: file format, missing file, torch converter -----


def test_weights_file_round_trip(tmp_path, variables):
    inception.save_inception_variables(variables, tmp_path / "w.npz")
    loaded = inception.load_inception_variables(tmp_path / "w.npz")
    flat, loaded_flat = (traverse_util.flatten_dict(v, sep="/") for v in (variables, loaded))
    assert flat.keys() == loaded_flat.keys()
    for name, value in flat.items():
        np.testing.assert_array_equal(np.asarray(loaded_flat[name]), value)
    np.savez(tmp_path / "partial.npz", **{k: v for k, v in list(flat.items())[1:]})
    with pytest.raises(ValueError, match="not an FID Inception weights file: missing"):
        inception.load_inception_variables(tmp_path / "partial.npz")


def test_missing_weights_name_the_file_and_the_conversion(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError) as error:
        inception.load_inception_variables(tmp_path / "nope.npz")
    message = str(error.value)
    assert str(tmp_path / "nope.npz") in message and inception.TORCH_WEIGHTS_FILE in message and "convert_torch_weights(" in message
    monkeypatch.setenv("JAXLAB_CACHE", str(tmp_path / "cache"))
    assert inception.default_weights_path() == tmp_path / "cache" / inception.WEIGHTS_FILE
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "cache" / inception.WEIGHTS_FILE)):
        inception.load_inception_variables()


def fake_state_dict(seed=5):
    """What ``torch.load`` gives for pytorch-fid's file, as NumPy: torch names and (out, in, h, w) kernels, the fc, counters."""
    rng = np.random.default_rng(seed)
    leaf = {"conv/kernel": "conv.weight", "bn/scale": "bn.weight", "bn/bias": "bn.bias", "bn/mean": "bn.running_mean", "bn/var": "bn.running_var"}
    state = {"fc.weight": rng.normal(size=(1008, 2048)), "fc.bias": rng.normal(size=1008)}
    for name, shape in inception.inception_variable_shapes().items():
        _, *modules, layer, variable = name.split("/")
        torch_shape = (shape.shape[3], shape.shape[2], shape.shape[0], shape.shape[1]) if variable == "kernel" else shape.shape
        state[".".join([*modules, leaf[f"{layer}/{variable}"]])] = rng.normal(size=torch_shape).astype(np.float32)
        if variable == "var":
            state[".".join([*modules, "bn.num_batches_tracked"])] = np.array(0)
    return state


def test_converter_maps_every_torch_entry_onto_the_flax_tree(tmp_path):
    state = fake_state_dict()
    assert len(state) == 2 + 94 * 6  # fc + 6 entries per conv+BN layer: the layout of pt_inception-2015-12-05
    flat = inception.convert_state_dict(state)
    assert flat.keys() == inception.inception_variable_shapes().keys()
    kernel = state["Mixed_6b.branch7x7_2.conv.weight"]  # (out, in, 1, 7)
    np.testing.assert_array_equal(flat["params/Mixed_6b/branch7x7_2/conv/kernel"][0, 5, 3, 2], kernel[2, 3, 0, 5])
    np.testing.assert_array_equal(flat["batch_stats/Mixed_7c/branch_pool/bn/var"], state["Mixed_7c.branch_pool.bn.running_var"])
    np.testing.assert_array_equal(flat["params/Conv2d_1a_3x3/bn/scale"], state["Conv2d_1a_3x3.bn.weight"])
    fid.save_npz_atomic(tmp_path / "w.npz", flat)  # what convert_torch_weights writes
    assert inception.load_inception_variables(tmp_path / "w.npz")["params"]["Mixed_5b"]["branch1x1"]["conv"]["kernel"].shape == (1, 1, 192, 64)

    with pytest.raises(ValueError, match=r"missing \['Mixed_5b.branch1x1.conv.weight'\] \(1\)"):
        inception.convert_state_dict({k: v for k, v in state.items() if k != "Mixed_5b.branch1x1.conv.weight"})
    with pytest.raises(ValueError, match=r"unexpected \['AuxLogits.fc.weight'\]"):
        inception.convert_state_dict({**state, "AuxLogits.fc.weight": np.zeros((1008, 768))})
    with pytest.raises(ValueError, match="Conv2d_1a_3x3.conv.weight has shape"):
        inception.convert_state_dict({**state, "Conv2d_1a_3x3.conv.weight": np.zeros((32, 3, 5, 5))})


# ----- jaxlab fid-stats -----


def test_fid_stats_command_on_a_folder_and_an_npz(tmp_path, capsys, variables):
    from PIL import Image

    inception.save_inception_variables(variables, tmp_path / "w.npz")
    rng = np.random.default_rng(6)
    images = rng.integers(0, 256, size=(2, 21, 17, 3), dtype=np.uint8)  # the shape compiled above
    (tmp_path / "folder").mkdir()
    for index, image in enumerate(images):
        Image.fromarray(image).save(tmp_path / "folder" / f"{index}.png")
    (tmp_path / "folder" / "notes.txt").write_text("not an image")
    np.savez(tmp_path / "images.npz", images=images)
    weights = ["--weights", str(tmp_path / "w.npz"), "--batch-size", "2"]

    assert run_cli("fid-stats", str(tmp_path / "folder"), str(tmp_path / "a.npz"), *weights) == 0
    assert "of 2 images" in capsys.readouterr().out
    assert run_cli("fid-stats", str(tmp_path / "images.npz"), str(tmp_path / "b.npz"), *weights) == 0
    expected_mu, expected_sigma = fid.feature_statistics(inception.inception_features(variables, images, batch_size=2))
    for name in ("a.npz", "b.npz"):
        mu, sigma = fid.load_statistics(tmp_path / name)
        np.testing.assert_allclose(mu, expected_mu, rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(sigma, expected_sigma, rtol=1e-5, atol=1e-9)
    assert fid.frechet_distance(*fid.load_statistics(tmp_path / "a.npz"), *fid.load_statistics(tmp_path / "b.npz")) < 1e-6


def test_image_batches_of_a_folder_and_an_npz(tmp_path):
    from PIL import Image

    images = np.random.default_rng(7).integers(0, 256, size=(3, 5, 4, 3), dtype=np.uint8)
    for index, image in enumerate(images):
        Image.fromarray(image).save(tmp_path / f"{index}.png")
    Image.fromarray(images[0, :, :, 0]).save(tmp_path / "grey.png")  # "L" mode is read as RGB
    batches = list(fid.image_batches(tmp_path, 2))
    assert [b.shape for b in batches] == [(2, 5, 4, 3), (2, 5, 4, 3)]
    np.testing.assert_array_equal(np.concatenate(batches)[:3], images)  # sorted by name, lossless PNG
    np.testing.assert_array_equal(batches[1][1], np.repeat(images[0, :, :, :1], 3, axis=-1))
    np.savez(tmp_path / "set.npz", images[:, :, :, 0])
    assert [b.shape for b in fid.image_batches(tmp_path / "set.npz", 2)] == [(2, 5, 4), (1, 5, 4)]
    Image.fromarray(np.zeros((6, 4, 3), np.uint8)).save(tmp_path / "z.png")
    with pytest.raises(ValueError, match=r"must share one size; 0.png is \(5, 4, 3\), z.png is \(6, 4, 3\)"):
        list(fid.image_batches(tmp_path, 2))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no image files"):
        list(fid.image_batches(tmp_path / "empty", 2))


def test_fid_stats_command_errors_exit_2_with_the_reason(tmp_path, capsys):
    missing = tmp_path / "no-weights.npz"
    assert run_cli("fid-stats", str(tmp_path), str(tmp_path / "out.npz"), "--weights", str(missing)) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "convert_torch_weights" in err and "Traceback" not in err
    fid.save_npz_atomic(tmp_path / "w.npz", inception.convert_state_dict(fake_state_dict()))
    assert run_cli("fid-stats", str(tmp_path / "missing"), str(tmp_path / "out.npz"), "--weights", str(tmp_path / "w.npz")) == 2
    assert "no image folder or .npz file at" in capsys.readouterr().err
    assert run_cli("fid-stats", str(tmp_path), str(tmp_path / "out.npz"), "--batch-size", "0") == 2
    assert "--batch-size must be positive, got 0" in capsys.readouterr().err
    assert not (tmp_path / "out.npz").exists()
