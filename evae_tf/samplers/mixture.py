"""The ex-post latent sampler: a Gaussian mixture over the aggregate posterior.

``z ~ sum_k w_k N(m_k, S_k)``, fitted to one posterior draw per training image
(:func:`evae_tf.samplers.fit_gaussian_mixture`; Ghosh et al. 2020, "From Variational to
Deterministic Autoencoders") and sampled as TFP's ``MixtureSameFamily`` of
``MultivariateNormalTriL`` with stateless seeds, so the same seed gives the same latents in
this process and inside an exported SavedModel::

    sampler = fit_gaussian_mixture(z_train, n_components=10)   # z_train: [N, d]
    z = sampler.sample(16, seed=0)                                # [16, d], float32
    sampler.save("run/expost_sampler.npz")
    GaussianMixtureSampler.load("run/expost_sampler.npz").sample(16, seed=0)  # same z

Why it, and not the paper's prior, generates images: docs/math.md, 'Ex-post sampling: how
images are generated'.
"""

from __future__ import annotations

import json
import math
import os
import zipfile
from collections.abc import Mapping
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from evae_tf.errors import SamplerError, one_line
from evae_tf.files import replace_atomic
from evae_tf.samplers.seeds import stateless_seed

tfd = tfp.distributions

FORMAT = "evae_tf.gaussian_mixture/1"


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
        # S_k = L_k L_k^T; float32 constants, so a traced draw bakes them into the graph.
        self.distribution = tfd.MixtureSameFamily(
            mixture_distribution=tfd.Categorical(logits=tf.constant(np.log(weights), tf.float32)),
            components_distribution=tfd.MultivariateNormalTriL(
                loc=tf.constant(means, tf.float32),
                scale_tril=tf.constant(np.linalg.cholesky(covariances), tf.float32)),
        )

    @property
    def n_components(self) -> int:
        return int(self.weights.shape[0])

    @property
    def latent_dim(self) -> int:
        return int(self.means.shape[1])

    def draw(self, num_samples, seed) -> tf.Tensor:
        """``[num_samples, d]`` float32 draws for a ``[2]`` stateless seed (int32 or int64)."""
        return self.distribution.sample(num_samples, seed=stateless_seed(seed))

    def sample(self, num_samples: int, seed=None) -> tf.Tensor:
        """``num_samples`` latents; ``seed`` an int or a ``[2]`` seed (``None``: fresh)."""
        return self.draw(num_samples, stateless_seed(seed))

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
            raise SamplerError(f"{path} is not a readable sampler file ({one_line(e)})") from None
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
