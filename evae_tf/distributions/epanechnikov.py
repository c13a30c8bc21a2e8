"""The Epanechnikov distribution class."""

import math

import numpy as np
import tensorflow as tf
from tensorflow_probability.python.bijectors import sigmoid as sigmoid_bijector
from tensorflow_probability.python.bijectors import softplus as softplus_bijector
from tensorflow_probability.python.distributions import distribution
from tensorflow_probability.python.internal import (
    assert_util,
    dtype_util,
    parameter_properties,
    reparameterization,
    samplers,
    tensor_util,
)

from evae_tf.bijectors.epanechnikov_cdf import (
    standard_cdf,
    standard_quantile,
    standard_survival,
)
from evae_tf.samplers.seeds import stateless_seed

__all__ = [
    "Epanechnikov",
    "median_of_three",
    "sample_standard",
    "sanitize_seed",
]

# Entropy of the standard kernel: -int K log K = 5/3 - log 3.
_STANDARD_ENTROPY = 5.0 / 3.0 - math.log(3.0)


def median_of_three(u1, u2, u3):
    """Elementwise median of three tensors: `max(min(a, b), min(max(a, b), c))`."""
    return tf.maximum(tf.minimum(u1, u2), tf.minimum(tf.maximum(u1, u2), u3))


def sanitize_seed(seed, salt=None):
    """A stateless `int32[2]` seed from an `int`, a stateless seed or `None`.

    As `tfp.random.sanitize_seed`, except that an `int` or a seed tensor goes through
    `evae_tf.samplers.seeds.stateless_seed` first: a Python `int` is a *stateless* seed
    (as in Keras 3; the same `int` gives the same samples on every call), and an `int64`
    seed (Keras' `SeedGenerator.next()`) is folded into `int32` as Keras does. `None`
    still draws a fresh seed from the global generator.
    """
    if seed is not None:
        seed = stateless_seed(seed)
    return samplers.sanitize_seed(seed, salt=salt)


def sample_standard(shape, dtype, seed):
    """Standard Epanechnikov draws: the median of three `Unif[-1, 1)` draws.

    Algorithm 2 of the EVAE paper; the median of three i.i.d. `Unif[-1, 1]`
    variables has density `3/4 (1 - t^2)` on `[-1, 1]`.

    Args:
      shape: 1-D integer shape of the output.
      dtype: floating dtype of the output.
      seed: a stateless seed (see `sanitize_seed`).

    Returns:
      A `Tensor` of the given shape and dtype.
    """
    u = samplers.uniform(
        tf.concat([[3], shape], axis=0), minval=-1.0, maxval=1.0, dtype=dtype, seed=seed
    )
    return median_of_three(u[0], u[1], u[2])


class Epanechnikov(distribution.AutoCompositeTensorDistribution):
    r"""Epanechnikov distribution with `loc` and `scale` parameters.

    #### Mathematical Details

    The Epanechnikov (parabolic) kernel on `[-1, 1]` is `K(t) = 3/4 (1 - t^2)`;
    this is its location-scale family. With `t = (x - loc) / scale`:

    ```none
    pdf(x; mu, r)  = 3 / (4 r) (1 - t^2),          |t| <= 1, else 0
    cdf(x; mu, r)  = 1/2 + 3 t / 4 - t^3 / 4,      clipped to 0 below, 1 above
    quantile(p)    = mu + r * 2 sin(asin(2 p - 1) / 3)
    support        = [mu - r, mu + r]
    mean = mode = median = mu
    variance       = r^2 / 5
    entropy        = 5/3 - log 3 + log r
    roughness      = int pdf^2 dx = 3 / (5 r)
    ```

    where `loc = mu` and `scale = r > 0`. `Epanechnikov(mu, r)` equals
    `Beta(2, 2)` shifted to `mu - r` and stretched by `2 r`.

    Samples are drawn by Algorithm 2 of the EVAE paper (the median of three
    i.i.d. `Unif[-1, 1]` draws is standard Epanechnikov), then shifted and
    scaled, so they are fully reparameterized in `loc` and `scale`.

    A Python `int` `seed` is a stateless seed here (the same `int` gives the same
    samples), unlike TFP's built-in distributions, where it is stateful.

    #### Examples

    ```python
    # A single distribution on [-1, 3].
    dist = Epanechnikov(loc=1., scale=2.)
    dist.prob(1.)        # ==> 0.375
    dist.sample(10, seed=42)  # Shape [10]

    # A batch of distributions, built by broadcasting.
    dist = Epanechnikov(loc=[[0.], [1.]], scale=[1., 2., 3.])
    dist.batch_shape     # ==> [2, 3]
    dist.sample([4, 5], seed=(1, 2))  # Shape [4, 5, 2, 3]
    dist.log_prob(0.5)   # Shape [2, 3]
    dist.roughness()     # Shape [2, 3]
    ```
    """

    def __init__(
        self,
        loc,
        scale,
        validate_args=False,
        allow_nan_stats=True,
        name="Epanechnikov",
    ):
        """Construct Epanechnikov distributions with `loc` and `scale`.

        Args:
          loc: Floating point tensor; the centre (mean, mode) of the
            distribution(s).
          scale: Floating point tensor; the half-width of the support. Must
            contain only positive values.
          validate_args: Python `bool`, default `False`. When `True`, the
            distribution parameters are checked for validity despite possibly
            degrading runtime performance. When `False`, invalid inputs may
            silently render incorrect outputs.
          allow_nan_stats: Python `bool`, default `True`. When `True`,
            statistics (e.g., mean, mode, variance) use the value "`NaN`" to
            indicate the result is undefined. When `False`, an exception is
            raised if one or more of the statistic's batch members are undefined.
          name: Python `str` name prefixed to Ops created by this class.

        Raises:
          InvalidArgumentError: if `validate_args=True` and `scale <= 0`.
        """
        parameters = dict(locals())
        with tf.name_scope(name) as name:
            dtype = dtype_util.common_dtype([loc, scale], dtype_hint=tf.float32)
            self._loc = tensor_util.convert_nonref_to_tensor(loc, dtype=dtype, name="loc")
            self._scale = tensor_util.convert_nonref_to_tensor(scale, dtype=dtype, name="scale")
            super().__init__(
                dtype=dtype,
                reparameterization_type=reparameterization.FULLY_REPARAMETERIZED,
                validate_args=validate_args,
                allow_nan_stats=allow_nan_stats,
                parameters=parameters,
                name=name,
            )

    @classmethod
    def _parameter_properties(cls, dtype, num_classes=None):
        return dict(
            loc=parameter_properties.ParameterProperties(),
            scale=parameter_properties.ParameterProperties(
                default_constraining_bijector_fn=(
                    lambda: softplus_bijector.Softplus(low=dtype_util.eps(dtype))
                )
            ),
        )

    @property
    def loc(self):
        """Centre of the distribution: mean, mode and median."""
        return self._loc

    @property
    def scale(self):
        """Half-width of the support `[loc - scale, loc + scale]`."""
        return self._scale

    def _event_shape(self):
        return tf.TensorShape([])

    def _standardize(self, x):
        return (x - self.loc) / self.scale

    def _sample_n(self, n, seed=None):
        loc = tf.convert_to_tensor(self.loc)
        scale = tf.convert_to_tensor(self.scale)
        seed = sanitize_seed(seed, salt="Epanechnikov")
        shape = tf.concat([[n], self._batch_shape_tensor(loc=loc, scale=scale)], axis=0)
        return loc + scale * sample_standard(shape, self.dtype, seed)

    def _log_prob(self, x):
        scale = tf.convert_to_tensor(self.scale)
        t = (x - self.loc) / scale
        inside = tf.abs(t) < 1.0
        safe_t = tf.where(inside, t, tf.zeros_like(t))
        log_density = (
            math.log(0.75) - tf.math.log(scale) + tf.math.log1p(-safe_t) + tf.math.log1p(safe_t)
        )
        return tf.where(inside, log_density, dtype_util.as_numpy_dtype(self.dtype)(-np.inf))

    def _prob(self, x):
        scale = tf.convert_to_tensor(self.scale)
        t = (x - self.loc) / scale
        density = 0.75 * (1.0 - t) * (1.0 + t) / scale
        return tf.where(tf.abs(t) < 1.0, density, tf.zeros_like(density))

    def _cdf(self, x):
        return standard_cdf(tf.clip_by_value(self._standardize(x), -1.0, 1.0))

    def _survival_function(self, x):
        return standard_survival(tf.clip_by_value(self._standardize(x), -1.0, 1.0))

    def _log_cdf(self, x):
        t = tf.clip_by_value(self._standardize(x), -1.0, 1.0)
        # Below the centre log F directly; above it log1p(-(1 - F)) keeps the
        # relative precision of values close to 0.
        return tf.where(
            t < 0.0,
            2.0 * tf.math.log1p(t) + tf.math.log(2.0 - t) - math.log(4.0),
            tf.math.log1p(-standard_survival(t)),
        )

    def _log_survival_function(self, x):
        t = tf.clip_by_value(self._standardize(x), -1.0, 1.0)
        return tf.where(
            t > 0.0,
            2.0 * tf.math.log1p(-t) + tf.math.log(2.0 + t) - math.log(4.0),
            tf.math.log1p(-standard_cdf(t)),
        )

    def _quantile(self, p):
        return self.loc + self.scale * standard_quantile(p)

    def _mean(self):
        return self.loc * tf.ones_like(self.scale)

    def _mode(self):
        return self._mean()

    def _variance(self):
        return tf.square(self.scale) / 5.0 * tf.ones_like(self.loc)

    def _stddev(self):
        return self.scale / math.sqrt(5.0) * tf.ones_like(self.loc)

    def _entropy(self):
        return _STANDARD_ENTROPY + tf.math.log(self.scale) * tf.ones_like(self.loc)

    def roughness(self, name="roughness"):
        """Roughness `I = int pdf(x)^2 dx = 3 / (5 scale)`, of shape `batch_shape`.

        The EVAE penalty `3 B / (5 n r)` is `B / n` times this quantity.
        """
        with self._name_and_control_scope(name):
            return 0.6 / self.scale * tf.ones_like(self.loc)

    def _default_event_space_bijector(self):
        return sigmoid_bijector.Sigmoid(
            low=self.loc - self.scale,
            high=self.loc + self.scale,
            validate_args=self.validate_args,
        )

    def _parameter_control_dependencies(self, is_init):
        if not self.validate_args:
            return []
        assertions = []
        if is_init != tensor_util.is_ref(self.scale):
            assertions.append(
                assert_util.assert_positive(self.scale, message="`scale` must be positive.")
            )
        return assertions
