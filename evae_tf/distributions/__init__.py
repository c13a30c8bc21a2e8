"""The Epanechnikov distribution and the EVAE posterior, as TFP distributions.

The cdf bijector is :mod:`evae_tf.bijectors`.
"""

from evae_tf.distributions.epanechnikov import Epanechnikov, median_of_three
from evae_tf.distributions.evae_posterior import DEFAULT_STEP, EVAEPosterior

__all__ = [
    "DEFAULT_STEP",
    "EVAEPosterior",
    "Epanechnikov",
    "median_of_three",
]
