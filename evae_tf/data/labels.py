"""Labelled batches ``(images, labels)`` for the datasets that have class labels.

:func:`evae_tf.data.load` yields images only (the VAEs are unsupervised). The domain
FID (``evae_tf.evaluation``'s domain network) needs a classifier trained on the dataset's
own labels; this module batches them from the same source :mod:`evae_tf.data.sources` finds
(:func:`evae_tf.data.raw_dataset` with ``with_labels=True``):

| source          | labels from                                                   |
|-----------------|---------------------------------------------------------------|
| IDX files       | the label file beside the image file (``IDX_FILES``)          |
| Keras' npz      | ``y_train`` / ``y_test``                                      |
| TFDS            | the example's ``"label"`` feature                             |

CelebA has 40 binary attributes and no class label, so it is not supported here.

    ds = load_labelled("fashion_mnist", "train", batch_size=128, shuffle=True, seed=0)
    images, labels = next(iter(ds))  # [128, 32, 32, 1] float32 in [0, 1], [128] int32
"""

from __future__ import annotations

import os

import tensorflow as tf

from evae_tf.data.pipeline import batch_pipeline
from evae_tf.data.raw import raw_dataset
from evae_tf.data.registry import num_classes, resolve_split
from evae_tf.data.sources import Source, resolve_source

__all__ = ["load_labelled"]


def load_labelled(
    name: str,
    split: str,
    *,
    batch_size: int,
    shuffle: bool = False,
    seed: int | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    take: int | None = None,
    source: str | Source = "auto",
) -> tf.data.Dataset:
    """Batches ``(images, labels)``: images as :func:`evae_tf.data.load` gives them,
    labels int32 in ``[0, num_classes(name))``.

    Arguments as for :func:`evae_tf.data.load`. Raises ValueError for datasets without
    class labels (CelebA) and the errors of :func:`evae_tf.data.find_source`.
    """
    num_classes(name)
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive. Received: batch_size={batch_size}")
    split = resolve_split(name, split)
    src = resolve_source(name, data_dir, source)
    ds = raw_dataset(name, split, src, shuffle_files=shuffle, seed=seed, with_labels=True)
    if take is not None:
        ds = ds.take(take)
    return batch_pipeline(ds, name, batch_size=batch_size, shuffle=shuffle, seed=seed)
