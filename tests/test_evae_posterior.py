"""Tests for `evae_tf.distributions.EVAEPosterior` against the convolution formula."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy import integrate, stats

from evae_tf.distributions import DEFAULT_STEP, Epanechnikov, EVAEPosterior

NUM_SAMPLES = 100_000
KS_ALPHA = 1e-3

# (loc, spread, support): B >> b r, B << b r, B ~ 2 b r, and a fixed B = 0.1.
PARAMS = [
    (0.3, 0.5, 2.0),
    (-1.0, 2.0, 0.01),
    (0.5, 1.0, 2 * DEFAULT_STEP),
    (0.0, 1.0, 0.1),
]


def clipped_cdf(t):
    t = np.clip(t, -1.0, 1.0)
    return 0.5 + 0.75 * t - 0.25 * t**3


def antiderivative(t):
    """G with G' = clipped F and G(-inf) = 0."""
    inner = np.clip(t, -1.0, 1.0)
    g = inner / 2 + 3 * inner**2 / 8 - inner**4 / 16 + 3 / 16
    return g + np.maximum(t - 1.0, 0.0)


def oracle_prob(z, loc, spread, support, step=DEFAULT_STEP):
    """Spec section 2: q(z) = [F((z - b mu + B/2)/(b r)) - F((z - b mu - B/2)/(b r))] / B."""
    h = step * spread
    return (
        clipped_cdf((z - step * loc + support / 2) / h)
        - clipped_cdf((z - step * loc - support / 2) / h)
    ) / support


def oracle_cdf(z, loc, spread, support, step=DEFAULT_STEP):
    """cdf(z) = (b r / B) [G(t_hi) - G(t_lo)]."""
    h = step * spread
    t_hi = (z - step * loc + support / 2) / h
    t_lo = (z - step * loc - support / 2) / h
    return h / support * (antiderivative(t_hi) - antiderivative(t_lo))


def support_bounds(loc, spread, support, step=DEFAULT_STEP):
    return step * (loc - spread) - support / 2, step * (loc + spread) + support / 2


def kinks(loc, spread, support, step=DEFAULT_STEP):
    c, h, half = step * loc, step * spread, support / 2
    return sorted({c - h - half, c - h + half, c + h - half, c + h + half})


def grid(loc, spread, support, num=101):
    lo, hi = support_bounds(loc, spread, support)
    width = hi - lo
    inside = np.linspace(lo, hi, num)[1:-1]
    return np.concatenate(
        [[lo - width, lo - 1e-3 * width], inside, [hi + 1e-3 * width, hi + width]]
    )


def test_default_step():
    np.testing.assert_allclose(DEFAULT_STEP, 100 ** (-2 / 9))
    np.testing.assert_allclose(DEFAULT_STEP, 0.359381, atol=1e-6)


def test_antiderivative_oracle_is_an_antiderivative():
    t = np.linspace(-2.0, 2.0, 81)
    h = 1e-6
    np.testing.assert_allclose(
        (antiderivative(t + h) - antiderivative(t - h)) / (2 * h), clipped_cdf(t), atol=1e-8
    )


# ---------------------------------------------------------------------------
# Density and cdf


@pytest.mark.parametrize("loc,spread,support", PARAMS)
def test_prob_and_cdf_match_oracle_float64(loc, spread, support):
    q = EVAEPosterior(np.float64(loc), np.float64(spread), support)
    z = grid(loc, spread, support)
    np.testing.assert_allclose(
        q.prob(z), oracle_prob(z, loc, spread, support), rtol=1e-9, atol=1e-12
    )
    np.testing.assert_allclose(q.cdf(z), oracle_cdf(z, loc, spread, support), atol=1e-12)
    np.testing.assert_allclose(
        q.survival_function(z), 1 - oracle_cdf(z, loc, spread, support), atol=1e-12
    )
    inside = oracle_prob(z, loc, spread, support) > 0
    np.testing.assert_allclose(
        q.log_prob(z).numpy()[inside],
        np.log(oracle_prob(z[inside], loc, spread, support)),
        rtol=1e-9,
    )


@pytest.mark.parametrize("loc,spread,support", PARAMS)
def test_prob_and_cdf_match_oracle_float32(loc, spread, support):
    q = EVAEPosterior(np.float32(loc), np.float32(spread), support)
    z = grid(loc, spread, support).astype(np.float32)
    expected = oracle_prob(z.astype(np.float64), loc, spread, support)
    peak = expected.max()
    np.testing.assert_allclose(q.prob(z).numpy(), expected, rtol=1e-4, atol=1e-4 * peak)
    np.testing.assert_allclose(
        q.cdf(z).numpy(), oracle_cdf(z.astype(np.float64), loc, spread, support), atol=1e-5
    )
    assert q.prob(z).dtype == tf.float32


@pytest.mark.parametrize("loc,spread,support", PARAMS)
def test_outside_support_prob_zero_log_prob_minus_inf_cdf_clipped(loc, spread, support):
    q = EVAEPosterior(np.float64(loc), np.float64(spread), support)
    lo, hi = support_bounds(loc, spread, support)
    z = np.array([lo - 10.0, lo - 1e-6, lo, hi, hi + 1e-6, hi + 10.0])
    np.testing.assert_allclose(q.prob(z).numpy(), 0.0, atol=1e-9)
    assert np.all(q.log_prob(z[[0, 1, 4, 5]]).numpy() == -np.inf)
    np.testing.assert_array_equal(q.cdf(z[[0, 1]]).numpy(), [0.0, 0.0])
    np.testing.assert_array_equal(q.cdf(z[[4, 5]]).numpy(), [1.0, 1.0])
    np.testing.assert_array_equal(q.survival_function(z[[0, 5]]).numpy(), [1.0, 0.0])


@pytest.mark.parametrize("loc,spread,support", PARAMS)
def test_prob_integrates_to_one_and_cdf_is_its_integral(loc, spread, support):
    q = EVAEPosterior(np.float64(loc), np.float64(spread), support)
    lo, hi = support_bounds(loc, spread, support)
    points = kinks(loc, spread, support)

    def density(z):
        return float(q.prob(z))

    total, _ = integrate.quad(density, lo, hi, points=points[1:-1], epsabs=1e-12)
    np.testing.assert_allclose(total, 1.0, rtol=1e-9)
    for z in np.linspace(lo, hi, 7)[1:-1]:
        inner = [p for p in points if lo < p < z]
        partial, _ = integrate.quad(density, lo, z, points=inner or None, epsabs=1e-12)
        np.testing.assert_allclose(float(q.cdf(z)), partial, atol=1e-9)


def test_limits_small_and_large_support_in_float32():
    # B << b r: the posterior is Epanechnikov(b mu, b r) to first order in B.
    loc, spread = np.float32(0.4), np.float32(1.5)
    q = EVAEPosterior(loc, spread, 1e-6)
    kernel = Epanechnikov(DEFAULT_STEP * loc, DEFAULT_STEP * spread)
    z = np.linspace(-0.5, 0.6, 23).astype(np.float32)
    np.testing.assert_allclose(q.prob(z).numpy(), kernel.prob(z).numpy(), rtol=1e-4)
    np.testing.assert_allclose(q.cdf(z).numpy(), kernel.cdf(z).numpy(), atol=1e-6)
    # B >> b r: flat at 1 / B in the middle.
    q = EVAEPosterior(loc, np.float32(1e-4), 20.0)
    z = np.linspace(-9.0, 9.0, 19).astype(np.float32)
    np.testing.assert_allclose(q.prob(z).numpy(), 1 / 20.0, rtol=1e-6)
    np.testing.assert_allclose(q.cdf(z).numpy(), (z - DEFAULT_STEP * loc + 10.0) / 20.0, atol=1e-6)


@pytest.mark.parametrize("loc,spread,support", PARAMS)
def test_mean_and_variance_match_quadrature(loc, spread, support):
    q = EVAEPosterior(np.float64(loc), np.float64(spread), support)
    lo, hi = support_bounds(loc, spread, support)
    points = kinks(loc, spread, support)[1:-1]
    mean, _ = integrate.quad(
        lambda z: z * oracle_prob(z, loc, spread, support), lo, hi, points=points
    )
    var, _ = integrate.quad(
        lambda z: (z - mean) ** 2 * oracle_prob(z, loc, spread, support), lo, hi, points=points
    )
    np.testing.assert_allclose(q.mean().numpy(), DEFAULT_STEP * loc, rtol=1e-12)
    np.testing.assert_allclose(q.mean().numpy(), mean, atol=1e-9)
    expected_var = (DEFAULT_STEP * spread) ** 2 / 5 + support**2 / 12
    np.testing.assert_allclose(q.variance().numpy(), expected_var, rtol=1e-12)
    np.testing.assert_allclose(q.variance().numpy(), var, rtol=1e-8)
    np.testing.assert_allclose(q.stddev().numpy(), np.sqrt(var), rtol=1e-8)


# ---------------------------------------------------------------------------
# Sampling


@pytest.mark.parametrize("seed,params", enumerate(PARAMS))
def test_samples_pass_ks_test_against_exact_cdf(seed, params):
    loc, spread, support = params
    q = EVAEPosterior(np.float64(loc), np.float64(spread), support)
    samples = q.sample(NUM_SAMPLES, seed=seed).numpy()
    assert stats.kstest(samples, lambda z: q.cdf(z).numpy()).pvalue > KS_ALPHA


def test_ks_test_rejects_the_unif_minus_b_b_variant():
    # The seed text's Algorithm 1 draws U ~ Unif[-B, B]; that is a different
    # distribution, and the KS test against the exact cdf must say so.
    loc, spread, support = 0.0, 1.0, 0.5
    q = EVAEPosterior(np.float64(loc), np.float64(spread), support)
    k = Epanechnikov(np.float64(0.0), np.float64(1.0)).sample(NUM_SAMPLES, seed=1).numpy()
    u = np.random.default_rng(0).uniform(-support, support, NUM_SAMPLES)
    wrong = DEFAULT_STEP * (loc + spread * k) + u
    assert stats.kstest(wrong, lambda z: q.cdf(z).numpy()).pvalue < KS_ALPHA


@pytest.mark.parametrize("loc,spread,support", PARAMS)
def test_sample_mean_and_variance_within_five_standard_errors(loc, spread, support):
    q = EVAEPosterior(np.float64(loc), np.float64(spread), support)
    samples = q.sample(NUM_SAMPLES, seed=11).numpy()
    h = DEFAULT_STEP * spread
    var_k, var_u = h**2 / 5, support**2 / 12
    variance = var_k + var_u
    # Fourth central moment of a sum of independent symmetric variables.
    fourth = 3 * h**4 / 35 + 6 * var_k * var_u + support**4 / 80
    assert abs(samples.mean() - DEFAULT_STEP * loc) < 5 * np.sqrt(variance / NUM_SAMPLES)
    assert abs(samples.var() - variance) < 5 * np.sqrt((fourth - variance**2) / NUM_SAMPLES)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("loc,spread,support", PARAMS)
def test_samples_stay_inside_support(dtype, loc, spread, support):
    q = EVAEPosterior(dtype(loc), dtype(spread), support)
    samples = q.sample(NUM_SAMPLES, seed=5).numpy()
    assert samples.dtype == dtype
    step, loc, spread, support = (dtype(v) for v in (DEFAULT_STEP, loc, spread, support))
    lo = step * (loc - spread) - support / dtype(2)
    hi = step * (loc + spread) + support / dtype(2)
    assert samples.min() >= lo and samples.max() <= hi


def test_sample_gradients_flow_to_loc_spread_and_support():
    n = 64
    loc = tf.Variable(tf.linspace(-1.0, 1.0, n))
    spread = tf.Variable(tf.fill([n], 0.7))
    support = tf.Variable(tf.fill([n], 0.3))
    q = EVAEPosterior(loc, spread, support)
    with tf.GradientTape(persistent=True) as tape:
        z = q.sample(seed=3)
    d_loc, d_spread, d_support = (tape.gradient(z, v) for v in (loc, spread, support))
    for grad in (d_loc, d_spread, d_support):
        assert grad is not None and np.all(np.isfinite(grad.numpy()))
    np.testing.assert_array_equal(d_loc.numpy(), np.full(n, np.float32(DEFAULT_STEP)))
    # dz/dspread = b k with k in [-1, 1]; dz/dsupport = v - 1/2 in [-1/2, 1/2].
    assert np.all(np.abs(d_spread.numpy()) <= DEFAULT_STEP)
    assert np.all(np.abs(d_support.numpy()) <= 0.5)
    np.testing.assert_allclose(
        DEFAULT_STEP * loc + spread * d_spread + support * d_support, z, atol=1e-6
    )


def test_log_prob_gradients_are_finite_inside_support():
    loc, spread, support = tf.Variable(0.2), tf.Variable(0.8), tf.Variable(0.5)
    q = EVAEPosterior(loc, spread, support)
    z = q.sample(100, seed=9)
    with tf.GradientTape() as tape:
        lp = tf.reduce_sum(q.log_prob(z))
    grads = tape.gradient(lp, [loc, spread, support])
    assert all(g is not None and np.isfinite(g.numpy()) for g in grads)


def test_same_seed_same_samples_different_seed_different_samples():
    q = EVAEPosterior([0.0, 1.0], 0.5, 0.1)
    first = q.sample(100, seed=42).numpy()
    np.testing.assert_array_equal(first, q.sample(100, seed=42).numpy())
    assert not np.array_equal(first, q.sample(100, seed=43).numpy())
    np.testing.assert_array_equal(q.sample(10, seed=(1, 2)), q.sample(10, seed=tf.constant([1, 2])))


def test_keras_seed_generator_seeds_work_in_a_tf_function():
    # SeedGenerator.next() returns an int64 seed; TFP's samplers want int32.
    q = EVAEPosterior(tf.zeros([2, 3]), tf.ones([2, 3]), 0.1)

    @tf.function
    def sample(seed):
        return q.sample(seed=seed)

    first = sample(keras.random.SeedGenerator(7).next())
    np.testing.assert_array_equal(first, sample(keras.random.SeedGenerator(7).next()))
    generator = keras.random.SeedGenerator(7)
    assert not np.array_equal(sample(generator.next()), sample(generator.next()))


# ---------------------------------------------------------------------------
# Parameters, shapes, dtypes, validation


def test_fixed_float_support_and_properties():
    q = EVAEPosterior(tf.zeros([2, 3]), tf.ones([2, 3]), support=0.1)
    assert q.batch_shape == tf.TensorShape([2, 3])
    assert q.sample([4], seed=1).shape == (4, 2, 3)
    assert q.log_prob(tf.zeros([4, 2, 3])).shape == (4, 2, 3)
    np.testing.assert_allclose(q.support.numpy(), 0.1)
    np.testing.assert_allclose(q.step.numpy(), DEFAULT_STEP)
    np.testing.assert_array_equal(q.loc.numpy(), np.zeros([2, 3]))
    np.testing.assert_array_equal(q.spread.numpy(), np.ones([2, 3]))


def test_tensor_support_broadcasts_with_loc():
    q = EVAEPosterior(tf.zeros([2, 1]), 1.0, support=[0.1, 1.0, 10.0], step=0.5)
    assert q.batch_shape == tf.TensorShape([2, 3])
    assert q.sample([4, 5], seed=1).shape == (4, 5, 2, 3)
    assert q.mean().shape == (2, 3) and q.variance().shape == (2, 3)
    np.testing.assert_allclose(
        q.variance().numpy()[0], 0.25 / 5 + np.array([0.01, 1.0, 100.0]) / 12
    )


def test_float64_is_preserved_with_python_float_support():
    q = EVAEPosterior(np.float64(0.0), np.float64(1.0), 0.1)
    assert q.dtype == tf.float64
    for value in (
        q.sample(3, seed=1),
        q.prob(0.0),
        q.log_prob(0.0),
        q.cdf(0.0),
        q.mean(),
        q.variance(),
    ):
        assert value.dtype == tf.float64
    assert EVAEPosterior(0.0, 1.0, 0.1).dtype == tf.float32


@pytest.mark.parametrize("name", ["spread", "support", "step"])
def test_validate_args_rejects_non_positive_parameters(name):
    kwargs = dict(loc=0.0, spread=1.0, support=0.1, step=0.3)
    kwargs[name] = 0.0
    with pytest.raises(tf.errors.InvalidArgumentError, match=f"`{name}` must be positive."):
        EVAEPosterior(**kwargs, validate_args=True)


def test_variable_parameters_are_tracked():
    loc, spread, support = tf.Variable(0.0), tf.Variable(1.0), tf.Variable(0.1)
    q = EVAEPosterior(loc, spread, support)
    assert len(q.trainable_variables) == 3


def test_default_event_space_bijector_maps_into_support():
    q = EVAEPosterior(0.5, 1.0, 0.2)
    lo, hi = support_bounds(0.5, 1.0, 0.2)
    z = q.experimental_default_event_space_bijector()(tf.constant([-30.0, 0.0, 30.0])).numpy()
    assert np.all(z >= lo - 1e-6) and np.all(z <= hi + 1e-6)
