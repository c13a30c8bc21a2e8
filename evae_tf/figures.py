"""PNG figures for reports, drawn with matplotlib's Agg renderer (no display needed).

- :func:`image_panels`: labelled rows of image grids (the paper's Figure S2-S5 layout:
  hold-out originals, VAE reconstructions, EVAE reconstructions);
- :func:`line_chart`: curves with axes, ticks and a legend (Appendix E's validation
  reconstruction loss per epoch);
- :func:`save_png`: writes atomically.

Both drawing functions return the rendered figure as a uint8 RGB array ``[H, W, 3]``.

    panels = image_panels([("hold-out", x), ("VAE", vae_recon), ("EVAE", evae_recon)], ncols=10)
    save_png(panels, "figures/reconstructions.png")
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from evae_tf.files import write_bytes_atomic
from evae_tf.images import encode_png, grid

DPI = 100
# The paper's Appendix E draws EVAE red and VAE yellow; orange reads better on white.
MODEL_COLORS = {"evae": "#d62728", "vae": "#ffa000"}
FALLBACK_COLORS = ["#1f77b4", "#2ca02c", "#9467bd", "#8c564b"]


def _render(figure: Figure) -> np.ndarray:
    """The figure drawn by Agg, as uint8 RGB ``[H, W, 3]``."""
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def _rgb_grid(images: np.ndarray, ncols: int, pad: int = 2) -> np.ndarray:
    """``[N, h, w, C]`` images in [0, 1] (C = 1 or 3) → one RGB grid, ``pad`` white pixels
    between and around the images."""
    images = np.asarray(images, np.float32)
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f"`images` must be [N, h, w, 1 or 3]. Received: shape={images.shape}")
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    tiled = grid(np.clip(images, 0.0, 1.0), ncols, padding=pad, fill=1.0)
    return np.pad(tiled, ((pad, pad), (pad, pad), (0, 0)), constant_values=1.0)


def image_panels(panels: Sequence[tuple[str, np.ndarray]], ncols: int = 10, scale: int = 2,
                 title: str | None = None) -> np.ndarray:
    """Labelled rows of image grids: ``[(label, images [N, h, w, C]), ...]``, top to bottom;
    each image pixel drawn ``scale`` × ``scale`` screen pixels."""
    grids = [(label, _rgb_grid(images, ncols)) for label, images in panels]
    width = max(g.shape[1] for _, g in grids) * scale / DPI + 0.8  # + the labels' column
    heights = [g.shape[0] * scale / DPI for _, g in grids]
    figure = Figure(figsize=(width, sum(heights) + 0.1 * len(grids) + (0.4 if title else 0.1)),
                    dpi=DPI, layout="constrained")
    axes = figure.subplots(len(grids), 1, squeeze=False, height_ratios=heights)[:, 0]
    for ax, (label, tiled) in zip(axes, grids, strict=True):
        ax.imshow(tiled, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(label)  # vertical, so the layout keeps it whole whatever its length
        for spine in ax.spines.values():
            spine.set_visible(False)
    if title:
        figure.suptitle(title)
    return _render(figure)


def line_chart(series: Sequence[tuple[str, Sequence[float], Sequence[float], str]],
               title: str, xlabel: str, ylabel: str, size: tuple[int, int] = (720, 440)) -> np.ndarray:
    """Curves ``[(label, xs, ys, color), ...]`` on shared axes with ticks and a legend;
    ``size`` in pixels.

    A label repeated across series is listed once in the legend (e.g. several seeds of
    one model drawn in one colour). Non-finite values are left out; single points show
    as dots.
    """
    figure = Figure(figsize=(size[0] / DPI, size[1] / DPI), dpi=DPI, layout="constrained")
    ax = figure.add_subplot()
    labelled: set[str] = set()
    for label, xs, ys, color in series:
        points = [(float(x), float(y)) for x, y in zip(xs, ys, strict=True) if math.isfinite(float(y))]
        if not points:
            continue
        px, py = zip(*points, strict=True)
        ax.plot(px, py, color=color, linewidth=2, marker="o", markersize=3,
                label=None if label in labelled else label)
        labelled.add(label)
    if labelled:
        ax.legend()
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    else:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    ax.grid(True, color="0.9")
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    return _render(figure)


def save_png(image, path: str | os.PathLike[str]) -> Path:
    """Writes ``image`` (uint8 ``[H, W, 3]``, or anything ``np.asarray`` makes one of,
    such as a PIL image) as a PNG, atomically; returns the path."""
    return write_bytes_atomic(Path(path), encode_png(np.asarray(image)))


def color_for(model: str, index: int = 0) -> str:
    """The report colour of a model kind (EVAE red, VAE orange, as in the paper)."""
    return MODEL_COLORS.get(model, FALLBACK_COLORS[index % len(FALLBACK_COLORS)])
