"""Latent samplers: where generated images come from.

* the paper's priors, :class:`UniformPrior` (EVAE) and :class:`NormalPrior` (VAE), which
  ``model.generate(n, sampler="prior")`` and the exported ``sample_prior`` draw from;
* :class:`GaussianMixtureSampler`, the ex-post density of the aggregate posterior,
  fitted by :func:`aggregate_posterior` then :func:`fit_gaussian_mixture`;
* :func:`stateless_seed`, the one seed helper of every stateless draw.

All sample with stateless TensorFlow ops: the same seed gives the same latents here and
inside an exported SavedModel.
"""

from evae_tf.errors import SamplerError
from evae_tf.samplers.expost import aggregate_posterior, check_fit_arguments, fit_gaussian_mixture
from evae_tf.samplers.mixture import FORMAT, GaussianMixtureSampler
from evae_tf.samplers.prior import NormalPrior, UniformPrior
from evae_tf.samplers.seeds import stateless_seed

__all__ = [
    "FORMAT",
    "GaussianMixtureSampler",
    "NormalPrior",
    "SamplerError",
    "UniformPrior",
    "aggregate_posterior",
    "check_fit_arguments",
    "fit_gaussian_mixture",
    "stateless_seed",
]
