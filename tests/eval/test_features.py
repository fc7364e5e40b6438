"""The digits feature-Fréchet proxy: the Fréchet formula against scipy, and the cached classifier."""

import numpy as np
import pytest
import scipy.linalg

from jaxlab.data import digits_split
from jaxlab.eval import features


def naive_frechet(x, y):
    """The textbook formula with scipy's general matrix square root."""
    mean_gap = np.sum((x.mean(0) - y.mean(0)) ** 2)
    cov_x, cov_y = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    root = scipy.linalg.sqrtm(cov_x @ cov_y)
    return mean_gap + np.trace(cov_x) + np.trace(cov_y) - 2 * np.trace(root).real


def test_frechet_matches_scipy_and_is_symmetric_and_rotation_invariant():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 6)) @ rng.normal(size=(6, 6))
    y = rng.normal(size=(400, 6)) * 2 + 1
    assert features.frechet_distance(x, y) == pytest.approx(naive_frechet(x, y), rel=1e-6)
    assert features.frechet_distance(x, y) == pytest.approx(features.frechet_distance(y, x), rel=1e-9)
    rotation = np.linalg.qr(rng.normal(size=(6, 6)))[0]
    assert features.frechet_distance(x @ rotation, y @ rotation) == pytest.approx(features.frechet_distance(x, y), rel=1e-6)
    assert abs(features.frechet_distance(x, x)) < 1e-6


def test_frechet_of_shifted_scaled_gaussians_has_its_closed_form():
    """For Σx = a·I, Σy = b·I (exact sample moments), d = ‖Δμ‖² + k(√a − √b)²."""
    rng = np.random.default_rng(1)
    z = rng.normal(size=(300, 4))
    z = (z - z.mean(0)) @ np.linalg.inv(np.linalg.cholesky(np.cov(z, rowvar=False))).T  # sample cov exactly I
    x, y = 2.0 * z, 0.5 * z + np.array([1.0, 0.0, -1.0, 2.0])
    assert features.frechet_distance(x, y) == pytest.approx(6.0 + 4 * (2.0 - 0.5) ** 2, rel=1e-9)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("jaxlab_cache")


def test_classifier_is_trained_once_cached_and_accurate(cache):
    split = digits_split(seed=0)
    predictions = np.asarray(features.classify_digits(split["test_images"], directory=cache))
    assert np.mean(predictions == split["test_labels"]) > 0.9
    files = list(cache.glob("digits_features_v*.npz"))
    assert len(files) == 1
    trained = features.classifier_params(directory=cache)
    features._load_classifier.cache_clear()
    reloaded = features.classifier_params(directory=cache)  # now read from the file
    for name, value in trained.items():
        np.testing.assert_array_equal(reloaded[name], value)


def test_training_is_deterministic():
    recipe = {**features.RECIPE, "steps": 3}
    first, second = features.train_classifier(recipe), features.train_classifier(recipe)
    assert first.keys() == second.keys()
    for name, value in first.items():
        np.testing.assert_array_equal(second[name], value)


def test_proxy_separates_real_digits_from_noise(cache):
    split = digits_split(seed=0)
    real = features.digits_frechet_distance(split["train_images"], split["test_images"], directory=cache)
    noise = np.random.default_rng(2).integers(0, 17, size=(360, 8, 8))
    fake = features.digits_frechet_distance(noise, split["test_images"], directory=cache)
    assert real < 0.1 * fake
    assert features.digits_features(split["test_images"][:5, :, :, None], directory=cache).shape == (5, 64)


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("JAXLAB_CACHE", str(tmp_path / "a"))
    assert features.cache_dir() == tmp_path / "a"
    monkeypatch.delenv("JAXLAB_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert features.cache_dir() == tmp_path / "xdg" / "jaxlab"


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match=r"images must have shape \(n, 8, 8\)"):
        features.digits_features(np.zeros((3, 16, 16)))
    with pytest.raises(ValueError, match="x and y must be"):
        features.frechet_distance(np.zeros((5, 3)), np.zeros((5, 4)))
