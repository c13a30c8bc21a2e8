"""Tests for the `EpanechnikovCDF` bijector."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
from scipy import stats

from evae_tf.bijectors import EpanechnikovCDF
from evae_tf.distributions import Epanechnikov

tfb = tfp.bijectors
tfd = tfp.distributions

STANDARD = stats.beta(2, 2, loc=-1, scale=2)  # the standard Epanechnikov distribution
NUM_SAMPLES = 100_000
KS_ALPHA = 1e-3


# TFP's `bijector_test_util.assert_bijective_and_finite` and
# `assert_scalar_congruency` are not shipped in the TFP 0.25 wheel; these are
# the same checks, written for eager mode.


def assert_bijective_and_finite(bijector, x, y, rtol):
    """forward/inverse are mutual inverses and all log-det-Jacobians are finite."""
    f_x = bijector.forward(x)
    g_y = bijector.inverse(y)
    values = {
        "inverse(forward(x))": bijector.inverse(f_x),
        "forward(inverse(y))": bijector.forward(g_y),
        "ildj(forward(x))": bijector.inverse_log_det_jacobian(f_x, event_ndims=0),
        "fldj(x)": bijector.forward_log_det_jacobian(x, event_ndims=0),
        "ildj(y)": bijector.inverse_log_det_jacobian(y, event_ndims=0),
        "fldj(inverse(y))": bijector.forward_log_det_jacobian(g_y, event_ndims=0),
    }
    for name, value in values.items():
        assert np.all(np.isfinite(value.numpy())), name
    np.testing.assert_allclose(values["inverse(forward(x))"], x, rtol=rtol, atol=0)
    np.testing.assert_allclose(values["forward(inverse(y))"], y, rtol=rtol, atol=0)
    np.testing.assert_allclose(-values["ildj(forward(x))"], values["fldj(x)"], rtol=rtol)
    np.testing.assert_allclose(-values["ildj(y)"], values["fldj(inverse(y))"], rtol=rtol)


def assert_scalar_congruency(bijector, lower_x, upper_x, n=10_000, rtol=0.01):
    """Monotone forward, mutual inverses, and the Jacobian is a change of measure."""
    forward_on_grid = bijector.forward(np.linspace(lower_x, upper_x, 10)).numpy()
    assert np.all(np.diff(forward_on_grid) > 0)
    lower_y, upper_y = float(bijector.forward(lower_x)), float(bijector.forward(upper_x))
    x = tfd.Uniform(lower_x, upper_x).sample(n, seed=(0, 0))
    y = tfd.Uniform(lower_y, upper_y).sample(n, seed=(0, 1))
    np.testing.assert_allclose(bijector.inverse(bijector.forward(x)), x, atol=1e-5, rtol=1e-3)
    np.testing.assert_allclose(bijector.forward(bijector.inverse(y)), y, atol=1e-5, rtol=1e-3)
    # (upper_x - lower_x) = int_{y(lower_x)}^{y(upper_x)} |dx/dy| dy, by Monte Carlo.
    dx_dy = tf.exp(bijector.inverse_log_det_jacobian(y, event_ndims=0))
    change_of_measure = (upper_y - lower_y) * float(tf.reduce_mean(dx_dy))
    np.testing.assert_allclose(change_of_measure, upper_x - lower_x, rtol=rtol)
    dy_dx = tf.exp(bijector.forward_log_det_jacobian(bijector.inverse(y), event_ndims=0))
    np.testing.assert_allclose(dx_dy, 1.0 / dy_dx, atol=1e-5, rtol=1e-3)


def test_forward_known_values():
    bijector = EpanechnikovCDF()
    np.testing.assert_array_equal(bijector.forward([-1.0, 0.0, 1.0]).numpy(), [0.0, 0.5, 1.0])
    np.testing.assert_array_equal(bijector.inverse([0.0, 0.5, 1.0]).numpy(), [-1.0, 0.0, 1.0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_forward_and_inverse_match_oracle(dtype):
    bijector = EpanechnikovCDF()
    x = np.linspace(-1.0, 1.0, 101).astype(dtype)
    y = np.linspace(0.0, 1.0, 101).astype(dtype)
    atol = 20 * np.finfo(dtype).eps
    forward = bijector.forward(x).numpy()
    inverse = bijector.inverse(y).numpy()
    assert forward.dtype == dtype and inverse.dtype == dtype
    np.testing.assert_allclose(forward, STANDARD.cdf(x), atol=atol)
    np.testing.assert_allclose(forward, 0.5 + 0.75 * x - 0.25 * x**3, atol=atol)
    np.testing.assert_allclose(inverse, STANDARD.ppf(y), atol=atol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_round_trip_on_grid(dtype):
    bijector = EpanechnikovCDF()
    x = np.linspace(-0.99, 0.99, 199).astype(dtype)
    y = np.linspace(0.001, 0.999, 199).astype(dtype)
    atol = 50 * np.finfo(dtype).eps
    np.testing.assert_allclose(bijector.inverse(bijector.forward(x)).numpy(), x, atol=atol)
    np.testing.assert_allclose(bijector.forward(bijector.inverse(y)).numpy(), y, atol=atol)


def test_forward_log_det_jacobian_matches_log_kernel_and_numerical_derivative():
    bijector = EpanechnikovCDF()
    x = np.linspace(-0.95, 0.95, 39)
    fldj = bijector.forward_log_det_jacobian(x, event_ndims=0).numpy()
    np.testing.assert_allclose(fldj, np.log(0.75 * (1.0 - x**2)), rtol=1e-12)
    h = 1e-6
    numerical = (bijector.forward(x + h).numpy() - bijector.forward(x - h).numpy()) / (2 * h)
    np.testing.assert_allclose(np.exp(fldj), numerical, rtol=1e-7)


def test_inverse_log_det_jacobian_is_minus_forward():
    bijector = EpanechnikovCDF()
    y = np.linspace(0.01, 0.99, 50)
    ildj = bijector.inverse_log_det_jacobian(y, event_ndims=0).numpy()
    fldj = bijector.forward_log_det_jacobian(bijector.inverse(y), event_ndims=0).numpy()
    np.testing.assert_allclose(ildj, -fldj, rtol=1e-12)


def test_bijective_and_finite_near_the_boundaries():
    bijector = EpanechnikovCDF()
    x = np.array([-1 + 1e-6, -0.5, 0.0, 0.5, 1 - 1e-6])
    y = np.array([1e-9, 0.25, 0.5, 0.75, 1 - 1e-9])
    assert_bijective_and_finite(bijector, x, y, rtol=1e-5)
    x32 = np.array([-0.999, -0.5, 0.0, 0.5, 0.999], np.float32)
    y32 = np.array([1e-5, 0.25, 0.5, 0.75, 1 - 1e-5], np.float32)
    assert_bijective_and_finite(bijector, x32, y32, rtol=1e-3)


def test_scalar_congruency():
    assert_scalar_congruency(EpanechnikovCDF(), lower_x=-0.9, upper_x=0.9)


def test_properties():
    bijector = EpanechnikovCDF()
    assert bijector.forward_min_event_ndims == 0
    assert bijector.inverse_min_event_ndims == 0
    assert bijector._is_increasing()
    assert bijector.name == "epanechnikov_cdf"


def test_gradients_are_not_none():
    bijector = EpanechnikovCDF()
    x = tf.constant([-0.5, 0.0, 0.7])
    y = tf.constant([0.1, 0.5, 0.9])
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([x, y])
        forward = bijector.forward(x)
        inverse = bijector.inverse(y)
        fldj = bijector.forward_log_det_jacobian(x, event_ndims=0)
    for target, source in ((forward, x), (inverse, y), (fldj, x)):
        grad = tape.gradient(target, source)
        assert grad is not None and np.all(np.isfinite(grad.numpy()))
    # dF/dx = K(x).
    np.testing.assert_allclose(tape.gradient(forward, x), 0.75 * (1 - x**2), rtol=1e-6)


def test_validate_args_rejects_out_of_domain_inputs():
    bijector = EpanechnikovCDF(validate_args=True)
    with pytest.raises(tf.errors.InvalidArgumentError, match="must be <= 1"):
        bijector.forward([0.0, 1.5])
    with pytest.raises(tf.errors.InvalidArgumentError, match="must be >= 0"):
        bijector.inverse([-0.1, 0.5])


def test_inverted_bijector_on_uniform_is_standard_epanechnikov():
    transformed = tfd.TransformedDistribution(
        tfd.Uniform(np.float64(0.0), np.float64(1.0)), tfb.Invert(EpanechnikovCDF())
    )
    direct = Epanechnikov(np.float64(0.0), np.float64(1.0))
    x = np.linspace(-0.999, 0.999, 201)
    np.testing.assert_allclose(transformed.log_prob(x), direct.log_prob(x), rtol=1e-10)
    np.testing.assert_allclose(transformed.log_prob(x), STANDARD.logpdf(x), rtol=1e-10)

    inverse_cdf_samples = transformed.sample(NUM_SAMPLES, seed=(1, 2)).numpy()
    median_samples = direct.sample(NUM_SAMPLES, seed=3).numpy()
    assert stats.kstest(inverse_cdf_samples, STANDARD.cdf).pvalue > KS_ALPHA
    assert stats.ks_2samp(inverse_cdf_samples, median_samples).pvalue > KS_ALPHA
    # ... and a mismatched pair is rejected.
    wider = Epanechnikov(np.float64(0.0), np.float64(1.05)).sample(NUM_SAMPLES, seed=4).numpy()
    assert stats.ks_2samp(inverse_cdf_samples, wider).pvalue < KS_ALPHA


def test_is_a_composite_tensor():
    assert isinstance(EpanechnikovCDF(), tf.__internal__.CompositeTensor)
