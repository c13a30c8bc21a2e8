"""Running the grid: train every cell (resuming), evaluate it, then write the report.

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

import dataclasses
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from evae_tf import data, evaluation, runs, training
from evae_tf.config import DEFAULT_FID, MODEL_KINDS, TRAIN_DEFAULTS, ModelConfig, TrainConfig
from evae_tf.errors import RunDirError, TrainingError
from evae_tf.experiments.cells import (
    TIMING_FILE,
    Cell,
    CellResult,
    grid,
    is_trained,
    needs_evaluation,
    read_json,
)
from evae_tf.experiments.report import write_report
from evae_tf.experiments.tables import TABLE_MODELS
from evae_tf.files import write_json_atomic

log = logging.getLogger(__name__)


@dataclasses.dataclass
class ReproduceResult:
    """The report directory, its ``report.md``, every cell's result and the FID network used."""

    out: Path
    report: Path
    cells: list[CellResult]
    fid_network: str
    fid_skipped: str | None


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
    data.image_shape(dataset)
    unknown = sorted(set(models) - set(MODEL_KINDS))
    if unknown or not models:
        raise ValueError(f"Unknown model kind(s) {unknown}; expected some of: {', '.join(MODEL_KINDS)}.")
    if not latent_dims or any(int(d) < 1 for d in latent_dims):
        raise ValueError(f"latent_dims must be positive integers. Received: {list(latent_dims)}")
    if seeds < 1:
        raise ValueError(f"seeds must be positive. Received: seeds={seeds}")
    return sorted({int(d) for d in latent_dims}), [m for m in MODEL_KINDS if m in models]


def _train_cell(cell: Cell, workdir: Path, *, epochs: int, batch_size: int, learning_rate: float,
                steps_per_epoch: int | None, data_dir, verbose) -> float:
    """Trains (or resumes) one cell; returns the seconds spent, accumulated in timing.json."""
    config = TrainConfig(
        dataset=cell.dataset,
        model=ModelConfig(kind=cell.model, image_shape=data.image_shape(cell.dataset),
                          latent_dim=cell.latent_dim, seed=cell.seed),
        epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
        steps_per_epoch=steps_per_epoch, seed=cell.seed,
        data_dir=None if data_dir is None else str(data_dir), workdir=str(workdir),
    )
    start = time.monotonic()
    result = training.train(config, verbose=verbose)
    elapsed = time.monotonic() - start
    timing = read_json(workdir / TIMING_FILE) or {}
    timing["train_seconds"] = float(timing.get("train_seconds", 0.0)) + elapsed
    write_json_atomic(str(workdir / TIMING_FILE), timing)
    if result.status == "interrupted":
        raise KeyboardInterrupt
    return timing["train_seconds"]


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
        except (TrainingError, RunDirError) as e:
            log.error("%s failed: %s", cell.name, e)
            result.status, result.error = "failed", str(e)
            return result
    else:
        log.info("%s: already trained; not training again.", cell.name)
    result.train_seconds = (read_json(workdir / TIMING_FILE) or {}).get("train_seconds")
    if needs_evaluation(workdir, fid, evaluate_kwargs["num_images"], fid_available):
        log.info("Evaluating %s", cell.name)
        result.metrics = evaluation.evaluate_run(workdir, **evaluate_kwargs)
        result.evaluated_now = True
    else:
        log.info("%s: metrics.json is up to date; not evaluating again.", cell.name)
        result.metrics = read_json(runs.RunDir(workdir).metrics_file)
    return result
