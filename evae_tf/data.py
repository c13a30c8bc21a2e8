"""Input pipelines: float32 image batches in [0, 1] for the four EVAE datasets.

Each dataset is delivered at the size the networks expect (docs/math.md, 'Networks (Appendix B)'):

| name          | stored as        | delivered as | preprocessing                          |
|---------------|------------------|--------------|----------------------------------------|
| mnist         | 28×28×1 uint8    | 32×32×1      | bilinear resize                        |
| fashion_mnist | 28×28×1 uint8    | 32×32×1      | bilinear resize                        |
| cifar10       | 32×32×3 uint8    | 32×32×3      | none                                   |
| celeb_a       | 218×178×3 uint8  | 64×64×3      | centre crop 140×140, bilinear resize   |

Splits are the datasets' standard train / test splits; CelebA's official "validation"
split is its hold-out set (docs/math.md, 'Training defaults (Appendix C)').
``split="holdout"`` picks the right one.

The data can come from several places, tried in this order by :func:`find_source`:

1. an explicit directory (``data_dir=`` / ``--data-dir``, else the ``EVAE_DATA_DIR``
   environment variable): the four MNIST IDX files if it holds them, otherwise a TFDS
   ``data_dir``;
2. local IDX files for the MNIST-style datasets (Debian's ``dataset-fashion-mnist``
   package installs them in ``/usr/share/datasets/fashion-mnist``; Keras caches them in
   ``~/.keras/datasets``), see :data:`IDX_SEARCH_PATHS` and :data:`NPZ_SEARCH_PATHS`;
3. a TFDS copy already prepared in the default TFDS data directory;
4. a TFDS download, only when ``storage.googleapis.com`` answers within a few seconds.

When none applies, :class:`DataNotFoundError` says what was searched and how to get the data.

Usage:

    ds = load("fashion_mnist", "train", batch_size=100, shuffle=True, seed=0)
    next(iter(ds)).shape  # [100, 32, 32, 1], float32 in [0, 1]
    steps = num_examples("fashion_mnist", "train") // 100  # 600
"""

from __future__ import annotations

import dataclasses
import gzip
import logging
import math
import os
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import tensorflow as tf

from evae_tf import network

__all__ = [
    "DATASETS",
    "DataNotFoundError",
    "ENV_DATA_DIR",
    "HOLDOUT_SPLIT",
    "IDX_FILES",
    "IDX_SEARCH_PATHS",
    "IMAGE_SHAPES",
    "IdxFormatError",
    "NPZ_SEARCH_PATHS",
    "NUM_CLASSES",
    "Source",
    "center_crop",
    "find_source",
    "image_shape",
    "load",
    "load_arrays",
    "num_classes",
    "num_examples",
    "pipeline_options",
    "preprocess",
    "raw_dataset",
    "read_idx",
    "resolve_source",
    "resolve_split",
]

logger = logging.getLogger(__name__)

DATASETS: tuple[str, ...] = ("mnist", "fashion_mnist", "cifar10", "celeb_a")

IMAGE_SHAPES: dict[str, tuple[int, int, int]] = {
    "mnist": (32, 32, 1),
    "fashion_mnist": (32, 32, 1),
    "cifar10": (32, 32, 3),
    "celeb_a": (64, 64, 3),
}

HOLDOUT_SPLIT: dict[str, str] = {
    "mnist": "test",
    "fashion_mnist": "test",
    "cifar10": "test",
    "celeb_a": "validation",
}

# Shape of one stored image, and the centre crop applied before resizing (if any).
RAW_SHAPES: dict[str, tuple[int, int, int]] = {
    "mnist": (28, 28, 1),
    "fashion_mnist": (28, 28, 1),
    "cifar10": (32, 32, 3),
    "celeb_a": (218, 178, 3),
}
CROP_SIZES: dict[str, int] = {"celeb_a": 140}
# Datasets with class labels (CelebA has 40 binary attributes instead).
NUM_CLASSES: dict[str, int] = {"mnist": 10, "fashion_mnist": 10, "cifar10": 10}
MNIST_STYLE: tuple[str, ...] = ("mnist", "fashion_mnist")  # may come as IDX files

# Split sizes of the TFDS versions, used when TFDS does not know them yet (before a download).
KNOWN_NUM_EXAMPLES: dict[tuple[str, str], int] = {
    ("mnist", "train"): 60_000,
    ("mnist", "test"): 10_000,
    ("fashion_mnist", "train"): 60_000,
    ("fashion_mnist", "test"): 10_000,
    ("cifar10", "train"): 50_000,
    ("cifar10", "test"): 10_000,
    ("celeb_a", "train"): 162_770,
    ("celeb_a", "validation"): 19_867,
    ("celeb_a", "test"): 19_962,
}

ENV_DATA_DIR = "EVAE_DATA_DIR"

# The four files of an MNIST-style dataset, per split: (images, labels). Each may be gzipped.
IDX_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

# Directories searched for the four IDX files (step 2 of find_source). Tests replace these.
IDX_SEARCH_PATHS: dict[str, tuple[str, ...]] = {
    "mnist": ("~/.keras/datasets/mnist",),
    "fashion_mnist": (
        "/usr/share/datasets/fashion-mnist",  # Debian package dataset-fashion-mnist
        "~/.keras/datasets/fashion-mnist",  # keras.datasets.fashion_mnist.load_data()
    ),
}

# Keras' own MNIST format: one .npz with x_train, y_train, x_test, y_test.
NPZ_SEARCH_PATHS: dict[str, tuple[str, ...]] = {
    "mnist": ("~/.keras/datasets/mnist.npz",),
}

PROBE_ADDRESS: tuple[str, int] = ("storage.googleapis.com", 443)  # where TFDS downloads from

# Cache the decoded uint8 images only when they fit in this many bytes (CelebA does not).
CACHE_MAX_BYTES = 1 << 30
# The shuffle buffer holds whole datasets up to this size, and this many bytes of images beyond.
SHUFFLE_BUFFER_BYTES = 256 << 20

SourceKind = Literal["dir", "idx", "npz", "tfds_prepared", "tfds_download"]


class DataNotFoundError(Exception):
    """No copy of a dataset was found and none can be downloaded."""


class IdxFormatError(ValueError):
    """An IDX file is truncated, corrupt or not what was expected."""


@dataclasses.dataclass(frozen=True)
class Source:
    """Where a dataset's images come from.

    Attributes:
      kind: ``"idx"`` (a directory with the four IDX files), ``"npz"`` (Keras'
        ``mnist.npz``), ``"dir"`` (a TFDS copy prepared in an explicitly given
        directory), ``"tfds_prepared"`` (a TFDS copy prepared in the default TFDS
        directory) or ``"tfds_download"`` (TFDS will download into ``path``).
      path: the directory (or file, for ``"npz"``); for the TFDS kinds the TFDS
        ``data_dir`` root, ``None`` meaning TFDS' default.
    """

    kind: SourceKind
    path: Path | None = None

    @property
    def is_tfds(self) -> bool:
        return self.kind in ("dir", "tfds_prepared", "tfds_download")


# --------------------------------------------------------------------------- names, shapes


def _check_name(name: str) -> None:
    if name not in DATASETS:
        raise ValueError(f"Unknown dataset {name!r}; expected one of: {', '.join(DATASETS)}.")


def image_shape(name: str) -> tuple[int, int, int]:
    """Shape ``(H, W, C)`` of one image of ``name`` as delivered by :func:`load`."""
    _check_name(name)
    return IMAGE_SHAPES[name]


def num_classes(name: str) -> int:
    """Number of classes of ``name``; a ValueError for datasets without class labels."""
    _check_name(name)
    if name not in NUM_CLASSES:
        raise ValueError(f"{name} has no class labels (supported: {', '.join(NUM_CLASSES)}).")
    return NUM_CLASSES[name]


def resolve_split(name: str, split: str) -> str:
    """The split name behind ``"holdout"`` (:data:`HOLDOUT_SPLIT`); others unchanged."""
    return HOLDOUT_SPLIT[name] if split == "holdout" else split


# --------------------------------------------------------------------------- IDX files

_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"


def _read_bytes(path: Path, limit: int | None = None) -> bytes:
    """The file's bytes (up to ``limit``), decompressed when it is gzipped."""
    with open(path, "rb") as f:
        gzipped = f.read(2) == _GZIP_MAGIC
    if not gzipped:
        with open(path, "rb") as f:
            return f.read() if limit is None else f.read(limit)
    try:
        with gzip.open(path, "rb") as f:
            return f.read() if limit is None else f.read(limit)
    except (EOFError, OSError, zlib.error) as e:
        raise IdxFormatError(f"{path}: corrupt or truncated gzip data ({e})") from e


def _parse_idx_header(path: Path, data: bytes) -> tuple[np.dtype, tuple[int, ...], int]:
    """(dtype, dims, header length) of IDX bytes; raises IdxFormatError if malformed."""
    if len(data) < 4:
        raise IdxFormatError(f"{path}: truncated IDX header ({len(data)} bytes, expected at least 4)")
    if data[:2] != b"\x00\x00":
        raise IdxFormatError(
            f"{path}: not an IDX file (magic starts with 0x{data[:2].hex()}, expected 0x0000)"
        )
    code, ndim = data[2], data[3]
    if code not in _IDX_DTYPES:
        raise IdxFormatError(f"{path}: unknown IDX data type code 0x{code:02x}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise IdxFormatError(
            f"{path}: truncated IDX header ({len(data)} bytes, expected {header} for {ndim} dims)"
        )
    dims = struct.unpack(f">{ndim}I", data[4:header])
    return _IDX_DTYPES[code], dims, header


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Reads an IDX file (the MNIST format), gzipped or not, into a native-endian array.

    Raises:
      IdxFormatError: (a ``ValueError``) naming the path when the file is truncated, has
        the wrong magic number or holds a different number of bytes than its dims say.
    """
    path = Path(path)
    data = _read_bytes(path)
    dtype, dims, header = _parse_idx_header(path, data)
    expected = math.prod(dims) * dtype.itemsize
    found = len(data) - header
    if found != expected:
        raise IdxFormatError(
            f"{path}: expected {expected} bytes of data for dims {list(dims)}, found {found}"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    return array.astype(dtype.newbyteorder("="))


def _idx_file(directory: Path, base: str) -> Path | None:
    for candidate in (directory / base, directory / f"{base}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _has_idx_files(directory: Path) -> bool:
    return all(
        _idx_file(directory, base) is not None for pair in IDX_FILES.values() for base in pair
    )


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


# --------------------------------------------------------------------------- finding data


def _tfds() -> Any:
    import tensorflow_datasets as tfds  # deferred: slow to import, unneeded for IDX files

    return tfds


def _default_tfds_dir() -> Path:
    """TFDS' default data directory, read at call time (TFDS itself reads it at import)."""
    return Path(os.environ.get("TFDS_DATA_DIR", "~/tensorflow_datasets")).expanduser()


def _tfds_prepared(name: str, data_dir: Path) -> bool:
    return bool(_tfds().builder(name, data_dir=str(data_dir)).is_prepared())


def _not_found_message(name: str, searched: Sequence[str]) -> str:
    ways = []
    if name == "fashion_mnist":
        ways.append(
            "install the Debian package dataset-fashion-mnist (`apt-get install "
            "dataset-fashion-mnist`, or `make data`), which puts the IDX files in "
            "/usr/share/datasets/fashion-mnist"
        )
    if name in MNIST_STYLE:
        holding = "the four IDX files (train-images-idx3-ubyte[.gz] etc.) or a prepared TFDS copy"
    else:
        holding = "a prepared TFDS copy"
    ways.append(f"pass --data-dir (or set {ENV_DATA_DIR}) to a directory holding {holding}")
    ways.append(
        f"connect to the internet so TFDS can download it ({PROBE_ADDRESS[0]} is unreachable)"
    )
    return (
        f"No local copy of {name} was found and it cannot be downloaded. "
        f"Searched: {'; '.join(searched)}. "
        f"To fix this, {', or '.join(ways)}."
    )


def _explicit_source(name: str, directory: Path, *, allow_local: bool) -> Source:
    if not directory.is_dir():
        raise DataNotFoundError(
            f"Data directory {directory} (from --data-dir / {ENV_DATA_DIR}) does not exist "
            f"or is not a directory."
        )
    if not os.access(directory, os.R_OK | os.X_OK):
        raise DataNotFoundError(f"Data directory {directory} is not readable.")
    searched = []
    if allow_local and name in MNIST_STYLE:
        for candidate in (directory / name.replace("_", "-"), directory / name, directory):
            if _has_idx_files(candidate):
                return Source("idx", candidate)
        searched.append(f"IDX files in {directory}")
        if name in NPZ_SEARCH_PATHS and (directory / f"{name}.npz").is_file():
            return Source("npz", directory / f"{name}.npz")
    if _tfds_prepared(name, directory):
        return Source("dir", directory)
    searched.append(f"a prepared TFDS copy in {directory}")
    if network.reachable(PROBE_ADDRESS):
        return Source("tfds_download", directory)
    raise DataNotFoundError(_not_found_message(name, searched))


def find_source(
    name: str,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    allow_local: bool = True,
) -> Source:
    """Finds where ``name`` can be read from, in the order given in the module docstring.

    An explicit directory is used for MNIST-style data when it (or its subdirectory named
    after the dataset, e.g. ``fashion-mnist``) holds the four IDX files; IDX files carry no
    dataset name, so pointing ``mnist`` at Fashion-MNIST files reads them as MNIST.

    Args:
      name: one of :data:`DATASETS`.
      data_dir: an explicit directory; defaults to ``$EVAE_DATA_DIR`` when set.
      allow_local: when False, skip IDX / npz files and use TFDS only.

    Raises:
      ValueError: unknown dataset name.
      DataNotFoundError: the explicit directory is missing or unreadable, or nothing was
        found and the network is unreachable.
    """
    _check_name(name)
    explicit = data_dir if data_dir is not None else os.environ.get(ENV_DATA_DIR) or None
    if explicit is not None:
        source = _explicit_source(name, Path(explicit).expanduser(), allow_local=allow_local)
        logger.info("%s: reading from %s (%s)", name, source.path, source.kind)
        return source

    searched = []
    if allow_local:
        for directory in map(Path, IDX_SEARCH_PATHS.get(name, ())):
            directory = directory.expanduser()
            if _has_idx_files(directory):
                logger.info("%s: reading IDX files from %s", name, directory)
                return Source("idx", directory)
            searched.append(f"IDX files in {directory}")
        for file in map(Path, NPZ_SEARCH_PATHS.get(name, ())):
            file = file.expanduser()
            if file.is_file():
                logger.info("%s: reading %s", name, file)
                return Source("npz", file)
            searched.append(str(file))

    tfds_dir = _default_tfds_dir()
    if _tfds_prepared(name, tfds_dir):
        logger.info("%s: reading the TFDS copy prepared in %s", name, tfds_dir)
        return Source("tfds_prepared", tfds_dir)
    searched.append(f"a prepared TFDS copy in {tfds_dir}")

    if network.reachable(PROBE_ADDRESS):
        logger.info("%s: no local copy; TFDS will download it into %s", name, tfds_dir)
        return Source("tfds_download", tfds_dir)
    raise DataNotFoundError(_not_found_message(name, searched))


def resolve_source(
    name: str, data_dir: str | os.PathLike[str] | None, source: str | Source
) -> Source:
    """The :class:`Source` that ``source`` (``"auto"``, ``"tfds"`` or a Source) means."""
    if isinstance(source, Source):
        return source
    if source not in ("auto", "tfds"):
        raise ValueError(
            f"Unknown source {source!r}; expected 'auto', 'tfds' or a Source instance."
        )
    return find_source(name, data_dir, allow_local=source == "auto")


# --------------------------------------------------------------------------- preprocessing


def center_crop(images: tf.Tensor, size: int) -> tf.Tensor:
    """The central ``size × size`` window of ``[..., H, W, C]`` images (top-left rounding)."""
    height, width = images.shape[-3], images.shape[-2]
    return tf.image.crop_to_bounding_box(
        images, (height - size) // 2, (width - size) // 2, size, size
    )


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


# --------------------------------------------------------------------------- raw datasets


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
    path = _idx_file(source.path, base)
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
    return _tfds().builder(name, data_dir=None if source.path is None else str(source.path))


def raw_dataset(
    name: str, split: str, source: Source, *, shuffle_files: bool = False, seed: int | None = None,
    with_labels: bool = False,
) -> tf.data.Dataset:
    """Undecorated dataset of stored uint8 images ``[h, w, c]`` of a resolved ``split``
    (:func:`resolve_split`) and ``source`` (:func:`resolve_source`); with
    ``with_labels``, of ``(image, int32 label)`` (:func:`num_classes` checks the dataset
    has labels)."""
    if with_labels:
        num_classes(name)
    if not source.is_tfds:
        return _local_dataset(name, split, source, with_labels)
    tfds = _tfds()
    builder = _tfds_builder(name, source)
    if source.kind == "tfds_download":
        builder.download_and_prepare()
    ds = builder.as_dataset(
        split=split,
        shuffle_files=shuffle_files,
        read_config=tfds.ReadConfig(shuffle_seed=seed, try_autocache=False),
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
    """Number of images :func:`load` yields for the same arguments (before batching)."""
    _check_name(name)
    split = resolve_split(name, split)
    src = resolve_source(name, data_dir, source)
    if src.kind == "idx":
        assert src.path is not None
        split = _idx_split(name, split, src.path)
        path = _idx_file(src.path, IDX_FILES[split][0])
        if path is None:
            raise DataNotFoundError(f"No {IDX_FILES[split][0]}[.gz] in {src.path}.")
        _, dims, _ = _parse_idx_header(path, _read_bytes(path, limit=1024))
        count = dims[0] if dims else 0
    elif src.kind == "npz":
        count = len(_local_images(name, split, src))
    else:
        count = _tfds_num_examples(name, split, src)
    return count if take is None else min(count, take)


# --------------------------------------------------------------------------- public pipelines


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
      name: one of :data:`DATASETS`.
      split: ``"train"``, ``"holdout"`` (see :data:`HOLDOUT_SPLIT`) or a TFDS split name.
      batch_size: images per batch.
      shuffle: shuffle the examples, differently each epoch.
      seed: makes the shuffle (and TFDS file order) deterministic.
      data_dir: explicit directory (see :func:`find_source`).
      drop_remainder: drop the last, smaller batch.
      cache: keep the decoded uint8 images in memory when they fit (< 1 GiB).
      take: use only the first ``take`` examples.
      source: ``"auto"`` (:func:`find_source`), ``"tfds"`` (TFDS only) or a :class:`Source`.
    """
    _check_name(name)
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive. Received: batch_size={batch_size}")
    if take is not None and take < 1:
        raise ValueError(f"take must be positive or None. Received: take={take}")
    split = resolve_split(name, split)
    src = resolve_source(name, data_dir, source)
    ds = raw_dataset(name, split, src, shuffle_files=shuffle, seed=seed)
    if take is not None:
        ds = ds.take(take)

    count = int(ds.cardinality())
    image_bytes = math.prod(RAW_SHAPES[name])
    # Local IDX / npz images are in memory already; TFDS ones are decoded from files.
    if cache and src.is_tfds and 0 <= count * image_bytes <= CACHE_MAX_BYTES:
        ds = ds.cache()
    if shuffle:
        buffer = max(1, SHUFFLE_BUFFER_BYTES // image_bytes)
        if count >= 0:
            buffer = max(1, min(buffer, count))
        ds = ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    ds = ds.map(lambda images: preprocess(name, images), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE).with_options(pipeline_options())


def pipeline_options() -> tf.data.Options:
    """The ``tf.data.Options`` of every pipeline :func:`load` (and
    :func:`evae_tf.labels.load_labelled`) returns: autotuning off.

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

