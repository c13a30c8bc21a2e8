"""The tf.data pipelines: float32 image batches in [0, 1] at the networks' input size.

Usage:

    ds = load("fashion_mnist", "train", batch_size=100, shuffle=True, seed=0)
    next(iter(ds)).shape  # [100, 32, 32, 1], float32 in [0, 1]
    steps = num_examples("fashion_mnist", "train") // 100  # 600

The preprocessing per dataset is in :mod:`evae_tf.data.registry`; where the images come
from, in :mod:`evae_tf.data.sources`.
"""

from __future__ import annotations

import math
import os

import numpy as np
import tensorflow as tf

from evae_tf.data.raw import raw_dataset
from evae_tf.data.registry import CROP_SIZES, RAW_SHAPES, check_name, image_shape, resolve_split
from evae_tf.data.sources import Source, resolve_source

__all__ = [
    "CACHE_MAX_BYTES",
    "SHUFFLE_BUFFER_BYTES",
    "batch_pipeline",
    "center_crop",
    "load",
    "load_arrays",
    "pipeline_options",
    "preprocess",
]

# Cache the decoded uint8 images only when they fit in this many bytes (CelebA does not).
CACHE_MAX_BYTES = 1 << 30
# The shuffle buffer holds whole datasets up to this size, and this many bytes of images beyond.
SHUFFLE_BUFFER_BYTES = 256 << 20


def center_crop(images: tf.Tensor, size: int) -> tf.Tensor:
    """The central ``size × size`` window of ``[H, W, C]`` or ``[N, H, W, C]`` images
    (top-left rounding)."""
    return tf.image.resize_with_crop_or_pad(images, size, size)


def preprocess(name: str, images: tf.Tensor) -> tf.Tensor:
    """Stored uint8 images ``[..., h, w, c]`` → float32 ``[..., *IMAGE_SHAPES[name]]`` in [0, 1].

    Scales to [0, 1], centre-crops where the dataset needs it (CelebA: 140×140) and
    resizes bilinearly (no antialiasing) to the network's input size.
    """
    height, width, _ = image_shape(name)
    x = tf.cast(images, tf.float32) / 255.0
    if name in CROP_SIZES:
        x = center_crop(x, CROP_SIZES[name])
    if tuple(x.shape[-3:-1]) != (height, width):
        x = tf.image.resize(x, (height, width), method="bilinear", antialias=False)
        x = tf.clip_by_value(x, 0.0, 1.0)
    return x


def pipeline_options() -> tf.data.Options:
    """The ``tf.data.Options`` of every pipeline :func:`load` (and
    :func:`evae_tf.data.load_labelled`) returns: autotuning off.

    Keras' ``fit`` makes a new iterator of the training and of the validation data every
    epoch. With tf.data's autotuning on (TF 2.21), destroying a used iterator waits for its
    optimisation thread to finish the sleep it is in, which grows to several seconds during
    an epoch: measured 0.2–16 s per iterator, so ~15 s lost at every other epoch boundary
    of a Fashion-MNIST run (``make bench``, figure ``teardown``). Without it, parallel map
    uses one call per core and prefetch keeps its own legacy buffer tuning; the pipeline
    still delivers many times what the training step consumes (figure ``pipeline``).
    """
    options = tf.data.Options()
    options.autotune.enabled = False
    return options


def batch_pipeline(
    ds: tf.data.Dataset,
    name: str,
    *,
    batch_size: int,
    shuffle: bool = False,
    seed: int | None = None,
    drop_remainder: bool = False,
    cache: bool = False,
) -> tf.data.Dataset:
    """Stored images (or ``(image, label)`` pairs) → prefetched, preprocessed batches.

    ``cache`` keeps the uint8 images in memory when they fit (:data:`CACHE_MAX_BYTES`);
    the shuffle buffer holds the whole dataset up to :data:`SHUFFLE_BUFFER_BYTES`.
    """
    count = int(ds.cardinality())
    image_bytes = math.prod(RAW_SHAPES[name])
    if cache and 0 <= count * image_bytes <= CACHE_MAX_BYTES:
        ds = ds.cache()
    if shuffle:
        buffer = max(1, SHUFFLE_BUFFER_BYTES // image_bytes)
        if count >= 0:
            buffer = max(1, min(buffer, count))
        ds = ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    if isinstance(ds.element_spec, tuple):
        ds = ds.map(lambda x, y: (preprocess(name, x), y), num_parallel_calls=tf.data.AUTOTUNE)
    else:
        ds = ds.map(lambda x: preprocess(name, x), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE).with_options(pipeline_options())


def load(
    name: str,
    split: str,
    *,
    batch_size: int,
    shuffle: bool = False,
    seed: int | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    drop_remainder: bool = False,
    cache: bool = True,
    take: int | None = None,
    source: str | Source = "auto",
) -> tf.data.Dataset:
    """Batches of float32 images ``[batch, H, W, C]`` in [0, 1] (no labels).

    Args:
      name: one of :data:`~evae_tf.data.DATASETS`.
      split: ``"train"``, ``"holdout"`` (see :data:`~evae_tf.data.HOLDOUT_SPLIT`) or a
        TFDS split name.
      batch_size: images per batch.
      shuffle: shuffle the examples, differently each epoch.
      seed: makes the shuffle (and TFDS file order) deterministic.
      data_dir: explicit directory (see :func:`~evae_tf.data.find_source`).
      drop_remainder: drop the last, smaller batch.
      cache: keep TFDS' decoded uint8 images in memory when they fit (< 1 GiB); local
        IDX / npz images are in memory already.
      take: use only the first ``take`` examples.
      source: ``"auto"`` (:func:`~evae_tf.data.find_source`), ``"tfds"`` (TFDS only) or
        a :class:`~evae_tf.data.Source`.
    """
    check_name(name)
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive. Received: batch_size={batch_size}")
    if take is not None and take < 1:
        raise ValueError(f"take must be positive or None. Received: take={take}")
    split = resolve_split(name, split)
    src = resolve_source(name, data_dir, source)
    ds = raw_dataset(name, split, src, shuffle_files=shuffle, seed=seed)
    if take is not None:
        ds = ds.take(take)
    return batch_pipeline(ds, name, batch_size=batch_size, shuffle=shuffle, seed=seed,
                          drop_remainder=drop_remainder, cache=cache and src.is_tfds)


def load_arrays(
    name: str,
    split: str,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    take: int | None = None,
    source: str | Source = "auto",
    batch_size: int = 1000,
) -> np.ndarray:
    """All images of a split (in order) as one float32 array ``[N, H, W, C]`` in [0, 1]."""
    ds = load(
        name, split, batch_size=batch_size, data_dir=data_dir, cache=False, take=take,
        source=source,
    )
    batches = [batch.numpy() for batch in ds]
    if not batches:
        return np.zeros((0, *image_shape(name)), np.float32)
    return np.concatenate(batches)
