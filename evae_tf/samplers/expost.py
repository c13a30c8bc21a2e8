"""Ex-post fitting: encode the training set, draw one latent per image, fit a mixture.

:func:`aggregate_posterior` draws ``z ~ q(z | x)`` for every image of a dataset;
:func:`fit_gaussian_mixture` fits scikit-learn's EM to those draws and returns a
:class:`~evae_tf.samplers.GaussianMixtureSampler`. Fitting a *run's* sampler (finding its
training data, saving the file) is :mod:`evae_tf.runs`'.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import tensorflow as tf

from evae_tf.defaults import COVARIANCE_TYPES
from evae_tf.errors import SamplerError, one_line
from evae_tf.samplers.mixture import GaussianMixtureSampler
from evae_tf.samplers.seeds import stateless_seed


def _full_covariances(gmm, covariance_type: str, d: int) -> np.ndarray:
    """scikit-learn's covariances of any type as ``[K, d, d]`` matrices."""
    k = gmm.n_components
    if covariance_type == "full":
        return gmm.covariances_
    if covariance_type == "tied":  # one [d, d] matrix shared by all components
        return np.broadcast_to(gmm.covariances_, (k, d, d)).copy()
    if covariance_type == "diag":  # [K, d] variances
        return np.einsum("ki,ij->kij", gmm.covariances_, np.eye(d))
    return gmm.covariances_[:, None, None] * np.eye(d)  # spherical: [K] variances


def check_fit_arguments(n_components: int, covariance_type: str, n_examples: int | None = None) -> None:
    """One-line ``SamplerError`` for arguments no fit can take."""
    if covariance_type not in COVARIANCE_TYPES:
        raise SamplerError(f"covariance type must be one of {', '.join(COVARIANCE_TYPES)}; "
                           f"received {covariance_type!r}")
    if isinstance(n_components, bool) or not isinstance(n_components, int) or n_components < 1:
        raise SamplerError(f"components must be a positive integer; received {n_components!r}")
    if n_examples is not None and n_components > n_examples:
        raise SamplerError(f"cannot fit {n_components} components to {n_examples} latents: "
                           "use at most as many components as latents")


def fit_gaussian_mixture(z, n_components: int = 10, covariance_type: str = "full", *, seed: int = 0,
                         reg_covar: float = 1e-6, max_iter: int = 200,
                         fit_info: Mapping[str, Any] | None = None) -> GaussianMixtureSampler:
    """Fits a Gaussian mixture to latents ``z`` ``[N, d]`` by EM (scikit-learn).

    ``reg_covar`` is added to every covariance's diagonal, so a dimension the encoder
    does not use (all ``z`` nearly equal there) still gives a positive-definite fit.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import GaussianMixture
    from threadpoolctl import threadpool_limits

    z = np.asarray(z, np.float64)
    if z.ndim != 2 or not np.isfinite(z).all():
        raise SamplerError(f"latents must be a finite [N, d] array; received shape {z.shape}")
    check_fit_arguments(n_components, covariance_type, len(z))
    # k-means++ seeding, without sklearn's default full k-means run first. One BLAS/OpenMP
    # thread: the EM's products are small, and spinning thread pools fight TensorFlow's
    # own (on a loaded 2-core machine: 3.8 s per EM iteration against 15 s with 2 threads).
    gmm = GaussianMixture(n_components, covariance_type=covariance_type, reg_covar=reg_covar,
                          max_iter=max_iter, random_state=seed, init_params="k-means++")
    start = time.perf_counter()
    with warnings.catch_warnings(), threadpool_limits(1):
        warnings.simplefilter("ignore", ConvergenceWarning)
        try:
            gmm.fit(z)
        except ValueError as e:  # ill-defined covariances, too few distinct points
            raise SamplerError(f"the mixture fit failed: {one_line(e)}") from None
    info = {"covariance_type": covariance_type, "n_examples": int(len(z)), "seed": seed,
            "reg_covar": reg_covar, "converged": bool(gmm.converged_), "iterations": int(gmm.n_iter_),
            "mean_log_likelihood": float(gmm.score(z)),
            "fit_seconds": round(time.perf_counter() - start, 2), **dict(fit_info or {})}
    return GaussianMixtureSampler(gmm.weights_ / gmm.weights_.sum(), gmm.means_,
                                  _full_covariances(gmm, covariance_type, z.shape[1]), fit_info=info)


def aggregate_posterior(model, dataset: tf.data.Dataset, *, seed: int = 0, progress: bool = True) -> np.ndarray:
    """One posterior draw ``z ~ q(z | x)`` per image of ``dataset``: ``[N, d]``.

    ``dataset`` yields image batches (or ``(images, ...)`` tuples); batch ``i`` is drawn
    with seed ``seed + i``, so the result is reproducible.
    """
    import keras

    encode_and_draw = tf.function(lambda x, s: model.sample_posterior(model.encode(x), seed=s))
    total = dataset.cardinality().numpy()
    bar = keras.utils.Progbar(total if total > 0 else None, unit_name="batch", verbose=1 if progress else 0)
    draws = []
    for i, batch in enumerate(dataset):
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        draws.append(encode_and_draw(x, stateless_seed(seed + i)).numpy())
        bar.update(i + 1)
    return np.concatenate(draws)
