"""The `EpanechnikovCDF` bijector and the standard Epanechnikov cdf / quantile."""

import math

import tensorflow as tf
from tensorflow_probability.python.bijectors import bijector
from tensorflow_probability.python.internal import assert_util, distribution_util

__all__ = [
    "EpanechnikovCDF",
    "standard_cdf",
    "standard_quantile",
    "standard_survival",
]


def standard_cdf(t):
    """`F(t) = 1/2 + 3t/4 - t^3/4` for `t` in `[-1, 1]` (not clipped).

    Evaluated in the factored form `(1 + t)^2 (2 - t) / 4`, which keeps full
    relative precision in the left tail.
    """
    return tf.square(1.0 + t) * (2.0 - t) / 4.0


def standard_survival(t):
    """`1 - F(t) = (1 - t)^2 (2 + t) / 4` for `t` in `[-1, 1]` (not clipped)."""
    return tf.square(1.0 - t) * (2.0 + t) / 4.0


def standard_quantile(p):
    """Inverse of `F` on `[0, 1]`: `t = 2 sin(asin(2p - 1) / 3)`.

    In the tails (`p < 1/4` or `p > 3/4`) the same closed form is evaluated
    through `asin(2p - 1) = -+(pi/2 - 2 asin(sqrt(s)))` with `s = min(p, 1 - p)`,
    which avoids rounding `2p - 1` towards `-+1` (where `asin` has infinite
    slope) and makes the endpoints exact: `p = 0 -> -1`, `1/2 -> 0`, `1 -> 1`.
    """
    tail = tf.minimum(p, 1.0 - p)
    angle = 2.0 / 3.0 * tf.asin(tf.sqrt(tail))
    # 2 sin(angle - pi/6), the quantile of `tail`, which is <= 1/2.
    lower = math.sqrt(3.0) * tf.sin(angle) - tf.cos(angle)
    centre = 2.0 * tf.sin(tf.asin(2.0 * p - 1.0) / 3.0)
    return tf.where(
        tail >= 0.25,
        centre,
        tf.where(p < 0.5, lower, -lower),
    )


class EpanechnikovCDF(bijector.AutoCompositeTensorBijector):
    """Compute `Y = g(X) = 1/2 + 3X/4 - X^3/4`, `X` in `[-1, 1]`.

    This bijector maps `[-1, 1]` onto `[0, 1]` by the cdf `F` of the standard
    Epanechnikov kernel `K(t) = 3/4 (1 - t^2)`. Its inverse is the closed-form
    quantile `F^{-1}(p) = 2 sin(asin(2p - 1) / 3)`, so the inverse of this
    bijector applied to `U ~ Uniform(0, 1)` is standard Epanechnikov:

    ```none
    X = F^{-1}(U) ~ Epanechnikov(0, 1)
    pdf(x) = 3/4 (1 - x^2),  -1 <= x <= 1
    log|dY/dX| = log K(x) = log(3/4) + log1p(-x) + log1p(x)
    ```

    #### Examples

    ```python
    tfd = tfp.distributions
    tfb = tfp.bijectors
    dist = tfd.TransformedDistribution(
        tfd.Uniform(0., 1.), tfb.Invert(EpanechnikovCDF()))
    dist.sample(10, seed=(0, 1))  # Shape [10], values in [-1, 1]
    EpanechnikovCDF().forward([-1., 0., 1.])  # ==> [0., 0.5, 1.]
    ```
    """

    def __init__(self, validate_args=False, name="epanechnikov_cdf"):
        """Instantiates the `EpanechnikovCDF` bijector.

        Args:
          validate_args: Python `bool` indicating whether arguments should be
            checked for correctness (forward inputs in `[-1, 1]`, inverse
            inputs in `[0, 1]`).
          name: Python `str` name given to ops managed by this object.
        """
        parameters = dict(locals())
        with tf.name_scope(name) as name:
            super().__init__(
                forward_min_event_ndims=0,
                validate_args=validate_args,
                parameters=parameters,
                name=name,
            )

    @classmethod
    def _parameter_properties(cls, dtype):
        return dict()

    @classmethod
    def _is_increasing(cls):
        return True

    def _forward(self, x):
        x = self._maybe_assert_in_interval(x, -1.0, 1.0)
        return standard_cdf(x)

    def _inverse(self, y):
        y = self._maybe_assert_in_interval(y, 0.0, 1.0)
        return standard_quantile(y)

    def _forward_log_det_jacobian(self, x):
        x = self._maybe_assert_in_interval(x, -1.0, 1.0)
        return math.log(0.75) + tf.math.log1p(-x) + tf.math.log1p(x)

    def _maybe_assert_in_interval(self, x, low, high):
        if not self.validate_args:
            return x
        return distribution_util.with_dependencies(
            [
                assert_util.assert_greater_equal(
                    x, tf.cast(low, x.dtype), message=f"Input must be >= {low}."
                ),
                assert_util.assert_less_equal(
                    x, tf.cast(high, x.dtype), message=f"Input must be <= {high}."
                ),
            ],
            x,
        )
