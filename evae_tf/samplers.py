"""Latent samplers: where generated images come from.

A latent sampler draws ``z`` for the decoder. Two kinds:

* the paper's prior (EVAE ``Unif[-B_prior/2, B_prior/2]^d``, VAE ``N(0, I)``): the
  model's own ``sample_prior``, asked for with ``model.generate(n, sampler="prior")``;
* :class:`GaussianMixtureSampler` — an *ex-post* density of the aggregate posterior
  (Ghosh et al. 2020, "From Variational to Deterministic Autoencoders"): encode the
  training set, draw one ``z`` from each example's posterior, fit a Gaussian mixture
  to those draws (:func:`fit_gaussian_mixture`, scikit-learn's EM), and sample it.

Why the ex-post sampler is the default for generation (docs/math.md, 'Ex-post
sampling: how images are generated'): the EVAE penalty ``3B/(5nr)`` has no term in ``mu``, so nothing pulls the
posterior means into the prior's box; with learned ``B`` the box shrinks to its floor and
prior draws decode to a single image.

Sampling runs as stateless TensorFlow ops, so the same seed gives the same latents in
this process and inside an exported SavedModel::

    sampler = fit_gaussian_mixture(z_train, n_components=10)   # z_train: [N, d]
    z = sampler.sample(16, seed=0)                                # [16, d], float32
    sampler.save("run/expost_sampler.npz")
    GaussianMixtureSampler.load("run/expost_sampler.npz").sample(16, seed=0)  # same z
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
import warnings
import zipfile
from collections.abc import Mapping
from typing import Any

import numpy as np
import tensorflow as tf

from evae_tf import data as data_lib
from evae_tf.config import COVARIANCE_TYPES
from evae_tf.files import replace_atomic

log = logging.getLogger(__name__)

FORMAT = "evae_tf.gaussian_mixture/1"


class SamplerError(ValueError):
    """A sampler cannot be fitted, built or loaded; the message says why in one line."""


def seed_pair(seed) -> tf.Tensor:
    """A stateless seed ``[seed, 0]`` from an int, or a ``[2]`` seed tensor as is."""
    if isinstance(seed, (int, np.integer)):
        return tf.constant([int(seed), 0], tf.int64)
    return tf.convert_to_tensor(seed)


class GaussianMixtureSampler:
    """``z ~ sum_k w_k N(m_k, S_k)``, sampled with stateless TensorFlow ops.

    Args:
      weights: ``[K]`` mixing weights, positive, summing to 1.
      means: ``[K, d]`` component means.
      covariances: ``[K, d, d]`` symmetric positive-definite covariances.
      fit_info: JSON-able facts of how it was fitted (kept in files and exports).
    """

    name = "gaussian_mixture"

    def __init__(self, weights, means, covariances, fit_info: Mapping[str, Any] | None = None):
        weights, means, covariances = (np.asarray(a, np.float64) for a in (weights, means, covariances))
        _check_parameters(weights, means, covariances)
        self.weights, self.means, self.covariances = weights, means, covariances
        self.fit_info = dict(fit_info or {})
        # Sampling uses S_k = L_k L_k^T: z = m_k + L_k eps with eps ~ N(0, I).
        self._log_weights = tf.constant(np.log(weights), tf.float32)
        self._means = tf.constant(means, tf.float32)
        self._scale_tril = tf.constant(np.linalg.cholesky(covariances), tf.float32)

    @property
    def n_components(self) -> int:
        return int(self.weights.shape[0])

    @property
    def latent_dim(self) -> int:
        return int(self.means.shape[1])

    def draw(self, num_samples, seed) -> tf.Tensor:
        """``[num_samples, d]`` draws; ``seed`` is a ``[2]`` int32/int64 stateless seed.

        One seed is split in two: one picks the component ``k ~ Categorical(w)``, the
        other draws ``eps ~ N(0, I)``; then ``z = m_k + L_k eps``.
        """
        # int64 always: TF's seed splitting gives other streams for int32 seeds.
        seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=2)
        k = tf.random.stateless_categorical(self._log_weights[None], num_samples, seed=seeds[0])[0]
        eps = tf.random.stateless_normal(tf.stack([num_samples, self.latent_dim]), seed=seeds[1])
        return tf.gather(self._means, k) + tf.einsum("nij,nj->ni", tf.gather(self._scale_tril, k), eps)

    def sample(self, num_samples: int, seed=None) -> tf.Tensor:
        """``num_samples`` latents; ``seed`` an int or a ``[2]`` seed (``None``: fresh)."""
        if seed is None:
            seed = tf.random.uniform([2], maxval=2**31 - 1, dtype=tf.int64)
        return self.draw(num_samples, seed_pair(seed))

    def moments(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean ``sum_k w_k m_k`` and covariance ``sum_k w_k (S_k + m_k m_k^T) - m m^T``."""
        mean = self.weights @ self.means
        second = np.einsum("k,kij->ij", self.weights, self.covariances)
        second += np.einsum("k,ki,kj->ij", self.weights, self.means, self.means)
        return mean, second - np.outer(mean, mean)

    def spec(self) -> dict[str, Any]:
        return {"kind": self.name, "n_components": self.n_components, "latent_dim": self.latent_dim,
                **self.fit_info}

    def save(self, path: str | os.PathLike) -> None:
        """Writes one ``.npz`` file atomically (a temporary file renamed into place)."""
        meta = json.dumps({"format": FORMAT, "fit_info": self.fit_info})

        def write(tmp):
            with open(tmp, "wb") as f:
                np.savez(f, weights=self.weights, means=self.means, covariances=self.covariances,
                         meta=np.array(meta))

        replace_atomic(path, write)

    @classmethod
    def load(cls, path: str | os.PathLike) -> GaussianMixtureSampler:
        """Reads a file :meth:`save` wrote; a missing or damaged file is a ``SamplerError``."""
        try:
            with np.load(path, allow_pickle=False) as f:
                arrays = {k: f[k] for k in ("weights", "means", "covariances", "meta")}
            meta = json.loads(str(arrays.pop("meta")))
        except FileNotFoundError:
            raise SamplerError(f"{path} does not exist") from None
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as e:
            raise SamplerError(f"{path} is not a readable sampler file ({_one_line(e)})") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise SamplerError(f"{path} is not a sampler file of format {FORMAT!r}")
        try:
            return cls(**arrays, fit_info=meta.get("fit_info"))
        except SamplerError as e:
            raise SamplerError(f"{path} holds an invalid mixture: {e}") from None


def _check_parameters(weights, means, covariances) -> None:
    if weights.ndim != 1 or means.ndim != 2 or covariances.ndim != 3:
        raise SamplerError(f"expected weights [K], means [K, d], covariances [K, d, d]; received "
                           f"shapes {weights.shape}, {means.shape}, {covariances.shape}")
    k, d = means.shape
    if weights.shape[0] != k or covariances.shape != (k, d, d) or k == 0 or d == 0:
        raise SamplerError(f"inconsistent mixture shapes: weights {weights.shape}, means {means.shape}, "
                           f"covariances {covariances.shape}")
    if not all(np.isfinite(a).all() for a in (weights, means, covariances)):
        raise SamplerError("mixture parameters must be finite")
    if (weights <= 0).any() or not math.isclose(weights.sum(), 1.0, rel_tol=0, abs_tol=1e-6):
        raise SamplerError(f"weights must be positive and sum to 1; received sum {weights.sum():.6g}, "
                           f"min {weights.min():.3g}")
    if not np.allclose(covariances, np.swapaxes(covariances, 1, 2), rtol=1e-6, atol=1e-12):
        raise SamplerError("covariances must be symmetric")
    try:
        np.linalg.cholesky(covariances)
    except np.linalg.LinAlgError:
        raise SamplerError("a covariance is not positive definite (a degenerate component)") from None


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


# --- fitting -------------------------------------------------------------------------------


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
            raise SamplerError(f"the mixture fit failed: {_one_line(e)}") from None
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
        draws.append(encode_and_draw(x, tf.constant([seed + i, 0], tf.int32)).numpy())
        bar.update(i + 1)
    return np.concatenate(draws)



# --- runs ----------------------------------------------------------------------------------

FIT_BATCH_SIZE = 500  # images per encoder call while fitting (memory, not results)


def fit_expost(model, config, *, n_components: int = 10, covariance_type: str = "full",
               seed: int | None = None, data_dir=None, progress: bool = True,
               fit_info: Mapping[str, Any] | None = None) -> GaussianMixtureSampler:
    """Fits the ex-post mixture of ``model`` to its run's training split.

    ``config`` is the run's ``TrainConfig`` (dataset, data directory, seed). Logs a
    progress bar while encoding and one line for the fit.
    """
    seed = config.seed if seed is None else seed
    check_fit_arguments(n_components, covariance_type)  # before the encoding pass
    ds = data_lib.load(config.dataset, "train", batch_size=FIT_BATCH_SIZE,
                       data_dir=data_dir or config.data_dir)
    log.info("Ex-post sampler: encoding the %s training split", config.dataset)
    z = aggregate_posterior(model, ds, seed=seed, progress=progress)
    log.info("Ex-post sampler: fitting a %d-component %s-covariance Gaussian mixture to %d latents",
             n_components, covariance_type, len(z))
    sampler = fit_gaussian_mixture(z, n_components, covariance_type, seed=seed,
                                   fit_info={"dataset": config.dataset, "split": "train", **(fit_info or {})})
    info = sampler.fit_info
    log.info("Ex-post sampler: done in %.1f s (%s after %d EM iterations; mean log-likelihood %.2f)",
             info["fit_seconds"], "converged" if info["converged"] else "not converged",
             info["iterations"], info["mean_log_likelihood"])
    return sampler
