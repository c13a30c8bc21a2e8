"""Epanechnikov distribution, its cdf bijector and the EVAE posterior (TFP style)."""

from evae_tf.distributions.epanechnikov import Epanechnikov, median_of_three
from evae_tf.distributions.epanechnikov_cdf import EpanechnikovCDF
from evae_tf.distributions.evae_posterior import DEFAULT_STEP, EVAEPosterior

__all__ = [
    "DEFAULT_STEP",
    "EVAEPosterior",
    "Epanechnikov",
    "EpanechnikovCDF",
    "median_of_three",
]
