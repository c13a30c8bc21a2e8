"""The EVAE posterior: a scaled Epanechnikov kernel step added to a uniform prior draw."""

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

from evae_tf.defaults import STEP as DEFAULT_STEP  # the paper's b(100) = 100^(-2/9) ≈ 0.359381
from evae_tf.distributions.epanechnikov import sample_standard, sanitize_seed

__all__ = ["DEFAULT_STEP", "EVAEPosterior"]


def _mean_standard_cdf(a, b):
    """`(G(a) - G(b)) / (a - b)` for `-1 <= b <= a <= 1`: the mean of `F` over `[b, a]`.

    `G(t) = t/2 + 3t^2/8 - t^4/16 + 3/16` is the antiderivative of the standard
    cdf `F` with `G(-1) = 0`; the division is done symbolically, so the result
    stays accurate when `a - b` is tiny (it tends to `F(a)`).
    """
    s = a + b
    return 0.5 + 0.375 * s - s * (tf.square(a) + tf.square(b)) / 16.0


def _mean_standard_pdf(a, b):
    """`(F(a) - F(b)) / (a - b) = 3/4 - (a^2 + ab + b^2) / 4`: the mean of `K` over `[b, a]`."""
    return 0.75 - (tf.square(a) + a * b + tf.square(b)) / 4.0


class EVAEPosterior(distribution.AutoCompositeTensorDistribution):
    r"""The EVAE posterior `z = b (mu + r K) + U` (Algorithm 1 of the EVAE paper).

    #### Mathematical Details

    With step size `b`, location `mu`, spread `r > 0` and prior support length
    `B > 0`:

    ```none
    K ~ Epanechnikov(0, 1)       (median of three Unif[-1, 1] draws)
    U = B (V - 1/2),  V ~ Unif[0, 1]
    z = b (mu + r K) + U
    ```

    `z` is the sum of an `Epanechnikov(b mu, b r)` and a `Unif[-B/2, B/2]`
    variable, so with `h = b r`, `F` the clipped standard Epanechnikov cdf and
    `G` its antiderivative (`G(t) = 0` for `t < -1`,
    `t/2 + 3t^2/8 - t^4/16 + 3/16` on `[-1, 1]`, `t` for `t > 1`):

    ```none
    pdf(z) = [F((z - b mu + B/2) / h) - F((z - b mu - B/2) / h)] / B
    cdf(z) = h / B [G((z - b mu + B/2) / h) - G((z - b mu - B/2) / h)]
    support  = [b (mu - r) - B/2, b (mu + r) + B/2]
    mean     = b mu
    variance = b^2 r^2 / 5 + B^2 / 12
    ```

    The density and cdf are evaluated through the overlap of the window
    `[z - B/2, z + B/2]` with the kernel's support, which keeps them accurate
    both for `B << b r` and `B >> b r`.

    Samples are reparameterized in `loc`, `spread`, `support` and `step`.

    #### Examples

    ```python
    # Fixed prior support B = 0.1 for a batch of 2 examples x 3 latent dims.
    q = EVAEPosterior(loc=tf.zeros([2, 3]), spread=tf.ones([2, 3]), support=0.1)
    q.batch_shape           # ==> [2, 3]
    z = q.sample(seed=42)   # Shape [2, 3]
    q.log_prob(z)           # Shape [2, 3]
    q.sample([4], seed=(1, 2))  # Shape [4, 2, 3]

    # Learned support: one B per example and dimension.
    q = EVAEPosterior(loc=mu, spread=r, support=b_support)  # all shape [M, d]
    ```
    """

    def __init__(
        self,
        loc,
        spread,
        support,
        step=DEFAULT_STEP,
        validate_args=False,
        allow_nan_stats=True,
        name="EVAEPosterior",
    ):
        """Construct EVAE posteriors.

        Args:
          loc: Floating point tensor; the encoder's location `mu`.
          spread: Floating point tensor; the encoder's spread `r`. Must be
            positive.
          support: Python `float` (a fixed prior support length `B`) or a
            floating point tensor broadcasting with `loc`. Must be positive.
          step: The step size `b`. Must be positive.
            Default value: `DEFAULT_STEP = 100 ** (-2/9)`.
          validate_args: Python `bool`, default `False`. When `True`, the
            distribution parameters are checked for validity despite possibly
            degrading runtime performance.
          allow_nan_stats: Python `bool`, default `True`.
          name: Python `str` name prefixed to Ops created by this class.

        Raises:
          InvalidArgumentError: if `validate_args=True` and `spread`, `support`
            or `step` is not positive.
        """
        parameters = dict(locals())
        with tf.name_scope(name) as name:
            dtype = dtype_util.common_dtype([loc, spread, support, step], dtype_hint=tf.float32)
            self._loc = tensor_util.convert_nonref_to_tensor(loc, dtype=dtype, name="loc")
            self._spread = tensor_util.convert_nonref_to_tensor(spread, dtype=dtype, name="spread")
            self._support = tensor_util.convert_nonref_to_tensor(
                support, dtype=dtype, name="support"
            )
            self._step = tensor_util.convert_nonref_to_tensor(step, dtype=dtype, name="step")
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
        def positive():
            return parameter_properties.ParameterProperties(
                default_constraining_bijector_fn=(
                    lambda: softplus_bijector.Softplus(low=dtype_util.eps(dtype))
                )
            )

        return dict(
            loc=parameter_properties.ParameterProperties(),
            spread=positive(),
            support=positive(),
            step=positive(),
        )

    @property
    def loc(self):
        """The location `mu` (before the step size is applied)."""
        return self._loc

    @property
    def spread(self):
        """The spread `r` (before the step size is applied)."""
        return self._spread

    @property
    def support(self):
        """The length `B` of the uniform prior's support interval."""
        return self._support

    @property
    def step(self):
        """The step size `b`."""
        return self._step

    def _event_shape(self):
        return tf.TensorShape([])

    def _sample_n(self, n, seed=None):
        loc = tf.convert_to_tensor(self.loc)
        spread = tf.convert_to_tensor(self.spread)
        support = tf.convert_to_tensor(self.support)
        step = tf.convert_to_tensor(self.step)
        kernel_seed, uniform_seed = samplers.split_seed(
            sanitize_seed(seed, salt="EVAEPosterior"), n=2
        )
        shape = tf.concat(
            [
                [n],
                self._batch_shape_tensor(loc=loc, spread=spread, support=support, step=step),
            ],
            axis=0,
        )
        k = sample_standard(shape, self.dtype, kernel_seed)
        v = samplers.uniform(shape, dtype=self.dtype, seed=uniform_seed)
        return step * (loc + spread * k) + support * (v - 0.5)

    def _window(self, x):
        """Overlap of the window `[x - B/2, x + B/2]` with the kernel's support.

        With `h = b r`, returns `(inside, above, below, t_hi, t_lo, h, B)`: the
        window's lengths inside, above and below `[b mu - h, b mu + h]`, and
        the window's ends in kernel units `(x - b mu +- B/2) / h`, clipped to
        `[-1, 1]`.
        """
        support = tf.convert_to_tensor(self.support)
        step = tf.convert_to_tensor(self.step)
        h = step * self.spread
        y = x - step * self.loc
        half = support / 2.0
        # Each branch is exact in the case it is chosen for: the window inside
        # the kernel's support (B <= 2h), or the kernel's support inside the window.
        inside = tf.nn.relu(
            tf.where(
                support <= 2.0 * h,
                support - tf.nn.relu(y + half - h) - tf.nn.relu(half - h - y),
                2.0 * h - tf.nn.relu(h - y - half) - tf.nn.relu(h + y - half),
            )
        )
        above = tf.minimum(support, tf.nn.relu(y + half - h))
        below = tf.minimum(support, tf.nn.relu(half - h - y))
        t_hi = tf.clip_by_value((y + half) / h, -1.0, 1.0)
        t_lo = tf.clip_by_value((y - half) / h, -1.0, 1.0)
        return inside, above, below, t_hi, t_lo, h, support

    def _prob(self, x):
        inside, _, _, t_hi, t_lo, h, support = self._window(x)
        return inside * _mean_standard_pdf(t_hi, t_lo) / (h * support)

    def _log_prob(self, x):
        inside, _, _, t_hi, t_lo, h, support = self._window(x)
        return (
            tf.math.log(inside)
            + tf.math.log(_mean_standard_pdf(t_hi, t_lo))
            - tf.math.log(h)
            - tf.math.log(support)
        )

    def _cdf(self, x):
        # cdf = (1/B) * integral of the kernel's cdf over the window.
        inside, above, _, t_hi, t_lo, _, support = self._window(x)
        cdf = (inside * _mean_standard_cdf(t_hi, t_lo) + above) / support
        return tf.clip_by_value(cdf, 0.0, 1.0)

    def _survival_function(self, x):
        inside, _, below, t_hi, t_lo, _, support = self._window(x)
        # 1 - (mean of F over [t_lo, t_hi]) = mean of F over [-t_hi, -t_lo].
        survival = (inside * _mean_standard_cdf(-t_lo, -t_hi) + below) / support
        return tf.clip_by_value(survival, 0.0, 1.0)

    def _mean(self):
        return self.step * self.loc * tf.ones_like(self.spread) * tf.ones_like(self.support)

    def _variance(self):
        return (
            tf.square(self.step * self.spread) / 5.0 * tf.ones_like(self.loc)
            + tf.square(self.support) / 12.0
        )

    def _default_event_space_bijector(self):
        step = tf.convert_to_tensor(self.step)
        half = tf.convert_to_tensor(self.support) / 2.0
        return sigmoid_bijector.Sigmoid(
            low=step * (self.loc - self.spread) - half,
            high=step * (self.loc + self.spread) + half,
            validate_args=self.validate_args,
        )

    def _parameter_control_dependencies(self, is_init):
        if not self.validate_args:
            return []
        assertions = []
        for name in ("spread", "support", "step"):
            value = getattr(self, name)
            if is_init != tensor_util.is_ref(value):
                assertions.append(
                    assert_util.assert_positive(value, message=f"`{name}` must be positive.")
                )
        return assertions
