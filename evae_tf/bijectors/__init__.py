"""The Epanechnikov cdf as a TFP bijector (TFP keeps bijectors apart from distributions).

``TransformedDistribution(Uniform(0, 1), Invert(EpanechnikovCDF()))`` is the standard kernel.
"""

from evae_tf.bijectors.epanechnikov_cdf import EpanechnikovCDF

__all__ = ["EpanechnikovCDF"]
