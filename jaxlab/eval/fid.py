"""The Fréchet Inception Distance's statistic: Gaussian moments of features and the Fréchet distance between them.

FID fits a Gaussian to the Inception pool-3 features of each image set and
reports the Fréchet (2-Wasserstein) distance between the two Gaussians,

    d² = ‖μ₁ − μ₂‖² + tr Σ₁ + tr Σ₂ − 2·tr (Σ₁ Σ₂)^{1/2}.

The feature network lives in :mod:`jaxlab.eval.inception`; this module is
the statistic alone, so it serves any feature map (the digits proxy of
:mod:`jaxlab.eval.features` reuses it). It also reads image sets (a folder
of image files or an ``.npz``) in batches and saves/loads the statistics as
``.npz`` files with ``mu`` and ``sigma`` — the reference statistics that
``jaxlab fid-stats`` writes once per data set.

Precision: everything here is float64 NumPy on the host. The term
tr (Σ₁ Σ₂)^{1/2} is a sum of square roots of k eigenvalues, most of them
near zero for 2048-d features (Σ is rank-deficient when n < k, and nearly so
beyond); an eigensolver leaves each near-zero eigenvalue with an error of
about eps·‖Σ₁Σ₂‖, which the square root turns into √(eps·‖Σ₁Σ₂‖). Summed
over k = 2048 eigenvalues that is O(1) in float32 (eps ≈ 6e-8) — the size of
the FID gaps people report — and O(1e-4) in float64. One 2048² eigh in
float64 takes about a second on a CPU, once per evaluation.

References:
  Heusel, Ramsauer, Unterthiner, Nessler, Hochreiter 2017, "GANs Trained by
  a Two Time-Scale Update Rule Converge to a Local Nash Equilibrium",
  arXiv:1706.08500 (FID).
  Dowson, Landau 1982, "The Fréchet distance between multivariate normal
  distributions" (the closed form).
  Chan, Golub, LeVeque 1979, "Updating formulae and a pairwise algorithm for
  computing sample variances" (the streaming merge).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
_SYMMETRY_TOLERANCE = 1e-4  # relative to max |Σ|: float32 covariances are symmetric to ~1e-6, a wrong matrix is off by O(1)
_PSD_TOLERANCE = 1e-3  # relative to the largest eigenvalue: rounding gives ~k·eps, a non-covariance O(1)


def _check_statistics(mu, sigma, name: str) -> tuple[np.ndarray, np.ndarray]:
    mu, sigma = np.asarray(mu, np.float64), np.asarray(sigma, np.float64)
    if mu.ndim != 1:
        raise ValueError(f"mu{name} must be a vector (k,), got shape {mu.shape}")
    if sigma.shape != (mu.shape[0], mu.shape[0]):
        raise ValueError(f"sigma{name} must be a square matrix ({mu.shape[0]}, {mu.shape[0]}) matching mu{name} {mu.shape}, got {sigma.shape}")
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise ValueError(f"mu{name} and sigma{name} must be finite")
    asymmetry, scale = np.max(np.abs(sigma - sigma.T), initial=0.0), np.max(np.abs(sigma), initial=0.0)
    if asymmetry > _SYMMETRY_TOLERANCE * scale:
        raise ValueError(f"sigma{name} must be symmetric (a covariance), got max |sigma - sigma.T| = {asymmetry:.3g} for max |sigma| = {scale:.3g}")
    return mu, (sigma + sigma.T) / 2


def _psd_eigenvalues(values: np.ndarray, what: str) -> np.ndarray:
    """``values`` with rounding-level negatives set to 0; clearly negative ones are an error."""
    if values.size and values.min() < -_PSD_TOLERANCE * max(np.abs(values).max(), np.finfo(np.float64).tiny):
        raise ValueError(f"{what} must be positive semi-definite (a covariance), got eigenvalue {values.min():.3g} (largest {values.max():.3g})")
    return np.clip(values, 0.0, None)


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2): FID when the moments are Inception features'.

    ‖μ₁ − μ₂‖² + tr Σ₁ + tr Σ₂ − 2·tr (Σ₁^{1/2} Σ₂ Σ₁^{1/2})^{1/2}: the
    symmetric form has the same eigenvalues as Σ₁Σ₂ and needs only
    symmetric eigendecompositions (real, no complex ``sqrtm``). float64 on
    the host (see the module docstring for why not float32).

    Args:
      mu1, mu2: means (k,).
      sigma1, sigma2: covariances (k, k), symmetric positive semi-definite.

    Returns:
      The squared Fréchet distance d² ≥ 0 (FID is reported as this d²).

    Raises:
      ValueError: on shapes that do not match, a non-square, non-symmetric,
        non-finite or clearly indefinite covariance.

    References:
      Heusel et al. 2017, arXiv:1706.08500; Dowson, Landau 1982.
    """
    mu1, sigma1 = _check_statistics(mu1, sigma1, "1")
    mu2, sigma2 = _check_statistics(mu2, sigma2, "2")
    if mu1.shape != mu2.shape:
        raise ValueError(f"the two Gaussians must have the same dimension, got mu1 {mu1.shape} and mu2 {mu2.shape}")
    values, vectors = np.linalg.eigh(sigma1)
    root1 = (vectors * np.sqrt(_psd_eigenvalues(values, "sigma1"))) @ vectors.T
    cross = np.linalg.eigvalsh(root1 @ sigma2 @ root1)  # PSD exactly when sigma2 is (on sigma1's range)
    trace_root = np.sum(np.sqrt(_psd_eigenvalues(cross, "sigma2")))
    distance = np.sum(np.square(mu1 - mu2)) + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_root
    return float(max(distance, 0.0))  # a true d² is ≥ 0; rounding can leave -1e-12 for equal inputs


def feature_statistics(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean (k,) and unbiased covariance (k, k) of features (n, k), n ≥ 2, in float64."""
    features = np.asarray(features, np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"features must be (n, k) with n >= 2, got shape {features.shape}")
    return features.mean(axis=0), np.cov(features, rowvar=False).reshape(features.shape[1], features.shape[1])


class RunningStatistics(NamedTuple):
    """Mean and covariance of features arriving in chunks (immutable; ``update`` returns a new one).

    Chunks are merged with Chan et al.'s pairwise update of the mean and the
    centred scatter matrix, in float64, so N samples need O(k²) memory and no
    E[xxᵀ] − μμᵀ cancellation. ``RunningStatistics.empty(k).update(a).update(b)``
    equals :func:`feature_statistics` of ``concatenate([a, b])``.
    """

    samples: int
    mean: np.ndarray  # (k,)
    scatter: np.ndarray  # (k, k): Σᵢ (xᵢ − mean)(xᵢ − mean)ᵀ

    @classmethod
    def empty(cls, dim: int) -> RunningStatistics:
        if dim < 1:
            raise ValueError(f"dim must be a positive int, got {dim}")
        return cls(0, np.zeros(dim), np.zeros((dim, dim)))

    def update(self, features) -> RunningStatistics:
        """Adds a chunk of features (m, k)."""
        features = np.asarray(features, np.float64)
        if features.ndim != 2 or features.shape[1] != self.mean.shape[0]:
            raise ValueError(f"features must be (m, {self.mean.shape[0]}), got shape {features.shape}")
        if features.shape[0] == 0:
            return self
        count = features.shape[0]
        mean = features.mean(axis=0)
        centred = features - mean
        total = self.samples + count
        delta = mean - self.mean
        merged_mean = self.mean + delta * (count / total)
        merged_scatter = self.scatter + centred.T @ centred + np.outer(delta, delta) * (self.samples * count / total)
        return RunningStatistics(total, merged_mean, merged_scatter)

    def statistics(self) -> tuple[np.ndarray, np.ndarray]:
        """(mu (k,), sigma (k, k)), the unbiased covariance as :func:`feature_statistics` gives it."""
        if self.samples < 2:
            raise ValueError(f"statistics need at least 2 samples, got {self.samples}")
        return self.mean.copy(), self.scatter / (self.samples - 1)


def save_npz_atomic(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> None:
    """Writes ``arrays`` to ``path`` as ``.npz`` through a temporary file and a rename: never a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            np.savez(file, **arrays)  # type: ignore[arg-type]  # mypy also matches **arrays against savez's allow_pickle: bool
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_statistics(path: str | os.PathLike, mu, sigma, *, count: int | None = None) -> None:
    """Saves FID statistics as ``.npz`` with ``mu`` (k,) and ``sigma`` (k, k) (and ``count`` if given), atomically."""
    mu, sigma = _check_statistics(mu, sigma, "")
    save_npz_atomic(path, {"mu": mu, "sigma": sigma, **({} if count is None else {"count": np.asarray(count)})})


def load_statistics(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """(mu, sigma) from an ``.npz`` written by :func:`save_statistics` (or pytorch-fid's ``--save-stats``)."""
    with np.load(path) as archive:
        if not {"mu", "sigma"} <= set(archive.files):
            raise ValueError(f"{path} must hold arrays 'mu' and 'sigma', got {sorted(archive.files)}")
        return _check_statistics(archive["mu"], archive["sigma"], "")


def _npz_images(path: Path) -> np.ndarray:
    with np.load(path) as archive:
        names = ["images"] if "images" in archive.files else archive.files
        if len(names) != 1:
            raise ValueError(f"{path} must hold one array, or one named 'images', got {sorted(archive.files)}")
        return archive[names[0]]


def _read_image(path: Path) -> np.ndarray:
    from PIL import Image  # matplotlib's dependency; only this reader needs it

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))  # (h, w, 3) uint8, as pytorch-fid reads files


def image_batches(source: str | os.PathLike, batch_size: int) -> Iterator[np.ndarray]:
    """Batches (≤ batch_size, h, w[, c]) of the images of a folder or an ``.npz``, read lazily.

    A folder's image files (``IMAGE_SUFFIXES``, sorted by name) are read as
    RGB uint8 and must share one size; an ``.npz`` holds one array (or one
    named ``images``) of uint8 images (n, h, w), (n, h, w, 1) or (n, h, w, 3).

    Raises:
      FileNotFoundError: no such folder or file, or a folder without images.
      ValueError: images of different sizes in a folder; a bad ``.npz``.
    """
    source = Path(source)
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size}")
    if source.is_file():
        images = _npz_images(source)
        for start in range(0, images.shape[0], batch_size):
            yield images[start : start + batch_size]
        return
    if not source.is_dir():
        raise FileNotFoundError(f"no image folder or .npz file at {source}")
    files = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"{source} holds no image files ({', '.join(IMAGE_SUFFIXES)})")
    first = _read_image(files[0]).shape
    for start in range(0, len(files), batch_size):
        batch = []
        for file in files[start : start + batch_size]:
            image = _read_image(file)
            if image.shape != first:
                raise ValueError(f"images in {source} must share one size; {files[0].name} is {first}, {file.name} is {image.shape}")
            batch.append(image)
        yield np.stack(batch)
