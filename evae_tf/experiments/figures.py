"""The report's PNG figures, drawn with matplotlib's Agg renderer (no display needed).

- :func:`image_panels`: labelled rows of image grids (the paper's Figures S2-S5 layout:
  hold-out originals, VAE reconstructions, EVAE reconstructions);
- :func:`line_chart`: curves with axes, ticks and a legend (Appendix E's validation
  reconstruction loss per epoch);
- :func:`save_png`: writes atomically;
- :func:`report_figures`: the grid report's figures, drawn from its run directories.

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

from evae_tf import data, runs
from evae_tf.experiments.cells import CellResult
from evae_tf.experiments.events import validation_curve
from evae_tf.experiments.tables import MODEL_TITLES, TABLE_MODELS, dataset_title
from evae_tf.files import write_bytes_atomic
from evae_tf.images import encode_png, grid

DPI = 100
# The paper's Appendix E draws EVAE red and VAE yellow; orange reads better on white.
MODEL_COLORS = {"evae": "#d62728", "vae": "#ffa000"}
FALLBACK_COLORS = ["#1f77b4", "#2ca02c", "#9467bd", "#8c564b"]
FIGURE_IMAGES = 10  # hold-out images per row of the reconstruction figure


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


# --------------------------------------------------------------------------- the report's figures


def _sample_figures(out: Path, title: str, loaded: dict, largest: int) -> dict[str, str]:
    """Sample panels per latent sampler (seed 0): ``prior_samples`` and, for the models
    whose run has an ex-post sampler, ``expost_samples``."""
    paths = {}
    for key, label in (("prior_samples", "the paper's prior"), ("expost_samples", "the ex-post sampler")):
        panels = [(f"{MODEL_TITLES[m]} d_z={largest}",
                   model.generate(2 * FIGURE_IMAGES, seed=0, sampler="prior" if key == "prior_samples"
                                  else model.latent_sampler).numpy())
                  for m, model in loaded.items() if key == "prior_samples" or model.latent_sampler]
        if panels:
            save_png(image_panels(panels, ncols=FIGURE_IMAGES, title=f"{title}: samples from {label} (seed 0)"),
                     out / "figures" / f"{key}.png")
            paths[key] = f"figures/{key}.png"
    return paths


def _curves_figure(out: Path, title: str, done: list[CellResult], largest: int) -> str:
    """Appendix E's validation reconstruction loss per epoch, every seed at the largest d_z."""
    series = []
    for r in sorted(done, key=lambda r: (r.cell.model, r.cell.seed)):
        if r.cell.latent_dim == largest:
            epochs, values = validation_curve(r.workdir)
            series.append((MODEL_TITLES.get(r.cell.model, r.cell.model), epochs, values,
                           color_for(r.cell.model)))
    chart = line_chart(series, f"{title}: validation reconstruction loss (d_z={largest})",
                       "epoch", "BCE summed per image (mean)")
    save_png(chart, out / "figures" / "validation_reconstruction.png")
    return "figures/validation_reconstruction.png"


def report_figures(out: Path, dataset: str, results: list[CellResult], data_dir=None) -> dict[str, str]:
    """The PNG figures at the largest d_z (first seed) under ``out/figures``; returns
    name → path relative to ``out``."""
    done = [r for r in results if r.status != "failed" and runs.RunDir(r.workdir).model_file.is_file()]
    if not done:
        return {}
    largest = max(r.cell.latent_dim for r in done)
    first_seed = min(r.cell.seed for r in done if r.cell.latent_dim == largest)
    chosen = {r.cell.model: r for r in done if r.cell.latent_dim == largest and r.cell.seed == first_seed}
    loaded = {m: runs.load_model(chosen[m].workdir)[0] for m in TABLE_MODELS if m in chosen}
    holdout = data.load_arrays(dataset, "holdout", data_dir=data_dir, take=FIGURE_IMAGES,
                               batch_size=FIGURE_IMAGES)
    title = dataset_title(dataset)
    panels = [("hold-out", holdout)]
    panels += [(f"{MODEL_TITLES[m]} d_z={largest}", model.reconstruct(holdout).numpy())
               for m, model in loaded.items()]
    save_png(image_panels(panels, ncols=FIGURE_IMAGES, title=f"{title}: hold-out images and reconstructions"),
             out / "figures" / "reconstructions.png")
    paths = {"reconstructions": "figures/reconstructions.png"}
    paths.update(_sample_figures(out, title, loaded, largest))
    paths["validation_reconstruction"] = _curves_figure(out, title, done, largest)
    return paths
