"""Writers of small IDX datasets for tests (the MNIST file format)."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

from evae_tf import data

IDX_CODES = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C,
             np.float32: 0x0D, np.float64: 0x0E}


def write_idx(path: Path, array: np.ndarray, *, gz: bool = False) -> Path:
    """Writes ``array`` in the IDX format (big-endian), gzipped when ``gz``."""
    header = struct.pack(">BBBB", 0, 0, IDX_CODES[array.dtype.type], array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(payload))
    else:
        path.write_bytes(payload)
    return path


def write_mnist_dir(directory: Path, n_train: int, n_test: int, *, gz: bool = False,
                    size: int = 28) -> dict[str, np.ndarray]:
    """The four MNIST IDX files with random images; returns the images per split."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    images = {}
    for split, n in (("train", n_train), ("test", n_test)):
        image_name, label_name = data.IDX_FILES[split]
        images[split] = rng.integers(0, 256, (n, size, size), dtype=np.uint8)
        write_idx(directory / image_name, images[split], gz=gz)
        write_idx(directory / label_name, rng.integers(0, 10, n, dtype=np.uint8), gz=gz)
    return images
