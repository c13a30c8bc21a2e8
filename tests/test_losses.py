"""Per-example loss terms against hand-computed values and closed forms."""

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from evae_tf.models import losses


def test_bce_sum_matches_hand_computation():
    x = np.array([[[0.0, 1.0], [0.25, 0.5]], [[1.0, 1.0], [0.0, 0.0]]], np.float32)
    p = np.array([[[0.1, 0.9], [0.5, 0.2]], [[0.6, 0.7], [0.3, 0.4]]], np.float32)
    expected = -(x * np.log(p) + (1 - x) * np.log(1 - p)).reshape(2, -1).sum(-1)
    got = losses.bce_sum(x, p).numpy()
    assert got.shape == (2,)
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_bce_sum_clips_saturated_probabilities():
    x = np.array([[1.0, 0.0]], np.float32)
    p = np.array([[0.0, 1.0]], np.float32)  # worst case: log(0) without the clip
    got = losses.bce_sum(x, p).numpy()
    assert np.isfinite(got).all()
    eps = np.float32(losses.BCE_EPSILON)
    expected = -np.log(eps) - np.log1p(-(np.float32(1) - eps))  # the clip, in float32
    np.testing.assert_allclose(got, [expected], rtol=1e-5)


def test_bce_sum_is_float32_under_float16_inputs():
    x = tf.constant([[0.5, 0.5]], tf.float16)
    p = tf.constant([[0.5, 0.5]], tf.float16)
    got = losses.bce_sum(x, p)
    assert got.dtype == tf.float32
    np.testing.assert_allclose(got.numpy(), [2 * np.log(2)], rtol=1e-6)


def test_kernel_penalty_matches_formula():
    r = np.array([[0.5, 2.0, 1.0], [0.1, 0.2, 0.3]], np.float32)
    b = np.array([[1.0, 3.0, 0.5], [2.0, 2.0, 2.0]], np.float32)
    n = 7
    expected = (3 * b / (5 * n * r)).sum(-1)
    np.testing.assert_allclose(losses.kernel_penalty(r, b, n).numpy(), expected, rtol=1e-6)
    # A scalar B (fixed support) broadcasts.
    expected_fixed = (3 * 0.1 / (5 * n * r)).sum(-1)
    np.testing.assert_allclose(losses.kernel_penalty(r, 0.1, n).numpy(), expected_fixed, rtol=1e-6)


def test_kernel_penalty_is_b_times_roughness_over_n():
    # I(K_r) = ∫ K_r² = 3 / (5 r) for the Epanechnikov kernel of half-width r.
    r, b, n = 0.7, 1.3, 10
    t = np.linspace(-r, r, 200001)
    k = 3 / (4 * r) * (1 - (t / r) ** 2)
    roughness = np.trapezoid(k**2, t)
    got = losses.kernel_penalty([[r]], [[b]], n).numpy()[0]
    np.testing.assert_allclose(got, b * roughness / n, rtol=1e-6)


def test_kernel_penalty_gradients_have_the_formula_sign_and_size():
    r = tf.Variable([[0.5, 2.0]])
    b = tf.Variable([[1.0, 3.0]])
    n = 4.0
    with tf.GradientTape() as tape:
        pen = tf.reduce_sum(losses.kernel_penalty(r, b, n))
    dr, db = tape.gradient(pen, [r, b])
    np.testing.assert_allclose(dr.numpy(), -3 * b.numpy() / (5 * n * r.numpy() ** 2), rtol=1e-6)
    np.testing.assert_allclose(db.numpy(), 3 / (5 * n * r.numpy()), rtol=1e-6)
    assert (dr.numpy() < 0).all() and (db.numpy() > 0).all()  # wider kernels, smaller B: cheaper


def test_gaussian_kl_matches_tfp():
    rng = np.random.default_rng(0)
    mu = rng.normal(size=(3, 5)).astype(np.float32)
    log_var = rng.normal(size=(3, 5)).astype(np.float32)
    q = tfp.distributions.Normal(mu, np.exp(0.5 * log_var))
    p = tfp.distributions.Normal(0.0, 1.0)
    expected = tf.reduce_sum(tfp.distributions.kl_divergence(q, p), -1).numpy()
    np.testing.assert_allclose(losses.gaussian_kl(mu, log_var).numpy(), expected, rtol=1e-5)


def test_gaussian_kl_is_zero_at_the_prior_and_positive_elsewhere():
    np.testing.assert_allclose(losses.gaussian_kl([[0.0, 0.0]], [[0.0, 0.0]]).numpy(), [0.0], atol=1e-7)
    assert losses.gaussian_kl([[0.1, 0.0]], [[0.0, -0.2]]).numpy()[0] > 0
