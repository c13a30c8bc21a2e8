"""Pure per-example loss terms of the EVAE and VAE objectives.

The objectives are in docs/math.md, 'The EVAE loss and its sign' and 'The baseline VAE'.

Every function returns one value per example (shape ``[batch]``): sums run over
pixels or latent dimensions here, and the mean over the batch is taken in one
place, the model's loss. All arithmetic is float32 (or the inputs' float64),
whatever the mixed-precision policy computes the networks in.
"""

from __future__ import annotations

import tensorflow as tf

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
    """The EVAE kernel penalty ``sum_d 3 B_d / (5 n r_d)`` of each example.

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
    support = tf.broadcast_to(_as_float(support, spread.dtype), tf.shape(spread))
    n = tf.cast(n, spread.dtype)
    return tf.reduce_sum(3.0 * support / (5.0 * n * spread), axis=-1)


def gaussian_kl(loc, log_var):
    """Analytic ``KL(N(loc, exp(log_var)) || N(0, I))`` of each example.

    Returns:
      ``[batch]`` tensor: ``1/2 sum_d (exp(log_var) + loc^2 - 1 - log_var)``.
    """
    loc = _as_float(loc)
    log_var = _as_float(log_var, loc.dtype)
    return 0.5 * tf.reduce_sum(tf.exp(log_var) + tf.square(loc) - 1.0 - log_var, axis=-1)
