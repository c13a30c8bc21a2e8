"""Sharpness: the variance of the Laplace-filter response (docs/math.md, 'Metrics:
sharpness and FID'). Larger is sharper; a flat image scores 0.

    sharpness(images)            # a scalar: the mean over images
    sharpness_per_image(images)  # [batch]
"""

from __future__ import annotations

import tensorflow as tf

LUMA_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R 601
LAPLACE_FILTER = ((0.0, 1.0, 0.0), (1.0, -4.0, 1.0), (0.0, 1.0, 0.0))


def sharpness_per_image(images) -> tf.Tensor:
    """Variance of the Laplace-filter response of each image (WAE's sharpness).

    Args:
      images: ``[batch, H, W, C]`` in [0, 1], C = 1 (grayscale) or 3 (RGB, converted
        to grayscale with the ITU-R 601 luma weights).

    Returns:
      ``[batch]`` float32: the variance over pixels of the 3×3 Laplace response,
      valid padding.
    """
    images = tf.cast(tf.convert_to_tensor(images), tf.float32)
    if images.shape.rank != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(
            f"`images` must be [batch, H, W, 1 or 3]. Received: shape={images.shape}"
        )
    if images.shape[-1] == 3:
        images = tf.reduce_sum(images * tf.constant(LUMA_WEIGHTS), axis=-1, keepdims=True)
    kernel = tf.reshape(tf.constant(LAPLACE_FILTER), [3, 3, 1, 1])
    response = tf.nn.conv2d(images, kernel, strides=1, padding="VALID")
    return tf.math.reduce_variance(response, axis=[1, 2, 3])


def sharpness(images) -> tf.Tensor:
    """Mean over images of :func:`sharpness_per_image` (larger is sharper)."""
    return tf.reduce_mean(sharpness_per_image(images))
