"""Sharpness against hand-computed values."""

import numpy as np
import pytest
from scipy import ndimage

from evae_tf import metrics


def test_flat_image_has_zero_sharpness():
    assert float(metrics.sharpness(np.full((2, 8, 8, 1), 0.7, np.float32))) == 0.0


def test_checkerboard_has_its_known_variance():
    board = (np.indices((8, 8)).sum(0) % 2).astype(np.float32)  # 0/1 checkerboard
    # Interior response: 4 neighbours of opposite value minus 4·centre = 4 - 8·centre → ±4.
    got = float(metrics.sharpness(board[None, :, :, None]))
    assert got == pytest.approx(16.0)


def test_matches_scipy_laplace_on_random_rgb_images():
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(3, 10, 12, 3)).astype(np.float32)
    gray = x @ np.array(metrics.LUMA_WEIGHTS, np.float32)
    expected = []
    for g in gray:
        full = ndimage.correlate(g.astype(np.float64), np.array(metrics.LAPLACE_FILTER), mode="constant")
        expected.append(full[1:-1, 1:-1].var())  # valid padding
    np.testing.assert_allclose(metrics.sharpness_per_image(x).numpy(), expected, rtol=1e-4)
    assert float(metrics.sharpness(x)) == pytest.approx(np.mean(expected), rel=1e-4)


def test_sharper_images_score_higher():
    rng = np.random.default_rng(1)
    x = rng.uniform(size=(4, 16, 16, 1)).astype(np.float32)
    blurred = ndimage.uniform_filter(x, size=(1, 3, 3, 1))
    assert float(metrics.sharpness(x)) > 5 * float(metrics.sharpness(blurred))


def test_bad_shape_is_rejected():
    with pytest.raises(ValueError, match=r"Received: shape=\(4, 4\)"):
        metrics.sharpness(np.zeros((4, 4), np.float32))
