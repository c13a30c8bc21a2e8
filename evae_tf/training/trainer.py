"""Training runs: the library function behind ``python -m trainers.fit``.

``train(config)`` trains the configured model on the configured dataset and leaves a
run directory (its layout: :mod:`evae_tf.runs`): ``config.json``, the final
``model.keras``, resumable ``checkpoints/``, TensorBoard ``logs/`` and the ex-post
sampler.

Re-running with the same workdir resumes after the last finished epoch. Every file is
written atomically (a temporary file renamed into place).
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from evae_tf import data as data_lib
from evae_tf import runs
from evae_tf.config import TrainConfig
from evae_tf.errors import NonFiniteLossError, RunDirError
from evae_tf.runs import (
    RunDir,
    load_resume_weights,
    prepare_workdir,
    read_state,
    remove_leftovers,
    save_model_atomic,
)
from evae_tf.training.callbacks import (
    EpochCheckpoint,
    GracefulStop,
    NonFiniteGuard,
    stop_on_signals,
)
from evae_tf.training.distribute import fit_custom_loop, is_chief, make_strategy, resolve_precision
from evae_tf.training.monitor import Monitor, hparams_of, monitor_batch, write_sampler_grids

log = logging.getLogger(__name__)


@dataclasses.dataclass
class TrainResult:
    workdir: Path
    status: str  # "completed", "already_complete", "interrupted"
    initial_epoch: int
    epochs_done: int
    history: dict[str, list[float]]
    best_val_loss: float | None
    model_path: Path | None
    model: keras.Model | None = None
    sampler_path: Path | None = None  # the ex-post sampler fitted (or found) when training ended



def default_workdir(config: TrainConfig, root: str = "runs") -> str:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return os.path.join(root, f"{config.dataset}-{config.model.kind}-d{config.model.latent_dim}-{stamp}")


def datasets(config: TrainConfig, strategy: tf.distribute.Strategy | None = None):
    """The run's shuffled training batches and its hold-out batches, as training reads them."""
    strategy = strategy or tf.distribute.get_strategy()
    source = data_lib.find_source(config.dataset, config.data_dir)
    log.info("Data: %s from %s (%s)", config.dataset, source.path, source.kind)
    train = data_lib.load(config.dataset, "train", batch_size=config.batch_size, shuffle=True,
                          seed=config.seed, data_dir=config.data_dir, drop_remainder=True, source=source)
    holdout = data_lib.load(config.dataset, "holdout", batch_size=config.batch_size,
                            data_dir=config.data_dir, source=source,
                            drop_remainder=strategy.num_replicas_in_sync > 1)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return train.with_options(options), holdout.with_options(options)


def _setup(config: TrainConfig) -> tuple[TrainConfig, tf.distribute.Strategy, bool, Path]:
    """Sets the dtype policy, strategy and seeds; prepares the run directory (a
    temporary one on workers other than the chief)."""
    if config.workdir is None:
        config = dataclasses.replace(config, workdir=default_workdir(config))
    policy = resolve_precision(config.precision)
    keras.mixed_precision.set_global_policy(policy)
    strategy = make_strategy(config.strategy)
    chief = is_chief(strategy)
    workdir = prepare_workdir(config) if chief else Path(tempfile.mkdtemp(prefix="evae-worker-"))
    RunDir(workdir).checkpoint_dir.mkdir(exist_ok=True)
    if config.model.seed is None:  # a copy: the caller's config and config.json stay as given
        config = dataclasses.replace(config, model=dataclasses.replace(config.model, seed=config.seed))
    keras.utils.set_random_seed(config.seed)
    log.info("Run %s: %s on %s, precision %s, %d replica(s)", workdir, config.model.kind,
             config.dataset, policy, strategy.num_replicas_in_sync)
    return config, strategy, chief, workdir


def _resume(model: keras.Model, config: TrainConfig, workdir: Path, chief: bool) -> dict[str, Any] | None:
    """Loads the last checkpoint into ``model``; returns its state (``None``: a new run).

    Every worker resumes from the chief's checkpoint so that all start at the same epoch.
    """
    state = RunDir(config.workdir).read_state()
    if chief:
        remove_leftovers(RunDir(workdir).checkpoint_dir, state)
    if state is not None:
        load_resume_weights(model, state)
        log.info("Resuming %s after epoch %d (of %d).", workdir, state["epoch"], config.epochs)
    return state


def _callbacks(config: TrainConfig, workdir: Path, chief: bool, holdout_ds, state,
               extra) -> tuple[GracefulStop, NonFiniteGuard, EpochCheckpoint, list]:
    stop = GracefulStop()
    guard = NonFiniteGuard()
    checkpoint = EpochCheckpoint(RunDir(workdir).checkpoint_dir, state, enabled=chief, stop=stop)
    all_callbacks: list[keras.callbacks.Callback] = [stop, guard, checkpoint]
    if chief:
        logdir = RunDir(workdir).log_dir
        all_callbacks += [
            keras.callbacks.TensorBoard(log_dir=str(logdir), write_graph=False),
            Monitor(logdir, monitor_batch(holdout_ds), hparams_of(config), seed=config.seed),
        ]
    return stop, guard, checkpoint, all_callbacks + list(extra or [])


def _fit(model, strategy, train_ds, holdout_ds, config: TrainConfig, initial_epoch: int,
         callbacks, verbose, stop: GracefulStop) -> tuple[str, dict[str, list[float]]]:
    """Runs the epochs; returns ``(status, history)``."""
    status = "completed"
    history: dict[str, list[float]] = {}
    try:
        with stop_on_signals(stop):
            if config.strategy == "multi_worker":
                history = fit_custom_loop(model, strategy, train_ds, holdout_ds, config, initial_epoch,
                                          callbacks, verbose)
            else:
                history = model.fit(
                    train_ds, validation_data=holdout_ds, epochs=config.epochs,
                    initial_epoch=initial_epoch, steps_per_epoch=config.steps_per_epoch,
                    validation_steps=config.validation_steps, callbacks=callbacks,
                    verbose=verbose, shuffle=False,
                ).history
    except KeyboardInterrupt:  # a second signal, or Ctrl-C outside a batch boundary
        status = "interrupted"
    if stop.requested:
        status = "interrupted"
    return status, history


def train(config: TrainConfig, *, verbose: int | str = "auto",
          callbacks: list[keras.callbacks.Callback] | None = None) -> TrainResult:
    """Trains (or resumes) the run ``config`` describes. See the module docstring."""
    config, strategy, chief, workdir = _setup(config)
    train_ds, holdout_ds = datasets(config, strategy)
    model = runs.build_model(config, strategy)
    state = _resume(model, config, workdir, chief)
    initial_epoch = state["epoch"] if state is not None else 0
    if initial_epoch >= config.epochs:
        model_path = _final_model(workdir, model, chief)
        sampler_path = _expost_sampler(model, config, workdir, refit=False, verbose=verbose) if chief else None
        return TrainResult(workdir, "already_complete", initial_epoch, initial_epoch, {},
                           state.get("best_val_loss"), model_path, model, sampler_path)

    stop, guard, checkpoint, all_callbacks = _callbacks(config, workdir, chief, holdout_ds, state, callbacks)
    status, history = _fit(model, strategy, train_ds, holdout_ds, config, initial_epoch, all_callbacks,
                           verbose, stop)
    done = _epochs_done(workdir, initial_epoch)
    if guard.failure:
        raise NonFiniteLossError(
            f"Training stopped: {guard.failure}. The last good checkpoint (epoch {done}) is kept in "
            f"{RunDir(workdir).checkpoint_dir}; lower --learning-rate or raise the floors to continue."
        )
    best = checkpoint.best if math.isfinite(checkpoint.best) else None
    model_path = None if status == "interrupted" else _final_model(workdir, model, chief)
    sampler_path = None
    if model_path is not None:
        sampler_path = _expost_sampler(model, config, workdir, refit=True, verbose=verbose)
    return TrainResult(workdir, status, initial_epoch, done, history, best, model_path, model, sampler_path)


def _expost_sampler(model, config: TrainConfig, workdir: Path, *, refit: bool, verbose) -> Path | None:
    """Fits the run's ex-post sampler to the final model (or loads the one a finished run
    has), attaches it to ``model`` and shows its samples beside the prior's in
    TensorBoard. A fit that fails is logged, not raised: the model is saved already."""
    try:
        sampler = None if refit else runs.load_sampler(workdir)
        if sampler is None:
            sampler = runs.fit_sampler(workdir, model, config, progress=verbose in (1, "1", "auto"))
    except RunDirError as e:
        log.warning("No ex-post sampler: %s. Fit one with: %s", e, runs.refit_hint(workdir))
        return None
    model.latent_sampler = sampler
    write_sampler_grids(RunDir(workdir).log_dir, model, sampler, step=config.epochs, seed=config.seed)
    return RunDir(workdir).sampler_file()


def _epochs_done(workdir: Path, default: int) -> int:
    state = read_state(RunDir(workdir).checkpoint_dir)
    return int(state["epoch"]) if state else default


def _final_model(workdir: Path, model: keras.Model, chief: bool) -> Path | None:
    """Saves ``<workdir>/model.keras`` (chief only) and returns its path."""
    if not chief:
        return None
    path = RunDir(workdir).model_file
    save_model_atomic(model, path)
    return path
