"""Labelled batches ``(images, labels)`` for the datasets that have class labels.

:func:`evae_tf.data.load` yields images only (the VAEs are unsupervised). The domain
FID (``evae_tf.metrics.domain_network``) needs a classifier trained on the dataset's
own labels; this module reads them from the same source :mod:`evae_tf.data` finds:

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

import numpy as np
import tensorflow as tf

from evae_tf import data

__all__ = ["NUM_CLASSES", "load_labelled", "num_classes"]

NUM_CLASSES: dict[str, int] = {"mnist": 10, "fashion_mnist": 10, "cifar10": 10}


def num_classes(name: str) -> int:
    """Number of classes of ``name``; a ValueError for datasets without class labels."""
    data.image_shape(name)  # checks the name
    if name not in NUM_CLASSES:
        raise ValueError(
            f"{name} has no class labels (supported: {', '.join(NUM_CLASSES)})."
        )
    return NUM_CLASSES[name]


def _local_labels(name: str, split: str, source: data.Source) -> np.ndarray:
    assert source.path is not None
    split = data._idx_split(name, split, source.path)
    if source.kind == "npz":
        with np.load(source.path) as archive:
            key = f"y_{split}"
            if key not in archive:
                raise ValueError(f"{source.path}: no array {key!r} (found {sorted(archive)})")
            labels = archive[key]
        where = source.path
    else:
        base = data.IDX_FILES[split][1]
        path = data._idx_file(source.path, base)
        if path is None:
            raise data.DataNotFoundError(f"No {base}[.gz] in {source.path} (needed for labels).")
        labels, where = data.read_idx(path), path
    if labels.ndim != 1:
        raise data.IdxFormatError(f"{where}: expected labels shaped [N], found {list(labels.shape)}")
    classes = num_classes(name)
    if labels.size and (labels.min() < 0 or labels.max() >= classes):
        raise data.IdxFormatError(
            f"{where}: labels must lie in [0, {classes - 1}], found [{labels.min()}, {labels.max()}]"
        )
    return labels.astype(np.int32)


def _raw_labelled(name: str, split: str, source: data.Source, *, shuffle_files: bool,
                  seed: int | None) -> tf.data.Dataset:
    """Undecorated dataset of ``(uint8 image [h, w, c], int32 label)``."""
    if not source.is_tfds:
        images = data._local_images(name, split, source)
        labels = _local_labels(name, split, source)
        if len(images) != len(labels):
            raise data.IdxFormatError(
                f"{source.path}: {len(images)} images but {len(labels)} labels in split {split!r}"
            )
        return tf.data.Dataset.from_tensor_slices((images, labels))
    tfds = data._tfds()
    builder = data._tfds_builder(name, source)
    if source.kind == "tfds_download":
        builder.download_and_prepare()
    ds = builder.as_dataset(
        split=split,
        shuffle_files=shuffle_files,
        read_config=tfds.ReadConfig(shuffle_seed=seed, try_autocache=False),
    )
    return ds.map(lambda ex: (ex["image"], tf.cast(ex["label"], tf.int32)),
                  num_parallel_calls=tf.data.AUTOTUNE)


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
    split = data._resolve_split(name, split)
    src = data._source(name, data_dir, source)
    ds = _raw_labelled(name, split, src, shuffle_files=shuffle, seed=seed)
    if take is not None:
        ds = ds.take(take)
    if shuffle:
        count = int(ds.cardinality())
        ds = ds.shuffle(max(1, min(count, 60_000)) if count > 0 else 10_000, seed=seed,
                        reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    ds = ds.map(lambda x, y: (data.preprocess(name, x), y), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE).with_options(data.pipeline_options())
