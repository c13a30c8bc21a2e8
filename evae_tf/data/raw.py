"""A source's stored images (and labels) as an undecorated ``tf.data.Dataset``, and its size.

Local copies (IDX files, Keras' ``mnist.npz``) are read into memory with NumPy; TFDS
copies are read (and, for ``"tfds_download"``, first downloaded) by their TFDS builder.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from evae_tf.data.idx import IDX_FILES, idx_file, read_idx, read_idx_header
from evae_tf.data.registry import (
    KNOWN_NUM_EXAMPLES,
    RAW_SHAPES,
    check_name,
    num_classes,
    resolve_split,
)
from evae_tf.data.sources import Source, resolve_source, tfds
from evae_tf.errors import DataNotFoundError, IdxFormatError

__all__ = ["num_examples", "raw_dataset"]


def _idx_split(name: str, split: str, where: Path) -> str:
    if split not in IDX_FILES:
        raise ValueError(
            f"Split {split!r} of {name} is not available from {where}; "
            f"expected 'train', 'test' or 'holdout'."
        )
    return split


def _check_images(name: str, images: np.ndarray, where: Path) -> np.ndarray:
    """[N, 28, 28] uint8 → [N, 28, 28, 1]; anything else is an error naming ``where``."""
    raw = RAW_SHAPES[name]
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != raw[:2]:
        raise IdxFormatError(
            f"{where}: expected uint8 images shaped [N, {raw[0]}, {raw[1]}], "
            f"found {images.dtype} {list(images.shape)}"
        )
    return images[..., np.newaxis]


def _local_array(name: str, split: str, source: Source, index: int) -> tuple[np.ndarray, Path]:
    """The images (``index`` 0) or labels (1) of a split from IDX files or Keras' npz, and
    the file they came from."""
    assert source.path is not None
    split = _idx_split(name, split, source.path)
    if source.kind == "npz":
        with np.load(source.path) as archive:
            key = f"{'xy'[index]}_{split}"
            if key not in archive:
                raise ValueError(f"{source.path}: no array {key!r} (found {sorted(archive)})")
            return archive[key], source.path
    base = IDX_FILES[split][index]
    path = idx_file(source.path, base)
    if path is None:
        raise DataNotFoundError(f"No {base}[.gz] in {source.path}{' (needed for labels)' if index else ''}.")
    return read_idx(path), path


def _local_images(name: str, split: str, source: Source) -> np.ndarray:
    """[N, 28, 28, 1] uint8 images from IDX files or Keras' npz."""
    images, where = _local_array(name, split, source, 0)
    return _check_images(name, images, where)


def _local_labels(name: str, split: str, source: Source) -> np.ndarray:
    """[N] int32 labels from the IDX label file beside the images, or Keras' npz."""
    labels, where = _local_array(name, split, source, 1)
    if labels.ndim != 1:
        raise IdxFormatError(f"{where}: expected labels shaped [N], found {list(labels.shape)}")
    classes = num_classes(name)
    if labels.size and (labels.min() < 0 or labels.max() >= classes):
        raise IdxFormatError(
            f"{where}: labels must lie in [0, {classes - 1}], found [{labels.min()}, {labels.max()}]"
        )
    return labels.astype(np.int32)


def _local_dataset(name: str, split: str, source: Source, with_labels: bool) -> tf.data.Dataset:
    images = _local_images(name, split, source)
    if not with_labels:
        return tf.data.Dataset.from_tensor_slices(images)
    labels = _local_labels(name, split, source)
    if len(images) != len(labels):
        raise IdxFormatError(
            f"{source.path}: {len(images)} images but {len(labels)} labels in split {split!r}"
        )
    return tf.data.Dataset.from_tensor_slices((images, labels))


def _tfds_builder(name: str, source: Source) -> Any:
    return tfds().builder(name, data_dir=None if source.path is None else str(source.path))


def raw_dataset(
    name: str, split: str, source: Source, *, shuffle_files: bool = False, seed: int | None = None,
    with_labels: bool = False,
) -> tf.data.Dataset:
    """Undecorated dataset of stored uint8 images ``[h, w, c]`` of a resolved ``split``
    (:func:`~evae_tf.data.resolve_split`) and ``source``
    (:func:`~evae_tf.data.resolve_source`); with ``with_labels``, of ``(image, int32
    label)`` (:func:`~evae_tf.data.num_classes` checks the dataset has labels)."""
    if with_labels:
        num_classes(name)
    if not source.is_tfds:
        return _local_dataset(name, split, source, with_labels)
    builder = _tfds_builder(name, source)
    if source.kind == "tfds_download":
        builder.download_and_prepare()
    ds = builder.as_dataset(
        split=split,
        shuffle_files=shuffle_files,
        read_config=tfds().ReadConfig(shuffle_seed=seed, try_autocache=False),
    )
    if with_labels:
        return ds.map(lambda ex: (ex["image"], tf.cast(ex["label"], tf.int32)),
                      num_parallel_calls=tf.data.AUTOTUNE)
    return ds.map(lambda example: example["image"], num_parallel_calls=tf.data.AUTOTUNE)


def _tfds_num_examples(name: str, split: str, source: Source) -> int:
    builder = _tfds_builder(name, source)
    try:
        count = builder.info.splits[split].num_examples
    except (KeyError, ValueError):
        count = 0
    if count:
        return int(count)
    if source.kind != "tfds_download":
        # Prepared copies always carry split sizes; this covers TFDS' test mock.
        cardinality = int(builder.as_dataset(split=split).cardinality())
        if cardinality >= 0:
            return cardinality
    if (name, split) in KNOWN_NUM_EXAMPLES:
        return KNOWN_NUM_EXAMPLES[name, split]
    raise ValueError(f"Cannot tell the size of split {split!r} of {name} before it is downloaded.")


def num_examples(
    name: str,
    split: str,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    take: int | None = None,
    source: str | Source = "auto",
) -> int:
    """Number of images :func:`~evae_tf.data.load` yields for the same arguments (before
    batching)."""
    check_name(name)
    split = resolve_split(name, split)
    src = resolve_source(name, data_dir, source)
    if src.kind == "idx":
        assert src.path is not None
        split = _idx_split(name, split, src.path)
        path = idx_file(src.path, IDX_FILES[split][0])
        if path is None:
            raise DataNotFoundError(f"No {IDX_FILES[split][0]}[.gz] in {src.path}.")
        _, dims = read_idx_header(path)
        count = dims[0] if dims else 0
    elif src.kind == "npz":
        count = len(_local_images(name, split, src))
    else:
        count = _tfds_num_examples(name, split, src)
    return count if take is None else min(count, take)
