"""Pure per-example loss terms of the EVAE and VAE objectives.

The objectives are in docs/math.md, 'The EVAE loss and its sign' and 'The baseline VAE'.

Every function returns one value per example (shape ``[batch]``): sums run over
pixels or latent dimensions here, and the mean over the batch is taken in one
place, the model's loss. All arithmetic is float32 (or the inputs' float64),
whatever the mixed-precision policy computes the networks in.
"""

from __future__ import annotations

import tensorflow as tf
import tensorflow_probability as tfp

from evae_tf.distributions import Epanechnikov

BCE_EPSILON = 1e-7  # Keras' clipping constant for probabilities.


def _as_float(x, dtype=None):
    x = tf.convert_to_tensor(x)
    if dtype is None:
        dtype = tf.float64 if x.dtype == tf.float64 else tf.float32
    return tf.cast(x, dtype)


def bce_sum(x, x_hat, epsilon: float = BCE_EPSILON):
    """Binary cross-entropy summed over all pixels and channels of each image.

    Args:
      x: targets in [0, 1], shape ``[batch, ...]``.
      x_hat: Bernoulli means in (0, 1) (the decoder's sigmoid output), same shape.
      epsilon: ``x_hat`` is clipped to ``[epsilon, 1 - epsilon]`` before the log.

    Returns:
      ``[batch]`` tensor: ``-sum(x log x_hat + (1 - x) log(1 - x_hat))``.
    """
    x_hat = _as_float(x_hat)
    x = _as_float(x, x_hat.dtype)
    p = tf.clip_by_value(x_hat, epsilon, 1.0 - epsilon)
    elementwise = -(x * tf.math.log(p) + (1.0 - x) * tf.math.log1p(-p))
    return tf.reduce_sum(tf.reshape(elementwise, [tf.shape(x)[0], -1]), axis=-1)


def kernel_penalty(spread, support, n):
    """The EVAE kernel penalty ``sum_d 3 B_d / (5 n r_d)`` of each example, from
    :meth:`Epanechnikov.roughness`.

    This is ``B * I(K_r) / n`` summed over latent dimensions, where
    ``I(K_r) = 3 / (5 r)`` is the roughness of the Epanechnikov kernel of
    half-width ``r`` (docs/math.md, 'The Epanechnikov kernel and its location-scale
    family' and 'The EVAE loss and its sign').

    Args:
      spread: ``r > 0``, shape ``[batch, latent_dim]``.
      support: ``B > 0``, broadcastable to ``spread`` (a scalar for fixed B).
      n: the sample size in the bound (by default the minibatch size).

    Returns:
      ``[batch]`` tensor.
    """
    spread = _as_float(spread)
    support = _as_float(support, spread.dtype)
    roughness = Epanechnikov(loc=tf.zeros_like(spread), scale=spread).roughness()
    return tf.reduce_sum(support * roughness / tf.cast(n, spread.dtype), axis=-1)


def gaussian_kl(loc, log_var):
    """Analytic ``KL(N(loc, exp(log_var)) || N(0, I))`` of each example (TFP's Normal KL).

    Returns:
      ``[batch]`` tensor: ``1/2 sum_d (exp(log_var) + loc^2 - 1 - log_var)``.
    """
    loc = _as_float(loc)
    log_var = _as_float(log_var, loc.dtype)
    posterior = tfp.distributions.Normal(loc, tf.exp(0.5 * log_var))
    prior = tfp.distributions.Normal(tf.zeros_like(loc), tf.ones_like(loc))
    return tf.reduce_sum(tfp.distributions.kl_divergence(posterior, prior), axis=-1)
