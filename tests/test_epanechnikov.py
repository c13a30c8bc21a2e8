"""Tests for `evae_tf.distributions.Epanechnikov` against a scipy oracle."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
from scipy import integrate, stats

from evae_tf.distributions import Epanechnikov, median_of_three

DTYPES = [np.float32, np.float64]
RTOL = {np.float32: 1e-5, np.float64: 1e-12}
NUM_SAMPLES = 100_000
KS_ALPHA = 1e-3


def oracle(loc, scale):
    """Epanechnikov(loc, scale) is Beta(2, 2) on [loc - scale, loc + scale]."""
    loc = np.asarray(loc, np.float64)
    scale = np.asarray(scale, np.float64)
    return stats.beta(2, 2, loc=loc - scale, scale=2 * scale)


def grid(loc, scale, num=41):
    """Points across the support plus points outside it on both sides."""
    t = np.concatenate([[-3.0, -1.5, -1.0001], np.linspace(-0.999, 0.999, num), [1.0001, 1.5, 3.0]])
    return loc + scale * t


# ---------------------------------------------------------------------------
# Density, cdf, quantile


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("loc,scale", [(0.0, 1.0), (1.5, 0.25), (-2.0, 3.0)])
def test_prob_and_log_prob_match_oracle(dtype, loc, scale):
    dist = Epanechnikov(dtype(loc), dtype(scale))
    x = grid(loc, scale).astype(dtype)
    ref = oracle(loc, scale)
    np.testing.assert_allclose(dist.prob(x).numpy(), ref.pdf(x), rtol=RTOL[dtype] * 10, atol=0)
    log_prob = dist.log_prob(x).numpy()
    inside = np.abs(x - loc) < scale
    np.testing.assert_allclose(log_prob[inside], ref.logpdf(x[inside]), rtol=RTOL[dtype] * 10)
    assert np.all(log_prob[~inside] == -np.inf)
    assert np.all(dist.prob(x).numpy()[~inside] == 0.0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_density_is_zero_at_exact_boundaries(dtype):
    # loc and scale chosen so that loc -+ scale are exactly representable.
    dist = Epanechnikov(dtype(0.5), dtype(2.0))
    x = np.array([-1.5, 2.5], dtype)
    np.testing.assert_array_equal(dist.prob(x).numpy(), [0.0, 0.0])
    np.testing.assert_array_equal(dist.log_prob(x).numpy(), [-np.inf, -np.inf])
    np.testing.assert_allclose(dist.prob(dtype(0.5)).numpy(), 0.375, rtol=RTOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("loc,scale", [(0.0, 1.0), (1.5, 0.25), (-2.0, 3.0)])
def test_cdf_survival_log_cdf_match_oracle(dtype, loc, scale):
    dist = Epanechnikov(dtype(loc), dtype(scale))
    x = grid(loc, scale).astype(dtype)
    ref = oracle(loc, scale)
    atol = 10 * np.finfo(dtype).eps
    np.testing.assert_allclose(dist.cdf(x).numpy(), ref.cdf(x), atol=atol)
    np.testing.assert_allclose(dist.survival_function(x).numpy(), ref.sf(x), atol=atol)
    inside = np.abs(x - loc) < scale
    np.testing.assert_allclose(
        dist.log_cdf(x).numpy()[inside], ref.logcdf(x[inside]), rtol=RTOL[dtype] * 100
    )
    np.testing.assert_allclose(
        dist.log_survival_function(x).numpy()[inside],
        ref.logsf(x[inside]),
        rtol=RTOL[dtype] * 100,
    )


@pytest.mark.parametrize("dtype", DTYPES)
def test_cdf_is_clipped_outside_support(dtype):
    dist = Epanechnikov(dtype(0.5), dtype(2.0))
    x = np.array([-100.0, -1.5, 2.5, 100.0], dtype)
    np.testing.assert_array_equal(dist.cdf(x).numpy(), [0.0, 0.0, 1.0, 1.0])
    np.testing.assert_array_equal(dist.survival_function(x).numpy(), [1.0, 1.0, 0.0, 0.0])
    np.testing.assert_array_equal(dist.log_cdf(x).numpy(), [-np.inf, -np.inf, 0.0, 0.0])
    np.testing.assert_array_equal(dist.cdf(dtype(0.5)).numpy(), 0.5)


@pytest.mark.parametrize("dtype", DTYPES)
def test_quantile_matches_oracle_and_inverts_cdf(dtype):
    loc, scale = 0.5, 2.0
    dist = Epanechnikov(dtype(loc), dtype(scale))
    p = np.array([0.0, 1e-6, 0.01, 0.1, 0.25, 0.3, 0.5, 0.7, 0.9, 0.99, 1.0], dtype)
    q = dist.quantile(p).numpy()
    assert q.dtype == dtype
    np.testing.assert_allclose(q, oracle(loc, scale).ppf(p), atol=20 * np.finfo(dtype).eps)
    # Endpoints and the median are exact.
    np.testing.assert_array_equal(q[[0, 6, -1]], [-1.5, 0.5, 2.5])
    np.testing.assert_allclose(dist.cdf(q).numpy(), p, atol=20 * np.finfo(dtype).eps)


def test_quantile_keeps_precision_in_the_left_tail():
    dist = Epanechnikov(np.float64(0.0), np.float64(1.0))
    # 2p - 1 rounds to -1 for these p; the quantile must not.
    p = np.array([1e-20, 1e-17, 1e-12])
    t = dist.quantile(p).numpy()
    # 1 + t = sqrt(4p / 3) (1 + O(sqrt(p))).
    np.testing.assert_allclose(1.0 + t, np.sqrt(4.0 * p / 3.0), rtol=1e-5)
    np.testing.assert_allclose(dist.quantile(1.0 - p[-1]).numpy(), -t[-1], rtol=1e-4)


# ---------------------------------------------------------------------------
# Moments, entropy, roughness


@pytest.mark.parametrize("dtype", DTYPES)
def test_moments_match_closed_form_and_oracle(dtype):
    loc = np.array([-1.0, 0.0, 2.5], dtype)
    scale = np.array([0.5, 1.0, 4.0], dtype)
    dist = Epanechnikov(loc, scale)
    ref = oracle(loc, scale)
    for value in (dist.mean(), dist.mode(), dist.variance(), dist.stddev()):
        assert value.dtype == dtype
    np.testing.assert_allclose(dist.mean().numpy(), loc)
    np.testing.assert_allclose(dist.mode().numpy(), loc)
    np.testing.assert_allclose(dist.variance().numpy(), scale**2 / 5, rtol=RTOL[dtype])
    np.testing.assert_allclose(dist.variance().numpy(), ref.var(), rtol=RTOL[dtype] * 10)
    np.testing.assert_allclose(dist.stddev().numpy(), ref.std(), rtol=RTOL[dtype] * 10)


@pytest.mark.parametrize("scale", [0.1, 1.0, 7.0])
def test_entropy_matches_closed_form_and_quadrature(scale):
    loc = 0.3
    dist = Epanechnikov(np.float64(loc), np.float64(scale))

    def neg_p_log_p(x):
        p = float(dist.prob(x))
        return -p * np.log(p) if p > 0 else 0.0

    numeric, _ = integrate.quad(neg_p_log_p, loc - scale, loc + scale, epsabs=1e-12)
    np.testing.assert_allclose(dist.entropy().numpy(), 5 / 3 - np.log(3) + np.log(scale))
    np.testing.assert_allclose(dist.entropy().numpy(), numeric, rtol=1e-9)
    np.testing.assert_allclose(dist.entropy().numpy(), oracle(loc, scale).entropy(), rtol=1e-12)


@pytest.mark.parametrize("scale", [0.1, 1.0, 7.0])
def test_roughness_matches_quadrature(scale):
    loc = -0.4
    dist = Epanechnikov(np.float64(loc), np.float64(scale))
    numeric, _ = integrate.quad(
        lambda x: float(dist.prob(x)) ** 2, loc - scale, loc + scale, epsabs=1e-12
    )
    np.testing.assert_allclose(dist.roughness().numpy(), 3 / (5 * scale), rtol=1e-12)
    np.testing.assert_allclose(dist.roughness().numpy(), numeric, rtol=1e-9)


# ---------------------------------------------------------------------------
# Sampling


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("loc,scale,seed", [(0.0, 1.0, 1), (1.5, 0.25, 2), (-2.0, 3.0, 3)])
def test_samples_pass_ks_test_against_oracle(dtype, loc, scale, seed):
    dist = Epanechnikov(dtype(loc), dtype(scale))
    samples = dist.sample(NUM_SAMPLES, seed=seed).numpy()
    assert samples.dtype == dtype
    assert np.all(samples >= loc - scale) and np.all(samples <= loc + scale)
    assert stats.kstest(samples, oracle(loc, scale).cdf).pvalue > KS_ALPHA


def test_ks_test_rejects_a_wrong_distribution():
    # The KS check above can fail: the same samples are rejected against a
    # uniform on the same support and against a 5% wider Epanechnikov.
    samples = Epanechnikov(0.0, 1.0).sample(NUM_SAMPLES, seed=1).numpy()
    assert stats.kstest(samples, stats.uniform(loc=-1, scale=2).cdf).pvalue < KS_ALPHA
    assert stats.kstest(samples, oracle(0.0, 1.05).cdf).pvalue < KS_ALPHA


def test_sample_mean_and_variance_within_five_standard_errors():
    loc = np.array([-1.0, 0.0, 2.5])
    scale = np.array([0.5, 1.0, 4.0])
    samples = Epanechnikov(loc, scale).sample(NUM_SAMPLES, seed=7).numpy()
    variance = scale**2 / 5
    fourth_central_moment = 3 * scale**4 / 35
    mean_se = np.sqrt(variance / NUM_SAMPLES)
    var_se = np.sqrt((fourth_central_moment - variance**2) / NUM_SAMPLES)
    assert np.all(np.abs(samples.mean(axis=0) - loc) < 5 * mean_se)
    assert np.all(np.abs(samples.var(axis=0) - variance) < 5 * var_se)


def test_same_seed_same_samples_different_seed_different_samples():
    dist = Epanechnikov([0.0, 1.0], 2.0)
    first = dist.sample(100, seed=42).numpy()
    np.testing.assert_array_equal(first, dist.sample(100, seed=42).numpy())
    assert not np.array_equal(first, dist.sample(100, seed=43).numpy())


def test_stateless_seed_tensor():
    dist = Epanechnikov(0.0, 1.0)
    seed = tfp.random.sanitize_seed([3, 4])
    first = dist.sample(50, seed=seed).numpy()
    np.testing.assert_array_equal(first, dist.sample(50, seed=seed).numpy())
    np.testing.assert_array_equal(first, dist.sample(50, seed=(3, 4)).numpy())
    assert not np.array_equal(first, dist.sample(50, seed=(3, 5)).numpy())


def test_unseeded_samples_differ():
    dist = Epanechnikov(0.0, 1.0)
    assert not np.array_equal(dist.sample(50).numpy(), dist.sample(50).numpy())


def test_sample_gradients_wrt_loc_and_scale():
    loc = tf.Variable([0.0, 1.0, -2.0])
    scale = tf.Variable([1.0, 0.5, 3.0])
    dist = Epanechnikov(loc, scale)
    with tf.GradientTape(persistent=True) as tape:
        x = dist.sample(seed=5)
    d_loc = tape.gradient(x, loc)
    d_scale = tape.gradient(x, scale)
    assert d_loc is not None and d_scale is not None
    np.testing.assert_array_equal(d_loc.numpy(), np.ones(3))
    # x = loc + scale * k, so dx/dscale = k = (x - loc) / scale, in [-1, 1].
    np.testing.assert_allclose(d_scale.numpy(), ((x - loc) / scale).numpy(), rtol=1e-5, atol=1e-6)
    assert np.all(np.abs(d_scale.numpy()) <= 1.0)


def test_log_prob_gradients_are_finite_inside_support():
    loc = tf.Variable(0.2)
    scale = tf.Variable(1.5)
    dist = Epanechnikov(loc, scale)
    with tf.GradientTape() as tape:
        lp = tf.reduce_sum(dist.log_prob([-1.0, 0.0, 1.2]))
    grads = tape.gradient(lp, [loc, scale])
    assert all(g is not None and np.isfinite(g.numpy()) for g in grads)


def test_median_of_three_matches_numpy():
    rng = np.random.default_rng(0)
    u = rng.uniform(-1, 1, size=(3, 1000)).astype(np.float32)
    u[2, :10] = u[0, :10]  # ties
    np.testing.assert_array_equal(median_of_three(*u).numpy(), np.median(u, axis=0))


# ---------------------------------------------------------------------------
# Shapes, dtypes, validation, variables


def test_batch_shape_broadcasting():
    dist = Epanechnikov(loc=tf.zeros([2, 1]), scale=[1.0, 2.0, 3.0])
    assert dist.batch_shape == tf.TensorShape([2, 3])
    np.testing.assert_array_equal(dist.batch_shape_tensor().numpy(), [2, 3])
    assert dist.event_shape == tf.TensorShape([])
    assert dist.sample([4, 5], seed=1).shape == (4, 5, 2, 3)
    assert dist.log_prob(tf.zeros([4, 5, 2, 3])).shape == (4, 5, 2, 3)
    assert dist.log_prob(0.5).shape == (2, 3)
    for stat in (
        dist.mean(),
        dist.mode(),
        dist.variance(),
        dist.stddev(),
        dist.entropy(),
        dist.roughness(),
    ):
        assert stat.shape == (2, 3)
    assert dist.quantile(0.3).shape == (2, 3)


def test_float64_is_preserved():
    dist = Epanechnikov(np.float64(0.0), np.float64(1.0))
    assert dist.dtype == tf.float64
    for value in (
        dist.sample(3, seed=1),
        dist.log_prob(0.3),
        dist.prob(0.3),
        dist.cdf(0.3),
        dist.log_cdf(0.3),
        dist.survival_function(0.3),
        dist.quantile(0.3),
        dist.entropy(),
        dist.roughness(),
    ):
        assert value.dtype == tf.float64


def test_python_floats_default_to_float32():
    assert Epanechnikov(0.0, 1.0).dtype == tf.float32


@pytest.mark.parametrize("bad_scale", [0.0, -1.0])
def test_validate_args_rejects_non_positive_scale(bad_scale):
    with pytest.raises(tf.errors.InvalidArgumentError, match="`scale` must be positive."):
        Epanechnikov(0.0, bad_scale, validate_args=True)


def test_validate_args_checks_variable_scale_on_use():
    scale = tf.Variable(1.0)
    dist = Epanechnikov(0.0, scale, validate_args=True)
    dist.mean()
    scale.assign(-1.0)
    with pytest.raises(tf.errors.InvalidArgumentError, match="`scale` must be positive."):
        dist.mean()


def test_validate_args_out_of_support_log_prob_is_minus_inf_not_an_error():
    dist = Epanechnikov(0.0, 1.0, validate_args=True)
    np.testing.assert_array_equal(dist.log_prob([-2.0, 2.0]).numpy(), [-np.inf, -np.inf])
    np.testing.assert_array_equal(dist.cdf([-2.0, 2.0]).numpy(), [0.0, 1.0])


def test_variable_parameters_are_tracked():
    loc = tf.Variable(0.0, name="loc")
    scale = tf.Variable(1.0, name="scale")
    dist = Epanechnikov(loc, scale)
    assert {v.name for v in dist.trainable_variables} == {"loc:0", "scale:0"}
    assert dist.loc is loc and dist.scale is scale


def test_parameter_properties_constrain_scale_to_positive():
    props = Epanechnikov.parameter_properties(dtype=tf.float32)
    assert set(props) == {"loc", "scale"}
    bijector = props["scale"].default_constraining_bijector_fn()
    assert np.all(bijector.forward([-50.0, 0.0, 3.0]).numpy() > 0)


def test_default_event_space_bijector_maps_into_support():
    dist = Epanechnikov(1.0, 2.0)
    x = dist.experimental_default_event_space_bijector()(tf.constant([-20.0, 0.0, 20.0]))
    assert np.all(x.numpy() >= -1.0) and np.all(x.numpy() <= 3.0)
    np.testing.assert_allclose(x.numpy()[1], 1.0)


def test_is_a_composite_tensor_usable_in_tf_function():
    dist = Epanechnikov([0.0, 1.0], 2.0)

    @tf.function
    def mean_of(d):
        return d.mean()

    np.testing.assert_allclose(mean_of(dist).numpy(), [0.0, 1.0])
    assert isinstance(dist, tf.__internal__.CompositeTensor)
