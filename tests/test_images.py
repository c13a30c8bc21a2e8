"""evae_tf.images: the one image grid and PNG encoder, with numpy and Pillow only."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from evae_tf.images import decode_png, encode_png, grid


@pytest.mark.parametrize("n, ncols, shape", [(16, None, (4, 4)), (5, None, (2, 3)), (6, 6, (1, 6)), (3, 8, (1, 3))])
def test_grid_lays_images_out_row_by_row(n, ncols, shape):
    images = np.random.default_rng(0).random((n, 3, 2, 1)).astype(np.float32)
    tiled = grid(images, ncols)
    rows, cols = shape
    assert tiled.shape == (rows * 3, cols * 2, 1) and tiled.dtype == np.float32
    for index in range(n):
        row, col = divmod(index, cols)
        np.testing.assert_array_equal(tiled[row * 3:row * 3 + 3, col * 2:col * 2 + 2], images[index])
    assert tiled[(rows - 1) * 3:, (n - (rows - 1) * cols) * 2:].sum() == 0  # empty cells


def test_grid_padding_is_filled_between_cells_only():
    tiled = grid(np.zeros((4, 2, 2, 3), np.uint8), padding=1, fill=255)
    assert tiled.shape == (5, 5, 3)
    assert (tiled[2] == 255).all() and (tiled[:, 2] == 255).all() and tiled[:2, :2].sum() == 0
    with pytest.raises(ValueError, match="non-empty"):
        grid(np.ones((0, 2, 2, 1)))
    with pytest.raises(ValueError, match="ncols must be >= 1"):
        grid(np.ones((2, 2, 2, 1)), ncols=0)


def test_png_round_trip():
    rgb = np.random.default_rng(1).integers(0, 256, (4, 5, 3), dtype=np.uint8)
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(encode_png(rgb)))), rgb)
    gray = np.linspace(0, 1, 20, dtype=np.float32).reshape(4, 5, 1)
    decoded = np.asarray(Image.open(io.BytesIO(encode_png(gray))))
    np.testing.assert_array_equal(decoded, np.round(gray[..., 0] * 255).astype(np.uint8))
    # decode_png inverts it: uint8 images exactly, float ones to the nearest 1/255.
    np.testing.assert_array_equal(decode_png(encode_png(rgb)), rgb / np.float32(255))
    assert decode_png(encode_png(gray)).shape == (4, 5, 1)
    np.testing.assert_allclose(decode_png(encode_png(gray)), gray, atol=0.5 / 255 + 1e-7)


def test_a_thin_client_can_use_it_without_tensorflow_or_matplotlib():
    code = ("import sys, numpy as np; from evae_tf.images import encode_png, grid; "
            "encode_png(grid(np.zeros((3, 4, 4, 1)))); "
            "assert not {'tensorflow', 'keras', 'matplotlib'} & set(sys.modules), 'loaded'")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parents[1], timeout=60)
    assert result.returncode == 0, result.stderr
