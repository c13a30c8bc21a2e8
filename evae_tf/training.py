"""Training runs: the library function behind ``python -m trainers.fit``.

``train(config)`` trains the configured model on the configured dataset and leaves a
run directory (its layout: :mod:`evae_tf.rundir`): ``config.json``, the final
``model.keras``, resumable ``checkpoints/`` and TensorBoard ``logs/``.

Re-running with the same workdir resumes after the last finished epoch. Every file is
written atomically (a temporary file renamed into place).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import logging
import math
import os
import signal
import tempfile
import threading
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from evae_tf import data as data_lib
from evae_tf import models, runs
from evae_tf.config import TrainConfig
from evae_tf.monitor import Monitor, hparams_of, monitor_batch, write_sampler_grids
from evae_tf.rundir import (
    CheckpointWriter,
    RunDir,
    RunDirError,
    load_resume_weights,
    prepare_workdir,
    read_state,
    remove_leftovers,
    save_model_atomic,
    weights_size_estimate,
)

log = logging.getLogger(__name__)


class TrainingError(RuntimeError):
    """A run that cannot start or continue; the message says why and what to do.

    Problems of the run directory itself (unwritable, full, damaged checkpoints) are
    :class:`evae_tf.rundir.RunDirError`.
    """


class NonFiniteLossError(TrainingError):
    """Training produced a NaN or Inf loss; the last good checkpoint is kept."""


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


# --- environment -----------------------------------------------------------------------------


def default_workdir(config: TrainConfig, root: str = "runs") -> str:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return os.path.join(root, f"{config.dataset}-{config.model.kind}-d{config.model.latent_dim}-{stamp}")


def resolve_precision(precision: str) -> str:
    """``auto`` is mixed_float16 on a GPU and float32 elsewhere."""
    if precision == "auto":
        return "mixed_float16" if tf.config.list_physical_devices("GPU") else "float32"
    return precision


def make_strategy(name: str) -> tf.distribute.Strategy:
    """``auto``: mirrored over all local GPUs when there are several, else the default."""
    if name == "auto":
        name = "mirrored" if len(tf.config.list_physical_devices("GPU")) > 1 else "default"
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices)
    if name == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise TrainingError("--strategy multi_worker needs the TF_CONFIG environment variable "
                                "(cluster and task); see README 'Multi-worker training'.")
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"Unknown strategy {name!r}")


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "cluster_spec", lambda: None)():
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    return task_type in (None, "chief") or (task_type == "worker" and task_id == 0
                                             and "chief" not in resolver.cluster_spec().jobs)


# --- callbacks -------------------------------------------------------------------------------


class EpochCheckpoint(keras.callbacks.Callback):
    """Saves resumable state after every finished epoch with the run directory's atomic
    protocol (:class:`evae_tf.rundir.CheckpointWriter`).

    Epochs whose logs are not finite, and epochs cut short by a stop, are not saved.
    """

    def __init__(self, checkpoint_dir: Path, state: dict[str, Any] | None = None, enabled: bool = True,
                 stop: GracefulStop | None = None):
        super().__init__()
        self.writer = CheckpointWriter(checkpoint_dir, state)
        self.enabled = enabled
        self.stop = stop

    @property
    def best(self) -> float:
        return self.writer.best

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if not self.enabled or not all(math.isfinite(float(v)) for v in logs.values()):
            return
        if self.stop is not None and self.stop.partial:
            return  # stopped mid-epoch: the epoch is not finished
        variables = self.model.weights + self.model.optimizer.variables
        self.writer.check_space(epoch, weights_size_estimate([v.shape for v in variables]))
        self.writer.commit(epoch, logs, lambda tmp: self.model.save_weights(tmp))


class GracefulStop(keras.callbacks.Callback):
    """Stops training at the next batch boundary once ``request()`` was called.

    ``train`` calls ``request`` from its SIGINT / SIGTERM handler: the handler only sets
    a flag, so the stop never lands inside Keras' or tf.data's own code. The epoch in
    progress is then unfinished (``partial``) and is not checkpointed; validation is cut
    short too.
    """

    def __init__(self):
        super().__init__()
        self.requested = False
        self.partial = False

    def request(self) -> None:
        self.requested = True

    def on_epoch_begin(self, epoch, logs=None):
        self.partial = False

    def on_train_batch_end(self, batch, logs=None):
        if self.requested:
            self.partial = True
            self.model.stop_training = True

    def on_test_batch_end(self, batch, logs=None):
        if self.requested:
            self.partial = True  # validation cut short: its val_loss must not count
            self.model.stop_evaluating = True


@contextlib.contextmanager
def stop_on_signals(stop: GracefulStop, signals=(signal.SIGINT, signal.SIGTERM)):
    """Routes the first SIGINT / SIGTERM to ``stop.request()``; a second one aborts.

    Only the main thread can install handlers; elsewhere this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        if stop.requested:
            raise KeyboardInterrupt
        log.warning("%s received: stopping after this batch (again to abort).", signal.Signals(signum).name)
        stop.request()

    previous = {sig: signal.signal(sig, handler) for sig in signals}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


class NonFiniteGuard(keras.callbacks.Callback):
    """Stops training at the first non-finite loss, naming the step and the term."""

    def __init__(self):
        super().__init__()
        self.failure: str | None = None
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        logs = logs or {}
        bad = [k for k, v in logs.items() if not math.isfinite(float(v))]
        if bad and self.failure is None:
            terms = [k for k in bad if k != "loss"] or bad
            self.failure = (f"non-finite {', '.join(terms)} at epoch {self._epoch + 1}, step {batch + 1}")
            self.model.stop_training = True


# --- the run ---------------------------------------------------------------------------------


def _datasets(config: TrainConfig, strategy: tf.distribute.Strategy):
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


def build_compiled(config: TrainConfig, strategy: tf.distribute.Strategy | None = None
                   ) -> models.LatentVariableModel:
    """The configured model, compiled with Adam and its optimizer built (so that
    checkpoints with optimizer state load into it), under ``strategy``'s scope
    (default: the current strategy)."""
    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():
        model = models.build(**config.model.build_kwargs(),
                             sync_batchnorm=strategy.num_replicas_in_sync > 1)
        model.compile(optimizer=keras.optimizers.Adam(config.learning_rate))
        model.optimizer.build(model.trainable_variables)
    return model


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
    if config.model.seed is None:
        config.model.seed = config.seed
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
    train_ds, holdout_ds = _datasets(config, strategy)
    model = build_compiled(config, strategy)
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
            sampler = runs.fit_sampler(workdir, model, config, progress=verbose not in (0, "0"))
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


# --- multi-worker: Keras 3.15's fit() is broken under MultiWorkerMirroredStrategy --------------


def fit_custom_loop(model, strategy, train_ds, holdout_ds, config: TrainConfig, initial_epoch: int,
                    callbacks, verbose) -> dict[str, list[float]]:
    """A Keras-like epoch loop over ``strategy.run(model.train_step)``.

    Runs the same per-replica ``train_step`` / ``test_step`` as ``fit``, reduces the
    logs across replicas, and drives the given callbacks, so checkpoints, TensorBoard
    and resume behave as with ``fit``.
    """
    train_dist = strategy.experimental_distribute_dataset(train_ds)
    holdout_dist = strategy.experimental_distribute_dataset(holdout_ds)

    def reduce(per_replica):
        return {k: strategy.reduce("MEAN", v, axis=None) for k, v in per_replica.items()}

    @tf.function
    def train_step(batch):
        return reduce(strategy.run(model.train_step, args=(batch,)))

    @tf.function
    def test_step(batch):
        return reduce(strategy.run(model.test_step, args=(batch,)))

    callback_list = keras.callbacks.CallbackList(callbacks, model=model, add_history=True,
                                                 add_progbar=verbose not in (0, "0"),
                                                 verbose=1 if verbose == "auto" else verbose,
                                                 epochs=config.epochs,
                                                 steps=config.steps_per_epoch)
    model.stop_training = False
    callback_list.on_train_begin()
    logs: dict[str, float] = {}
    for epoch in range(initial_epoch, config.epochs):
        for metric in model.metrics:
            metric.reset_state()
        callback_list.on_epoch_begin(epoch)
        for step, batch in enumerate(train_dist):
            if config.steps_per_epoch and step >= config.steps_per_epoch:
                break
            callback_list.on_train_batch_begin(step)
            logs = {k: float(v) for k, v in train_step(batch).items()}
            callback_list.on_train_batch_end(step, logs)
            if model.stop_training:
                break
        epoch_logs = dict(logs)
        for metric in model.metrics:
            metric.reset_state()
        val_logs: dict[str, float] = {}
        model.stop_evaluating = False
        for step, batch in enumerate(holdout_dist):
            if config.validation_steps and step >= config.validation_steps:
                break
            val_logs = {k: float(v) for k, v in test_step(batch).items()}
            callback_list.on_test_batch_end(step, val_logs)
            if model.stop_evaluating:
                break
        epoch_logs.update({f"val_{k}": v for k, v in val_logs.items()})
        callback_list.on_epoch_end(epoch, epoch_logs)
        if model.stop_training:
            break
    callback_list.on_train_end(logs)
    return model.history.history if model.history is not None else {}

