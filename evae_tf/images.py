"""Image grids and PNG bytes with numpy alone (Pillow encodes; no TensorFlow, no matplotlib).

The one tiling function of the project: TensorBoard's monitor (:mod:`evae_tf.training.monitor`),
the report figures (:mod:`evae_tf.experiments.figures`) and a thin serving client can all use it.

    png = encode_png(grid(images, ncols=8))   # images [N, H, W, C] -> one PNG
"""

from __future__ import annotations

import io
import math

import numpy as np


def grid(images, ncols: int | None = None, *, padding: int = 0, fill: float | int = 0) -> np.ndarray:
    """Tiles ``[N, H, W, C]`` images into one ``[rows*H + gaps, cols*W + gaps, C]`` image.

    Images are laid out row by row, ``ncols`` per row (default ``ceil(sqrt(N))``, a
    near-square layout; at most ``N``), ``padding`` pixels apart. Empty cells and the
    gaps between cells hold ``fill``. The dtype is kept.
    """
    images = np.asarray(images)
    if images.ndim != 4 or len(images) == 0:
        raise ValueError(f"images must be a non-empty [N, H, W, C] array. Received: shape={images.shape}")
    n, height, width, channels = images.shape
    if ncols is None:
        ncols = math.ceil(math.sqrt(n))
    if ncols < 1:
        raise ValueError(f"ncols must be >= 1. Received: ncols={ncols}")
    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    canvas = np.full((nrows * height + (nrows - 1) * padding, ncols * width + (ncols - 1) * padding,
                      channels), fill, dtype=images.dtype)
    for index, image in enumerate(images):
        row, col = divmod(index, ncols)
        top, left = row * (height + padding), col * (width + padding)
        canvas[top:top + height, left:left + width] = image
    return canvas


def to_uint8(image) -> np.ndarray:
    """An image as uint8: floats in [0, 1] are scaled by 255, rounded and clipped."""
    image = np.asarray(image)
    if image.dtype == np.uint8:
        return image
    return np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)


def encode_png(image) -> bytes:
    """``[H, W, C]`` image (C = 1, 3 or 4; float in [0, 1] or uint8) -> PNG bytes."""
    from PIL import Image

    image = to_uint8(image)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def decode_png(data: bytes) -> np.ndarray:
    """PNG bytes -> ``[H, W, C]`` float32 in [0, 1] (C = 1 for grayscale); the inverse of
    :func:`encode_png` for uint8 images."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        pixels = np.asarray(image, dtype=np.float32) / 255.0
    return pixels[..., None] if pixels.ndim == 2 else pixels
