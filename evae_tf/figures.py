"""PNG figures for reports, drawn with Pillow (already a dependency; no matplotlib).

- :func:`image_panels`: labelled rows of image grids (the paper's Figure S2-S5 layout:
  hold-out originals, VAE reconstructions, EVAE reconstructions);
- :func:`line_chart`: curves with axes, ticks and a legend (Appendix E's validation
  reconstruction loss per epoch);
- :func:`save_png`: writes atomically.

    panels = image_panels([("hold-out", x), ("VAE", vae_recon), ("EVAE", evae_recon)], ncols=10)
    save_png(panels, "figures/reconstructions.png")
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from evae_tf.files import write_bytes_atomic

BACKGROUND = (255, 255, 255)
INK = (0, 0, 0)
GRID = (225, 225, 225)
# The paper's Appendix E draws EVAE red and VAE yellow; orange reads better on white.
MODEL_COLORS = {"evae": (214, 39, 40), "vae": (255, 160, 0)}
FALLBACK_COLORS = [(31, 119, 180), (44, 160, 44), (148, 103, 189), (140, 86, 75)]


def _font(size: int = 14) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: one bitmap size
        return ImageFont.load_default()


def _text_size(draw: ImageDraw.ImageDraw, text: str, font) -> tuple[int, int]:
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    return right - left, bottom - top


def tile(images: np.ndarray, ncols: int, pad: int = 2, scale: int = 1) -> np.ndarray:
    """``[N, h, w, C]`` images in [0, 1] (C = 1 or 3) → one uint8 RGB grid ``[H, W, 3]``.

    Images are laid out row by row, ``ncols`` per row, ``pad`` white pixels apart,
    each enlarged ``scale`` times (nearest neighbour).
    """
    images = np.asarray(images, np.float32)
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f"`images` must be [N, h, w, 1 or 3]. Received: shape={images.shape}")
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    if scale > 1:
        images = images.repeat(scale, axis=1).repeat(scale, axis=2)
    n, h, w, _ = images.shape
    ncols = max(1, min(ncols, n))
    rows = max(1, math.ceil(n / ncols))
    canvas = np.ones((rows * (h + pad) + pad, ncols * (w + pad) + pad, 3), np.float32)
    for i, image in enumerate(images):
        r, c = divmod(i, ncols)
        top, left = pad + r * (h + pad), pad + c * (w + pad)
        canvas[top:top + h, left:left + w] = image
    return np.round(np.clip(canvas, 0.0, 1.0) * 255).astype(np.uint8)


def image_panels(panels: Sequence[tuple[str, np.ndarray]], ncols: int = 10, scale: int = 2,
                 title: str | None = None) -> Image.Image:
    """Labelled rows of image grids: ``[(label, images [N, h, w, C]), ...]``, top to bottom."""
    font = _font(14)
    grids = [(label, tile(images, ncols, scale=scale)) for label, images in panels]
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    label_width = max((_text_size(probe, label, font)[0] for label, _ in grids), default=0) + 16
    title_height = (_text_size(probe, title, font)[1] + 14) if title else 0
    width = label_width + max(grid.shape[1] for _, grid in grids)
    height = title_height + sum(grid.shape[0] + 6 for _, grid in grids)
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((8, 6), title, fill=INK, font=font)
    top = title_height
    for label, grid in grids:
        text_h = _text_size(draw, label, font)[1]
        draw.text((8, top + (grid.shape[0] - text_h) // 2), label, fill=INK, font=font)
        canvas.paste(Image.fromarray(grid), (label_width, top))
        top += grid.shape[0] + 6
    return canvas


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About ``count`` round tick values covering [low, high]."""
    if not math.isfinite(low) or not math.isfinite(high):
        return []
    if high <= low:
        return [low]
    raw = (high - low) / max(1, count - 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.ceil(low / step) * step
    return [first + i * step for i in range(int((high - first) / step + 1e-9) + 1)]


def _format_tick(value: float, ticks: Sequence[float]) -> str:
    """``value`` with as many decimals as the spacing of ``ticks`` needs."""
    if abs(value) >= 1e6:
        return f"{value:.3g}"
    step = abs(ticks[1] - ticks[0]) if len(ticks) > 1 else (abs(value) or 1.0)
    exponent = math.floor(math.log10(step) + 1e-9)
    mantissa = round(step / 10**exponent, 6)
    decimals = max(0, -exponent + (1 if mantissa == 2.5 else 0))
    return f"{value:.{decimals}f}"


def line_chart(series: Sequence[tuple[str, Sequence[float], Sequence[float], tuple[int, int, int]]],
               title: str, xlabel: str, ylabel: str, size: tuple[int, int] = (720, 440)) -> Image.Image:
    """Curves ``[(label, xs, ys, rgb), ...]`` on shared axes with ticks and a legend.

    A label repeated across series is listed once in the legend (e.g. several seeds of
    one model drawn in one colour). Single points are drawn as dots.
    """
    width, height = size
    font = _font(13)
    canvas = Image.new("RGB", size, BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    left, right, top, bottom = 80, width - 20, 40, height - 55
    xs_all = [float(x) for _, xs, _, _ in series for x in xs]
    ys_all = [float(y) for _, _, ys, _ in series for y in ys if math.isfinite(float(y))]
    draw.text((left, 10), title, fill=INK, font=_font(15))
    if not xs_all or not ys_all:
        draw.text((left, (top + bottom) // 2), "no data", fill=INK, font=font)
        return canvas
    x_low, x_high = min(xs_all), max(xs_all)
    y_low, y_high = min(ys_all), max(ys_all)
    if x_high == x_low:
        x_low, x_high = x_low - 1, x_high + 1
    margin = (y_high - y_low) * 0.05 or max(abs(y_high) * 0.05, 1e-6)
    y_low, y_high = y_low - margin, y_high + margin

    def to_px(x: float, y: float) -> tuple[float, float]:
        return (left + (x - x_low) / (x_high - x_low) * (right - left),
                bottom - (y - y_low) / (y_high - y_low) * (bottom - top))

    y_ticks = _ticks(y_low, y_high)
    for y in y_ticks:
        _, py = to_px(x_low, y)
        draw.line([(left, py), (right, py)], fill=GRID)
        label = _format_tick(y, y_ticks)
        tw, th = _text_size(draw, label, font)
        draw.text((left - tw - 6, py - th / 2 - 2), label, fill=INK, font=font)
    x_ticks = [x for x in _ticks(x_low, x_high) if float(x).is_integer()] or _ticks(x_low, x_high)
    for x in x_ticks:
        px, _ = to_px(x, y_low)
        draw.line([(px, bottom), (px, bottom + 4)], fill=INK)
        label = _format_tick(x, x_ticks)
        tw, _ = _text_size(draw, label, font)
        draw.text((px - tw / 2, bottom + 6), label, fill=INK, font=font)
    draw.rectangle([left, top, right, bottom], outline=INK)
    tw, _ = _text_size(draw, xlabel, font)
    draw.text(((left + right - tw) / 2, bottom + 26), xlabel, fill=INK, font=font)
    label_image = Image.new("RGB", (_text_size(draw, ylabel, font)[0] + 4, 18), BACKGROUND)
    ImageDraw.Draw(label_image).text((2, 0), ylabel, fill=INK, font=font)
    label_image = label_image.rotate(90, expand=True)
    canvas.paste(label_image, (4, int((top + bottom - label_image.height) / 2)))

    legend: dict[str, tuple[int, int, int]] = {}
    for label, xs, ys, color in series:
        points = [to_px(float(x), float(y)) for x, y in zip(xs, ys, strict=True)
                  if math.isfinite(float(y))]
        if len(points) > 1:
            draw.line(points, fill=color, width=2)
        for px, py in points:
            draw.ellipse([px - 2.5, py - 2.5, px + 2.5, py + 2.5], fill=color)
        legend.setdefault(label, color)
    ly = top + 8
    for label, color in legend.items():
        tw, th = _text_size(draw, label, font)
        lx = right - tw - 40
        draw.line([(lx, ly + th / 2 + 2), (lx + 24, ly + th / 2 + 2)], fill=color, width=3)
        draw.text((lx + 30, ly), label, fill=INK, font=font)
        ly += th + 8
    return canvas


def save_png(image: Image.Image | np.ndarray, path: str | os.PathLike[str]) -> Path:
    """Writes ``image`` (PIL or uint8 ``[H, W, 3]``) as a PNG, atomically; returns the path."""
    path = Path(path)
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return write_bytes_atomic(path, buffer.getvalue())


def color_for(model: str, index: int = 0) -> tuple[int, int, int]:
    """The report colour of a model kind (EVAE red, VAE orange, as in the paper)."""
    return MODEL_COLORS.get(model, FALLBACK_COLORS[index % len(FALLBACK_COLORS)])
