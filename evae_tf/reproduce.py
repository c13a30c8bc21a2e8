"""The paper's experiment grid and its report: the library behind ``python -m trainers.reproduce``.

``reproduce(dataset, latent_dims, models)`` trains and evaluates every cell
(model × d_z × seed) and writes a report directory::

    <out>/runs/<dataset>-<model>-d<dz>-s<seed>/   one run directory per cell (training.train)
    <out>/report.md                               Table 1/2 layout, ours beside the paper's
    <out>/results.csv                             one row per cell
    <out>/validation_curves.csv                   validation reconstruction loss per epoch
    <out>/figures/reconstructions.png             hold-out / VAE / EVAE at the largest d_z
    <out>/figures/prior_samples.png               samples from the paper's prior, both models
    <out>/figures/expost_samples.png              samples from their ex-post samplers
    <out>/figures/validation_reconstruction.png   Appendix E's curves

Re-running resumes: unfinished training continues (``training.train`` resumes by
itself), finished cells are not trained again, and a cell is evaluated again only
when its ``metrics.json`` is older than its ``model.keras`` or was made with other
FID settings. Every file is written atomically.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import io
import json
import logging
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from evae_tf import data as data_lib
from evae_tf import evaluation, figures, metrics, runs, training
from evae_tf.config import DEFAULT_FID, MODEL_KINDS, TRAIN_DEFAULTS, ModelConfig, TrainConfig
from evae_tf.files import write_json_atomic, write_text_atomic
from evae_tf.rundir import RunDir, RunDirError

log = logging.getLogger(__name__)

TIMING_FILE = "timing.json"
VALIDATION_TAG = "epoch_reconstruction"
FIGURE_IMAGES = 10  # hold-out images per row of the reconstruction figure

DATASET_TITLES = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST", "cifar10": "CIFAR-10",
                  "celeb_a": "CelebA"}

# The paper's Tables 1 and 2, copied as printed: d_z → model → (FID, sharpness) of hold-out
# reconstructions.
PAPER_RESULTS: dict[str, tuple[str, dict[int, dict[str, tuple[str, str]]]]] = {
    "mnist": ("Table 1", {
        8: {"vae": ("16.39", "0.0217"), "evae": ("14.20", "0.0245")},
        16: {"vae": ("12.66", "0.0244"), "evae": ("10.52", "0.0314")},
        32: {"vae": ("12.57", "0.0252"), "evae": ("8.13", "0.0340")},
        64: {"vae": ("12.53", "0.0245"), "evae": ("5.67", "0.0359")},
    }),
    "fashion_mnist": ("Table 1", {
        8: {"vae": ("41.33", "0.0154"), "evae": ("34.77", "0.0186")},
        16: {"vae": ("39.01", "0.0166"), "evae": ("25.05", "0.0222")},
        32: {"vae": ("37.66", "0.0166"), "evae": ("17.98", "0.0250")},
        64: {"vae": ("39.49", "0.0163"), "evae": ("11.87", "0.0276")},
    }),
    "cifar10": ("Table 2", {
        8: {"vae": ("229.2", "0.0354"), "evae": ("217.0", "0.0343")},
        16: {"vae": ("182.9", "0.0349"), "evae": ("163.9", "0.0346")},
        32: {"vae": ("147.2", "0.0353"), "evae": ("117.9", "0.0358")},
        64: {"vae": ("146.6", "0.0356"), "evae": ("79.78", "0.0360")},
    }),
    "celeb_a": ("Table 2", {
        8: {"vae": ("189.4", "0.0149"), "evae": ("193.2", "0.0145")},
        16: {"vae": ("145.2", "0.0153"), "evae": ("139.8", "0.0159")},
        32: {"vae": ("100.8", "0.0162"), "evae": ("94.40", "0.0160")},
        64: {"vae": ("76.48", "0.0165"), "evae": ("58.84", "0.0168")},
    }),
}
MODEL_TITLES = {"vae": "VAE", "evae": "EVAE"}
TABLE_MODELS = ("vae", "evae")  # the paper's column order

CSV_COLUMNS = (
    "dataset", "model", "latent_dim", "seed", "status", "epochs", "num_images",
    "holdout_loss", "holdout_reconstruction", "holdout_penalty", "penalty_name",
    "sharpness_reconstruction", "sharpness_prior_samples", "sharpness_expost_samples", "sharpness_holdout",
    "fid_network", "fid_reconstruction", "fid_prior_samples", "fid_expost_samples", "fid_skipped",
    "support_prior_mean", "support_posterior_median", "train_seconds", "evaluation_seconds",
    "workdir",
)


@dataclasses.dataclass(frozen=True)
class Cell:
    """One run of the grid."""

    dataset: str
    model: str
    latent_dim: int
    seed: int

    @property
    def name(self) -> str:
        return f"{self.dataset}-{self.model}-d{self.latent_dim}-s{self.seed}"


@dataclasses.dataclass
class CellResult:
    cell: Cell
    workdir: Path
    status: str  # "trained", "resumed_complete", "failed"
    metrics: dict[str, Any] | None = None
    error: str | None = None
    train_seconds: float | None = None
    trained_now: bool = False
    evaluated_now: bool = False


@dataclasses.dataclass
class ReproduceResult:
    out: Path
    report: Path
    cells: list[CellResult]
    fid_network: str
    fid_skipped: str | None


# --------------------------------------------------------------------------- cells


def grid(dataset: str, latent_dims: Sequence[int], models: Sequence[str], seeds: int) -> list[Cell]:
    """The cells, d_z-major then model then seed (seeds ``0 .. seeds-1``)."""
    return [Cell(dataset, m, int(d), s) for d in latent_dims for m in models for s in range(seeds)]


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def is_trained(workdir: Path, epochs: int) -> bool:
    """Whether the run has its final model and at least ``epochs`` finished epochs."""
    run = RunDir(workdir)
    done = run.epochs_done()
    return run.model_file.is_file() and done is not None and done >= epochs


def needs_evaluation(workdir: Path, fid: str, num_images: int | None, fid_available: bool) -> bool:
    """Whether ``metrics.json`` is missing, older than ``model.keras``, or from other settings."""
    path, model = RunDir(workdir).metrics_file, RunDir(workdir).model_file
    previous = _read_json(path)
    if previous is None or path.stat().st_mtime <= model.stat().st_mtime:
        return True
    if previous.get("fid_requested") != fid:
        return True
    if num_images is not None and previous.get("num_images") != num_images:
        return True
    was_skipped = previous.get("fid", {}).get("reconstruction", {}).get("fid") is None
    return was_skipped and fid_available


def _train_cell(cell: Cell, workdir: Path, *, epochs: int, batch_size: int, learning_rate: float,
                steps_per_epoch: int | None, data_dir, verbose) -> float:
    """Trains (or resumes) one cell; returns the seconds spent, accumulated in timing.json."""
    config = TrainConfig(
        dataset=cell.dataset,
        model=ModelConfig(kind=cell.model, image_shape=data_lib.image_shape(cell.dataset),
                          latent_dim=cell.latent_dim, seed=cell.seed),
        epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
        steps_per_epoch=steps_per_epoch, seed=cell.seed,
        data_dir=None if data_dir is None else str(data_dir), workdir=str(workdir),
    )
    start = time.monotonic()
    result = training.train(config, verbose=verbose)
    elapsed = time.monotonic() - start
    timing = _read_json(workdir / TIMING_FILE) or {}
    timing["train_seconds"] = float(timing.get("train_seconds", 0.0)) + elapsed
    write_json_atomic(str(workdir / TIMING_FILE), timing)
    if result.status == "interrupted":
        raise KeyboardInterrupt
    return timing["train_seconds"]


# --------------------------------------------------------------------------- the grid


def reproduce(
    dataset: str,
    latent_dims: Sequence[int],
    models: Sequence[str] = TABLE_MODELS,
    *,
    epochs: int = TRAIN_DEFAULTS["epochs"],
    seeds: int = 1,
    steps_per_epoch: int | None = None,
    batch_size: int = TRAIN_DEFAULTS["batch_size"],
    learning_rate: float = TRAIN_DEFAULTS["learning_rate"],
    fid: str = DEFAULT_FID,
    fid_weights: str | os.PathLike[str] | None = None,
    num_images: int | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    out: str | os.PathLike[str] | None = None,
    verbose: int | str = 0,
    command: str | None = None,
) -> ReproduceResult:
    """Trains and evaluates the grid, then writes the report (see the module docstring).

    Args:
      dataset: one of ``evae_tf.data.DATASETS``.
      latent_dims: the d_z values (the paper: 8 16 32 64).
      models: model kinds, from ``"evae"`` and ``"vae"``.
      epochs, batch_size, learning_rate, steps_per_epoch: training (Appendix C defaults).
      seeds: the number of seeds per cell (seeds 0 .. seeds-1).
      fid, fid_weights, num_images, cache_dir: evaluation, as in
        :func:`evae_tf.evaluation.evaluate_run`.
      data_dir: where the data is.
      out: the report directory (default ``reports/<dataset>``).
      verbose: Keras' fit verbosity.
      command: the command line, recorded in the report.

    A cell whose training fails (e.g. a non-finite loss) is reported as failed and the
    grid goes on. KeyboardInterrupt stops the grid; re-running resumes it.
    """
    latent_dims, models = _check_grid(dataset, latent_dims, models, seeds)
    out = Path(out) if out is not None else Path("reports") / dataset
    (out / "runs").mkdir(parents=True, exist_ok=True)
    network, network_name, skipped = evaluation.resolve_fid_network(
        fid, weights=fid_weights, dataset=dataset, data_dir=data_dir, cache_dir=cache_dir)
    train_kwargs = dict(epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
                        steps_per_epoch=steps_per_epoch, data_dir=data_dir, verbose=verbose)
    evaluate_kwargs = dict(fid=network if network is not None else fid, fid_weights=fid_weights,
                           num_images=num_images, data_dir=data_dir, cache_dir=cache_dir, stats_cache={})
    results = [_run_cell(cell, out / "runs" / cell.name, train_kwargs, evaluate_kwargs, fid=fid,
                         fid_available=network is not None)
               for cell in grid(dataset, latent_dims, models, seeds)]
    report = write_report(out, dataset, results, epochs=epochs, seeds=seeds,
                          fid_network=network_name, fid_description=getattr(network, "description", None),
                          fid_skipped=skipped, data_dir=data_dir, command=command)
    return ReproduceResult(out, report, results, network_name, skipped)


def _check_grid(dataset: str, latent_dims: Sequence[int], models: Sequence[str],
                seeds: int) -> tuple[list[int], list[str]]:
    """The grid's d_z values (sorted, unique) and model kinds (in ``MODEL_KINDS`` order),
    checked."""
    data_lib.image_shape(dataset)
    unknown = sorted(set(models) - set(MODEL_KINDS))
    if unknown or not models:
        raise ValueError(f"Unknown model kind(s) {unknown}; expected some of: {', '.join(MODEL_KINDS)}.")
    if not latent_dims or any(int(d) < 1 for d in latent_dims):
        raise ValueError(f"latent_dims must be positive integers. Received: {list(latent_dims)}")
    if seeds < 1:
        raise ValueError(f"seeds must be positive. Received: seeds={seeds}")
    return sorted({int(d) for d in latent_dims}), [m for m in MODEL_KINDS if m in models]


def _run_cell(cell: Cell, workdir: Path, train_kwargs: dict[str, Any], evaluate_kwargs: dict[str, Any],
              *, fid: str, fid_available: bool) -> CellResult:
    """Trains the cell unless it is trained, then evaluates it unless its metrics are up to date."""
    result = CellResult(cell, workdir, "complete")
    epochs = train_kwargs["epochs"]
    if not is_trained(workdir, epochs):
        log.info("Training %s (%d epochs)", cell.name, epochs)
        try:
            _train_cell(cell, workdir, **train_kwargs)
            result.trained_now = True
        except (training.TrainingError, RunDirError) as e:
            log.error("%s failed: %s", cell.name, e)
            result.status, result.error = "failed", str(e)
            return result
    else:
        log.info("%s: already trained; not training again.", cell.name)
    result.train_seconds = (_read_json(workdir / TIMING_FILE) or {}).get("train_seconds")
    if needs_evaluation(workdir, fid, evaluate_kwargs["num_images"], fid_available):
        log.info("Evaluating %s", cell.name)
        result.metrics = evaluation.evaluate_run(workdir, **evaluate_kwargs)
        result.evaluated_now = True
    else:
        log.info("%s: metrics.json is up to date; not evaluating again.", cell.name)
        result.metrics = _read_json(RunDir(workdir).metrics_file)
    return result


# --------------------------------------------------------------------------- the report


def _get(metrics_: dict | None, *keys):
    value: Any = metrics_
    for key in keys:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def _mean_sd(values: Sequence[float | None], digits: int) -> str:
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{np.mean(values):.{digits}f} ± {np.std(values, ddof=1):.{digits}f}"


def _paper(dataset: str, dz: int, model: str, index: int) -> str:
    table = PAPER_RESULTS.get(dataset, ("", {}))[1]
    if dz not in table or model not in table[dz]:
        return "—"
    return table[dz][model][index]


def validation_curve(workdir: Path, tag: str = VALIDATION_TAG) -> tuple[list[int], list[float]]:
    """``(epochs, values)`` of a run's validation ``tag`` from its TensorBoard events.

    Epochs count from 1; when a resumed run wrote an epoch twice, the last value wins.
    """
    logdir = RunDir(workdir).log_dir / "validation"
    if not logdir.is_dir():
        return [], []
    acc = EventAccumulator(str(logdir), size_guidance={"tensors": 0, "scalars": 0})
    tb_logger = logging.getLogger("tensorboard")
    level = tb_logger.level
    tb_logger.setLevel(logging.WARNING)  # its directory watcher logs every file at INFO
    try:
        acc.Reload()
    finally:
        tb_logger.setLevel(level)
    points: dict[int, float] = {}
    if tag in acc.Tags().get("tensors", []):
        for event in acc.Tensors(tag):
            points[int(event.step) + 1] = float(tf.make_ndarray(event.tensor_proto))
    elif tag in acc.Tags().get("scalars", []):
        for event in acc.Scalars(tag):
            points[int(event.step) + 1] = float(event.value)
    steps = sorted(points)
    return steps, [points[s] for s in steps]


def _csv_text(rows: list[dict[str, Any]], columns: Sequence[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row.get(k) is None else row[k] for k in columns})
    return buffer.getvalue()


def _csv_row(r: CellResult) -> dict[str, Any]:
    m = r.metrics
    return {
        "dataset": r.cell.dataset, "model": r.cell.model, "latent_dim": r.cell.latent_dim,
        "seed": r.cell.seed, "status": r.status if r.error is None else f"failed: {r.error}",
        "epochs": _get(m, "epochs"), "num_images": _get(m, "num_images"),
        "holdout_loss": _get(m, "holdout", "loss"),
        "holdout_reconstruction": _get(m, "holdout", "reconstruction"),
        "holdout_penalty": _get(m, "holdout", "penalty"),
        "penalty_name": _get(m, "holdout", "penalty_name"),
        "sharpness_reconstruction": _get(m, "sharpness", "reconstruction"),
        "sharpness_prior_samples": _get(m, "sharpness", "prior_samples"),
        "sharpness_expost_samples": _get(m, "sharpness", "expost_samples"),
        "sharpness_holdout": _get(m, "sharpness", "holdout"),
        "fid_network": _get(m, "fid", "network"),
        "fid_reconstruction": _get(m, "fid", "reconstruction", "fid"),
        "fid_prior_samples": _get(m, "fid", "prior_samples", "fid"),
        "fid_expost_samples": _get(m, "fid", "expost_samples", "fid"),
        "fid_skipped": _get(m, "fid", "reconstruction", "skipped"),
        "support_prior_mean": _get(m, "support", "prior", "mean"),
        "support_posterior_median": _get(m, "support", "posterior_holdout", "q50"),
        "train_seconds": r.train_seconds,
        "evaluation_seconds": _get(m, "evaluation_seconds"),
        "workdir": str(r.workdir),
    }


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
            figures.save_png(figures.image_panels(panels, ncols=FIGURE_IMAGES,
                                                  title=f"{title}: samples from {label} (seed 0)"),
                             out / "figures" / f"{key}.png")
            paths[key] = f"figures/{key}.png"
    return paths


def _figures(out: Path, dataset: str, results: list[CellResult], data_dir) -> dict[str, str]:
    """The PNG figures at the largest d_z (first seed); returns name → relative path."""
    done = [r for r in results if r.status != "failed" and RunDir(r.workdir).model_file.is_file()]
    if not done:
        return {}
    largest = max(r.cell.latent_dim for r in done)
    first_seed = min(r.cell.seed for r in done if r.cell.latent_dim == largest)
    chosen = {r.cell.model: r for r in done
              if r.cell.latent_dim == largest and r.cell.seed == first_seed}
    order = [m for m in TABLE_MODELS if m in chosen]
    loaded = {m: keras.models.load_model(RunDir(chosen[m].workdir).model_file) for m in order}
    holdout = data_lib.load_arrays(dataset, "holdout", data_dir=data_dir, take=FIGURE_IMAGES,
                                   batch_size=FIGURE_IMAGES)
    paths: dict[str, str] = {}
    title = DATASET_TITLES.get(dataset, dataset)

    panels = [("hold-out", holdout)]
    panels += [(f"{MODEL_TITLES[m]} d_z={largest}", loaded[m].reconstruct(holdout).numpy()) for m in order]
    figures.save_png(figures.image_panels(panels, ncols=FIGURE_IMAGES,
                                          title=f"{title}: hold-out images and reconstructions"),
                     out / "figures" / "reconstructions.png")
    paths["reconstructions"] = "figures/reconstructions.png"

    for m in order:
        loaded[m].latent_sampler = runs.load_sampler(chosen[m].workdir)
    paths.update(_sample_figures(out, title, loaded, largest))

    series = []
    for r in sorted(done, key=lambda r: (r.cell.model, r.cell.seed)):
        if r.cell.latent_dim != largest:
            continue
        epochs_, values = validation_curve(r.workdir)
        series.append((MODEL_TITLES.get(r.cell.model, r.cell.model), epochs_, values,
                       figures.color_for(r.cell.model)))
    figures.save_png(
        figures.line_chart(series, f"{title}: validation reconstruction loss (d_z={largest})",
                           "epoch", "BCE summed per image (mean)"),
        out / "figures" / "validation_reconstruction.png")
    paths["validation_reconstruction"] = "figures/validation_reconstruction.png"
    return paths


class _Table:
    """The evaluated cells of a grid, looked up by (model, d_z)."""

    def __init__(self, results: list[CellResult]):
        self.results = results
        self.dims = sorted({r.cell.latent_dim for r in results})
        self.by_cell: dict[tuple[str, int], list[CellResult]] = {}
        for r in results:
            self.by_cell.setdefault((r.cell.model, r.cell.latent_dim), []).append(r)
        self.evaluated = [r.metrics for r in results if r.metrics]

    def values(self, model: str, dz: int, *keys) -> list[float | None]:
        return [_get(r.metrics, *keys) for r in self.by_cell.get((model, dz), []) if r.metrics]

    def mean_sd(self, model: str, dz: int, digits: int, *keys) -> str:
        return _mean_sd(self.values(model, dz, *keys), digits)

    def cells(self):
        """``(d_z, model)`` of every cell the grid has, in the paper's order."""
        return [(dz, m) for dz in self.dims for m in TABLE_MODELS if (m, dz) in self.by_cell]


def _write_csvs(out: Path, results: list[CellResult]) -> None:
    write_text_atomic(out / "results.csv", _csv_text([_csv_row(r) for r in results], CSV_COLUMNS))
    curve_rows = []
    for r in results:
        for epoch, value in zip(*validation_curve(r.workdir), strict=True):
            curve_rows.append({"model": r.cell.model, "latent_dim": r.cell.latent_dim,
                               "seed": r.cell.seed, "epoch": epoch, "reconstruction": value})
    write_text_atomic(out / "validation_curves.csv",
                      _csv_text(curve_rows, ("model", "latent_dim", "seed", "epoch", "reconstruction")))


def _intro_lines(dataset: str, table: _Table, *, epochs: int, seeds: int, fid_network: str,
                 fid_description: str | None, fid_skipped: str | None, command: str | None) -> list[str]:
    """The title and the settings: grid, images, FID network and its caveats, failures."""
    results = table.results
    table_name = PAPER_RESULTS.get(dataset, ("", {}))[0]
    num_images = sorted({m["num_images"] for m in table.evaluated})
    models_run = [MODEL_TITLES[m] for m in TABLE_MODELS if any(r.cell.model == m for r in results)]
    lines = [
        f"# EVAE vs VAE on {DATASET_TITLES.get(dataset, dataset)}: reproduction of the paper's "
        f"{table_name or 'experiments'}",
        "",
        f"Generated {datetime.datetime.now().isoformat(timespec='seconds')}"
        + (f" by `{command}`" if command else "") + ".",
        "",
        f"- Grid: d_z ∈ {{{', '.join(map(str, table.dims))}}}, models {', '.join(models_run)}, "
        f"{seeds} seed(s) (0..{seeds - 1}), {epochs} epoch(s) each; the paper: 50 epochs, batch 100, "
        "Adam 1e-4.",
        f"- Hold-out images per evaluation: {', '.join(map(str, num_images)) or 'none'}.",
    ]
    if fid_skipped:
        lines.append(f"- **FID skipped**: {fid_skipped}.")
    else:
        lines.append(f"- FID network: `{fid_network}` — {fid_description}.")
    if num_images and min(num_images) < metrics.RECOMMENDED_FID_IMAGES and not fid_skipped:
        lines.append(f"- **Warning**: FIDs from fewer than {metrics.RECOMMENDED_FID_IMAGES:,} images "
                     "per side are biased upwards and not comparable with published FIDs.")
    if fid_network != "inception2015" and not fid_skipped:
        lines.append(f"- Our FIDs use `{fid_network}`, not the paper's Inception-v3 features: compare "
                     "them between VAE and EVAE, not with the paper's FID column.")
    lines += [f"- **{r.cell.name} failed**: {r.error}" for r in results if r.status == "failed"]
    lines.append("- Ours: mean ± sd over seeds (sd omitted for one seed). Sharpness: variance of the "
                 "Laplace-filtered grayscale image, averaged over images (larger is sharper).")
    return lines


def _reconstruction_lines(dataset: str, table: _Table, fid_label: str) -> list[str]:
    """Ours beside the paper's numbers, in the layout of the paper's table."""
    table_name = PAPER_RESULTS.get(dataset, ("", {}))[0]
    lines = [
        "",
        f"## Hold-out reconstructions ({table_name or 'paper'} layout)",
        "",
        f"FID of hold-out reconstructions against the hold-out images (ours: {fid_label}; "
        "paper: Inception-v3) and the sharpness of the reconstructions.",
        "",
    ]
    header = ["d_z"]
    for m in TABLE_MODELS:
        t = MODEL_TITLES[m]
        header += [f"{t} {fid_label} ours", f"{t} FID paper", f"{t} sharpness ours", f"{t} sharpness paper"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for dz in table.dims:
        row = [str(dz)]
        for m in TABLE_MODELS:
            row += [table.mean_sd(m, dz, 2, "fid", "reconstruction", "fid"), _paper(dataset, dz, m, 0),
                    table.mean_sd(m, dz, 4, "sharpness", "reconstruction"), _paper(dataset, dz, m, 1)]
        lines.append("| " + " | ".join(row) + " |")
    holdout_sharpness = sorted({_get(m, "sharpness", "holdout") for m in table.evaluated} - {None})
    return lines + ["", f"For scale: the sharpness of the real hold-out images is "
                    f"{', '.join(f'{v:.4f}' for v in holdout_sharpness) or 'n/a'}.", ""]


def _paper_lines(dataset: str) -> list[str]:
    """The paper's table for the dataset, as printed (none for datasets it does not report)."""
    table_name, paper = PAPER_RESULTS.get(dataset, ("", {}))
    if not paper:
        return []
    lines = [f"## The paper's {table_name} ({DATASET_TITLES.get(dataset, dataset)}), for reference", "",
             "FID (Inception-v3) and sharpness of hold-out reconstructions after 50 epochs.", "",
             "| d_z | VAE FID | VAE sharpness | EVAE FID | EVAE sharpness |", "|---|---|---|---|---|"]
    for dz, cells in sorted(paper.items()):
        v, e = cells["vae"], cells["evae"]
        lines.append(f"| {dz} | {v[0]} | {v[1]} | {e[0]} | {e[1]} |")
    return lines + [""]


def _beyond_lines(table: _Table, fid_label: str) -> list[str]:
    """Samples per sampler and the hold-out loss, which the paper does not tabulate."""
    lines = ["## Beyond the paper", "",
             "### Samples, per latent sampler", "",
             "Unconditional samples, as many as hold-out images, from the paper's prior (VAE: "
             "z ~ N(0, I); EVAE: z ~ Unif[-B_prior/2, B_prior/2]^d) and from the run's ex-post "
             "sampler (a Gaussian mixture fitted to the training set's posterior draws). The paper "
             "reports reconstructions only.", "",
             f"| d_z | model | {fid_label} prior samples | sharpness prior samples | "
             f"{fid_label} ex-post samples | sharpness ex-post samples |", "|---|---|---|---|---|---|"]
    for dz, m in table.cells():
        lines.append(f"| {dz} | {MODEL_TITLES[m]} | "
                     f"{table.mean_sd(m, dz, 2, 'fid', 'prior_samples', 'fid')} | "
                     f"{table.mean_sd(m, dz, 4, 'sharpness', 'prior_samples')} | "
                     f"{table.mean_sd(m, dz, 2, 'fid', 'expost_samples', 'fid')} | "
                     f"{table.mean_sd(m, dz, 4, 'sharpness', 'expost_samples')} |")
    lines += ["", "### Hold-out loss", "",
              "Means per image over the hold-out set: reconstruction = BCE summed over pixels; "
              "penalty = EVAE kernel term 3B/(5nr) summed over d_z, or VAE KL.", "",
              "| d_z | model | loss | reconstruction | penalty |", "|---|---|---|---|---|"]
    for dz, m in table.cells():
        lines.append(f"| {dz} | {MODEL_TITLES[m]} | {table.mean_sd(m, dz, 2, 'holdout', 'loss')} | "
                     f"{table.mean_sd(m, dz, 2, 'holdout', 'reconstruction')} | "
                     f"{table.mean_sd(m, dz, 3, 'holdout', 'penalty')} |")
    return lines


def _support_lines(results: list[CellResult]) -> list[str]:
    lines = ["", "### The EVAE's support B", "",
             "B_prior: the prior's support length per latent dimension (the running mean of the "
             "learned B, or the fixed B). Posterior B: the encoder's B over the hold-out images "
             "(all images and dimensions). The penalty is smallest as B → its floor, so learned B "
             "tends to shrink.", "",
             "| d_z | seed | mode | B_prior mean [min, max] | posterior B median [5%, 95%] |",
             "|---|---|---|---|---|"]
    for r in results:
        support = _get(r.metrics, "support")
        if r.cell.model == "evae" and support:
            p, q = support["prior"], support["posterior_holdout"]
            lines.append(f"| {r.cell.latent_dim} | {r.cell.seed} | {support['mode']} | "
                         f"{p['mean']:.4g} [{p['min']:.4g}, {p['max']:.4g}] | "
                         f"{q['q50']:.4g} [{q['q05']:.4g}, {q['q95']:.4g}] |")
    return lines


def _cells_lines(out: Path, results: list[CellResult]) -> list[str]:
    lines = ["", "### Cells and run time", "",
             "| cell | status | epochs | train time | evaluation time | run directory |",
             "|---|---|---|---|---|---|"]
    for r in results:
        train_s = f"{r.train_seconds:.0f} s" if r.train_seconds is not None else "n/a"
        eval_s = _get(r.metrics, "evaluation_seconds")
        eval_s = f"{eval_s:.0f} s" if eval_s is not None else "n/a"
        status = r.status if r.error is None else "failed"
        where = r.workdir.relative_to(out) if r.workdir.is_relative_to(out) else r.workdir
        lines.append(f"| {r.cell.name} | {status} | {_get(r.metrics, 'epochs') or 'n/a'} | {train_s} | "
                     f"{eval_s} | `{where}` |")
    return lines


FIGURE_CAPTIONS = {
    "reconstructions": "Hold-out images (top) and their reconstructions at the largest d_z "
                       "(the paper's Figures S2-S5).",
    "prior_samples": "Samples from the paper's prior of each model at the largest d_z.",
    "expost_samples": "Samples from each model's ex-post sampler (a Gaussian mixture fitted to the "
                      "training latents) at the largest d_z, same seed.",
    "validation_reconstruction": "Validation reconstruction loss per epoch at the largest d_z "
                                 "(the paper's Appendix E; EVAE red, VAE orange). Data: "
                                 "`validation_curves.csv`.",
}


def _figure_lines(figure_paths: dict[str, str]) -> list[str]:
    if not figure_paths:
        return []
    lines = ["", "## Figures", ""]
    for name, path in figure_paths.items():
        lines += [f"![{name}]({path})", "", FIGURE_CAPTIONS[name], ""]
    return lines


def write_report(out: Path, dataset: str, results: list[CellResult], *, epochs: int, seeds: int,
                 fid_network: str, fid_description: str | None, fid_skipped: str | None,
                 data_dir=None, command: str | None = None) -> Path:
    """Writes ``results.csv``, ``validation_curves.csv``, the figures and ``report.md``."""
    out = Path(out)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    _write_csvs(out, results)
    figure_paths = _figures(out, dataset, results, data_dir)
    table = _Table(results)
    fid_label = f"FID [{fid_network}]"
    lines = _intro_lines(dataset, table, epochs=epochs, seeds=seeds, fid_network=fid_network,
                         fid_description=fid_description, fid_skipped=fid_skipped, command=command)
    lines += _reconstruction_lines(dataset, table, fid_label)
    lines += _paper_lines(dataset)
    lines += _beyond_lines(table, fid_label)
    lines += _support_lines(results)
    lines += _cells_lines(out, results)
    lines += _figure_lines(figure_paths)
    lines += ["", "Per-cell numbers: `results.csv`; each cell's `metrics.json` is in its run directory.", ""]
    report = out / "report.md"
    write_text_atomic(report, "\n".join(lines))
    return report
