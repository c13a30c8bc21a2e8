"""The Fréchet distance between Gaussian fits of two sets of features, and FID.

FID (docs/math.md, 'Metrics: sharpness and FID') is :func:`frechet_distance` of the
mean and covariance of a feature network's outputs on real and generated images,
accumulated batch by batch (:class:`GaussianStats`, never the features themselves).
The network (a :class:`FIDNetwork`, see :mod:`evae_tf.evaluation.features`) is named
in every result, because FIDs from different networks are different numbers.

    fid(holdout_batches, reconstruction_batches, network)
    # {"fid": 11.9, "network": "inception2015", "num_images": 10000, ...}
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable
from typing import Any, Protocol, runtime_checkable

import numpy as np
from scipy import linalg

logger = logging.getLogger(__name__)

# Images per side; fewer bias the FID upwards (docs/math.md, 'Metrics: sharpness and FID').
RECOMMENDED_FID_IMAGES = 10_000
IMAGINARY_TOLERANCE = 1e-3


def _sqrtm(matrix: np.ndarray) -> np.ndarray:
    """``scipy.linalg.sqrtm`` without its singular-matrix warning (handled by the caller)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        return linalg.sqrtm(matrix)


def _gaussians(mu1, sigma1, mu2, sigma2) -> tuple[np.ndarray, ...]:
    """The two Gaussians' parameters as float64 arrays, with their shapes and values checked."""
    mu1 = np.atleast_1d(np.asarray(mu1, np.float64))
    mu2 = np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1 = np.atleast_2d(np.asarray(sigma1, np.float64))
    sigma2 = np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.ndim != 1 or mu1.shape != mu2.shape:
        raise ValueError(
            f"The means must be vectors of the same length. Received: mu1.shape={mu1.shape}, "
            f"mu2.shape={mu2.shape}"
        )
    dim = mu1.shape[0]
    for name, sigma in (("sigma1", sigma1), ("sigma2", sigma2)):
        if sigma.shape != (dim, dim):
            raise ValueError(
                f"`{name}` must be [{dim}, {dim}] to match the means. Received: "
                f"{name}.shape={sigma.shape}"
            )
    for name, value in (("mu1", mu1), ("mu2", mu2), ("sigma1", sigma1), ("sigma2", sigma2)):
        if not np.isfinite(value).all():
            raise ValueError(f"`{name}` has non-finite entries.")
    return mu1, sigma1, mu2, sigma2


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """Fréchet distance between ``N(mu1, sigma1)`` and ``N(mu2, sigma2)``.

        d^2 = |mu1 - mu2|^2 + Tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2))

    Computed in float64 with ``scipy.linalg.sqrtm``. When the product is (nearly)
    singular and its root comes out non-finite, ``eps * I`` is added to both
    covariances and the root is taken again (as TTUR and pytorch-fid do). Imaginary
    parts of the root from round-off are dropped; larger ones (``> 1e-3``) raise.

    Args:
      mu1, mu2: means, shape ``[D]``.
      sigma1, sigma2: covariances, shape ``[D, D]``.
      eps: the diagonal offset of the retry.

    Raises:
      ValueError: mismatched or malformed shapes, non-finite inputs, or a root with an
        imaginary part above 1e-3 (the covariances are not positive semi-definite).
    """
    mu1, sigma1, mu2, sigma2 = _gaussians(mu1, sigma1, mu2, sigma2)
    dim = mu1.shape[0]
    diff = mu1 - mu2
    covmean = _sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        logger.warning("Fréchet distance: the covariance product is singular; adding %g to the "
                       "diagonals and retrying.", eps)
        offset = np.eye(dim) * eps
        covmean = _sqrtm((sigma1 + offset) @ (sigma2 + offset))
        if not np.isfinite(covmean).all():
            raise ValueError(
                f"The square root of the covariance product is not finite even with eps={eps} "
                "added to the diagonals."
            )
    if np.iscomplexobj(covmean):
        largest = float(np.abs(covmean.imag).max())
        if largest > IMAGINARY_TOLERANCE:
            raise ValueError(
                f"The square root of the covariance product has an imaginary component of "
                f"{largest:.3g} (> {IMAGINARY_TOLERANCE}): the covariances are not positive "
                "semi-definite."
            )
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


class GaussianStats:
    """Streaming mean and covariance of feature vectors, in float64.

    Keeps the count, the sum and the sum of outer products of the features (each
    shifted by the first batch's mean, which keeps the covariance accurate when the
    mean is large next to the spread), never the features themselves.

    >>> stats = GaussianStats()
    >>> for batch in batches:            # each [B, D]
    ...     stats.update(network(batch))
    >>> stats.mean.shape, stats.covariance.shape   # (D,), (D, D)
    """

    def __init__(self):
        self.count = 0
        self._shift: np.ndarray | None = None
        self._sum: np.ndarray | None = None
        self._outer: np.ndarray | None = None

    @property
    def dim(self) -> int | None:
        return None if self._shift is None else int(self._shift.shape[0])

    def update(self, features) -> GaussianStats:
        """Adds a batch ``[B, D]`` of features; returns ``self``."""
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2:
            raise ValueError(f"`features` must be [batch, dim]. Received: shape={x.shape}")
        if self.dim is not None and x.shape[1] != self.dim:
            raise ValueError(
                f"Features of dimension {x.shape[1]} do not match the earlier {self.dim}."
            )
        if not np.isfinite(x).all():
            raise ValueError("`features` has non-finite entries.")
        if len(x) == 0:
            return self
        if self._shift is None:
            self._shift = x.mean(axis=0)
            self._sum = np.zeros_like(self._shift)
            self._outer = np.zeros((x.shape[1], x.shape[1]))
        centred = x - self._shift
        self._sum += centred.sum(axis=0)
        self._outer += centred.T @ centred
        self.count += len(x)
        return self

    @property
    def mean(self) -> np.ndarray:
        if self.count == 0:
            raise ValueError("No features were added.")
        return self._shift + self._sum / self.count

    @property
    def covariance(self) -> np.ndarray:
        """The unbiased sample covariance (``numpy.cov(features, rowvar=False)``)."""
        if self.count < 2:
            raise ValueError(f"A covariance needs at least 2 feature vectors; have {self.count}.")
        centred_mean = self._sum / self.count
        return (self._outer - self.count * np.outer(centred_mean, centred_mean)) / (self.count - 1)


# --------------------------------------------------------------------------- FID


@runtime_checkable
class FIDNetwork(Protocol):
    """A named feature extractor for FID (:mod:`evae_tf.evaluation.features` has them).

    ``network(images)`` maps a batch ``[B, H, W, C]`` of images in [0, 1] to features
    ``[B, D]`` (a NumPy array). ``name`` goes into every FID it produces;
    ``description`` says in a sentence what the network is.
    """

    name: str
    description: str

    def __call__(self, images) -> np.ndarray: ...


def feature_stats(batches: Iterable, network: FIDNetwork) -> GaussianStats:
    """Streams image batches ``[B, H, W, C]`` in [0, 1] through ``network``."""
    stats = GaussianStats()
    for batch in batches:
        stats.update(network(batch))
    return stats


def fid_from_stats(real: GaussianStats, fake: GaussianStats, network: FIDNetwork | str,
                   *, min_images: int = RECOMMENDED_FID_IMAGES) -> dict[str, Any]:
    """``{"fid", "network", "num_images", "num_real", "num_fake"[, "warning"]}``.

    ``num_images`` is the smaller side. Fewer than ``min_images`` per side logs a
    warning and records it under ``"warning"``: small samples bias FID upwards.
    """
    name = network if isinstance(network, str) else network.name
    result: dict[str, Any] = {
        "fid": frechet_distance(real.mean, real.covariance, fake.mean, fake.covariance),
        "network": name,
        "num_images": min(real.count, fake.count),
        "num_real": real.count,
        "num_fake": fake.count,
    }
    if result["num_images"] < min_images:
        result["warning"] = (
            f"FID from {result['num_images']} images per side (fewer than {min_images:,}): "
            "biased upwards, not comparable with published FIDs"
        )
        logger.warning("%s (network %s).", result["warning"], name)
    return result


def fid(real_batches: Iterable, fake_batches: Iterable, network: FIDNetwork,
        *, min_images: int = RECOMMENDED_FID_IMAGES) -> dict[str, Any]:
    """FID between two streams of image batches ``[B, H, W, C]`` in [0, 1].

    >>> fid(holdout_batches, reconstruction_batches, inception2015("classify_image_graph_def.pb"))
    {'fid': 11.9, 'network': 'inception2015', 'num_images': 10000, ...}
    """
    return fid_from_stats(feature_stats(real_batches, network),
                          feature_stats(fake_batches, network), network, min_images=min_images)
