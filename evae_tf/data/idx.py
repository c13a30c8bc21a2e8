"""The IDX file format (MNIST's) and the four-file layout of an MNIST-style directory.

Hand-written on purpose: the one IDX reader on PyPI (idx2numpy, last released 2020) is
unmaintained, reads no gzip and names no file in its errors; TFDS' MNIST parser is private.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from evae_tf.errors import IdxFormatError

__all__ = ["IDX_FILES", "has_idx_files", "idx_file", "read_idx", "read_idx_header"]

# The four files of an MNIST-style dataset, per split: (images, labels). Each may be gzipped.
IDX_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"
_HEADER_BYTES = 1024  # enough for the header of any IDX file with up to 255 dims


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


def _parse_header(path: Path, data: bytes) -> tuple[np.dtype, tuple[int, ...], int]:
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


def read_idx_header(path: str | os.PathLike[str]) -> tuple[np.dtype, tuple[int, ...]]:
    """The (big-endian) dtype and dims of an IDX file, reading only its first bytes."""
    path = Path(path)
    dtype, dims, _ = _parse_header(path, _read_bytes(path, limit=_HEADER_BYTES))
    return dtype, dims


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Reads an IDX file (the MNIST format), gzipped or not, into a native-endian array.

    Raises:
      IdxFormatError: (a ``ValueError``) naming the path when the file is truncated, has
        the wrong magic number or holds a different number of bytes than its dims say.
    """
    path = Path(path)
    data = _read_bytes(path)
    dtype, dims, header = _parse_header(path, data)
    expected = math.prod(dims) * dtype.itemsize
    found = len(data) - header
    if found != expected:
        raise IdxFormatError(
            f"{path}: expected {expected} bytes of data for dims {list(dims)}, found {found}"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    return array.astype(dtype.newbyteorder("="))


def idx_file(directory: Path, base: str) -> Path | None:
    """``directory/base`` or ``directory/base.gz``, whichever is a file (else None)."""
    for candidate in (directory / base, directory / f"{base}.gz"):
        if candidate.is_file():
            return candidate
    return None


def has_idx_files(directory: Path) -> bool:
    """Whether ``directory`` holds all four files of :data:`IDX_FILES`."""
    return all(
        idx_file(directory, base) is not None for pair in IDX_FILES.values() for base in pair
    )
