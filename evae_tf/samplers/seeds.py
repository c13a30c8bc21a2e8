"""The one seed helper: every stateless draw of evae-tf takes its seed from here.

A stateless TensorFlow op (``tf.random.stateless_*``, TFP's ``sample(seed=...)``) takes a
seed of shape ``[2]``; the same seed gives the same numbers, in eager code, in a
``tf.function`` and inside an exported SavedModel.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

_INT32_SPAN = 2**31


def stateless_seed(seed=None) -> tf.Tensor:
    """An ``int32[2]`` stateless seed.

    * a Python or NumPy integer ``s`` → ``[s mod 2^31, (s div 2^31) mod 2^31]``, so a small
      ``s`` is ``[s, 0]``;
    * a seed tensor (``[2]``, int32 or int64) → itself, int64 values folded into int32 the
      way Keras' TensorFlow backend folds ``SeedGenerator.next()``
      (``floormod(seed, int32.max - 1)``); a value below ``2^31 - 1`` is unchanged;
    * ``None`` → a fresh seed from TensorFlow's global generator.
    """
    if seed is None:
        return tf.random.uniform([2], maxval=tf.int32.max, dtype=tf.int32)
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
        high, low = divmod(int(seed) % _INT32_SPAN**2, _INT32_SPAN)
        return tf.constant([low, high], tf.int32)
    seed = tf.convert_to_tensor(seed)
    if seed.dtype != tf.int32:
        seed = tf.cast(tf.math.floormod(tf.cast(seed, tf.int64), tf.int32.max - 1), tf.int32)
    return seed
