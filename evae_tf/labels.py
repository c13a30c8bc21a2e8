"""Labelled batches ``(images, labels)`` for the datasets that have class labels.

:func:`evae_tf.data.load` yields images only (the VAEs are unsupervised). The domain
FID (``evae_tf.metrics.domain_network``) needs a classifier trained on the dataset's
own labels; this module batches them from the same source :mod:`evae_tf.data` finds and reads
(:func:`evae_tf.data.raw_dataset` with ``with_labels=True``):

| source          | labels from                                                   |
|-----------------|---------------------------------------------------------------|
| IDX files       | the label file beside the image file (``data.IDX_FILES``)     |
| Keras' npz      | ``y_train`` / ``y_test``                                      |
| TFDS            | the example's ``"label"`` feature                             |

CelebA has 40 binary attributes and no class label, so it is not supported here.

    ds = load_labelled("fashion_mnist", "train", batch_size=128, shuffle=True, seed=0)
    images, labels = next(iter(ds))  # [128, 32, 32, 1] float32 in [0, 1], [128] int32
"""

from __future__ import annotations

import os

import tensorflow as tf

from evae_tf import data
from evae_tf.data import NUM_CLASSES, num_classes

__all__ = ["NUM_CLASSES", "load_labelled", "num_classes"]


def load_labelled(
    name: str,
    split: str,
    *,
    batch_size: int,
    shuffle: bool = False,
    seed: int | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    take: int | None = None,
    source: str | data.Source = "auto",
) -> tf.data.Dataset:
    """Batches ``(images, labels)``: images as :func:`evae_tf.data.load` gives them,
    labels int32 in ``[0, num_classes(name))``.

    Arguments as for :func:`evae_tf.data.load`. Raises ValueError for datasets without
    class labels (CelebA) and the errors of :func:`evae_tf.data.find_source`.
    """
    num_classes(name)
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive. Received: batch_size={batch_size}")
    split = data.resolve_split(name, split)
    src = data.resolve_source(name, data_dir, source)
    ds = data.raw_dataset(name, split, src, shuffle_files=shuffle, seed=seed, with_labels=True)
    if take is not None:
        ds = ds.take(take)
    if shuffle:
        count = int(ds.cardinality())
        ds = ds.shuffle(max(1, min(count, 60_000)) if count > 0 else 10_000, seed=seed,
                        reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    ds = ds.map(lambda x, y: (data.preprocess(name, x), y), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE).with_options(data.pipeline_options())
