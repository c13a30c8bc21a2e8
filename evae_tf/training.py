"""Training runs: the library function behind ``python -m trainers.fit``.

``train(config)`` trains the configured model on the configured dataset and leaves a
run directory::

    <workdir>/config.json            the full TrainConfig (enough to rebuild the model)
    <workdir>/model.keras            the final model (written when training ends)
    <workdir>/checkpoints/           state.json + epoch weights (resume), last and best weights
    <workdir>/logs/{train,validation,images}/   TensorBoard event files

Re-running with the same workdir resumes after the last finished epoch. Every file is
written atomically (a temporary file renamed into place).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import logging
import math
import os
import shutil
import signal
import tempfile
import threading
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from evae_tf import data as data_lib
from evae_tf import metrics, models
from evae_tf.config import TrainConfig
from evae_tf.files import replace_atomic, write_json_atomic

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
MODEL_FILE = "model.keras"
CHECKPOINT_DIR = "checkpoints"
STATE_FILE = "state.json"
LOG_DIR = "logs"
MIN_FREE_BYTES = 200 << 20  # refuse to start with less free disk than this
MONITOR_IMAGES = 8  # hold-out images shown in TensorBoard each epoch
# Fields of a run's config that may change when it is resumed.
RESUMABLE_CHANGES = ("epochs", "workdir", "data_dir", "steps_per_epoch", "validation_steps")


class TrainingError(RuntimeError):
    """A run that cannot start or continue; the message says why and what to do."""


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


def prepare_workdir(config: TrainConfig) -> Path:
    """Creates (or checks) the run directory before any training starts."""
    workdir = Path(config.workdir)
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / CHECKPOINT_DIR).mkdir(exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=workdir, prefix=".write-test-"):
            pass
    except OSError as e:
        raise TrainingError(f"Cannot write to workdir {str(workdir)!r}: {e.strerror or e}.") from None
    free = shutil.disk_usage(workdir).free
    if free < MIN_FREE_BYTES:
        raise TrainingError(
            f"Only {free >> 20} MiB free on the disk of workdir {str(workdir)!r}; "
            f"at least {MIN_FREE_BYTES >> 20} MiB are needed for checkpoints."
        )
    saved = workdir / CONFIG_FILE
    if saved.exists():
        previous = TrainConfig.load(str(saved)).to_dict()
        current = config.to_dict()
        differing = sorted(k for k in current if k not in RESUMABLE_CHANGES and current[k] != previous.get(k))
        if differing:
            detail = ", ".join(f"{k}: {previous.get(k)!r} -> {current[k]!r}" for k in differing)
            raise TrainingError(
                f"Workdir {str(workdir)!r} holds a run with a different configuration ({detail}); "
                "use a new --workdir, or the same flags to resume it."
            )
    config.save(str(saved))
    return workdir


# --- checkpoints -----------------------------------------------------------------------------


def _replace_atomic(write, path: Path) -> None:
    """:func:`evae_tf.files.replace_atomic`, with a failing write (a full disk, an I/O
    error) reported as a one-line ``TrainingError``; ``path`` is left as it was."""
    try:
        replace_atomic(path, write)
    except Exception as e:  # h5py and Keras raise several types for the same I/O failures
        reason = getattr(e, "strerror", None) or " ".join(str(e).split())
        raise TrainingError(f"Could not write {path}: {reason}.") from None


def save_model_atomic(model: keras.Model, path: Path) -> None:
    _replace_atomic(lambda tmp: model.save(tmp), Path(path))


def read_state(checkpoint_dir: Path) -> dict[str, Any] | None:
    """The resume state ``state.json`` names, validated; ``None`` for a new run."""
    path = Path(checkpoint_dir) / STATE_FILE
    if not path.exists():
        return None
    advice = "remove the checkpoints directory to start over"
    try:
        with open(path) as f:
            state = json.load(f)
    except (OSError, ValueError) as e:
        raise TrainingError(f"Checkpoint state {str(path)!r} is unreadable ({e}); {advice}.") from None
    weights = state.get("weights") if isinstance(state, dict) else None
    epoch = state.get("epoch") if isinstance(state, dict) else None
    if (not isinstance(weights, str) or Path(weights).name != weights
            or isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0):
        raise TrainingError(f"Checkpoint state {str(path)!r} is malformed (expected an object with "
                            f"'epoch' >= 0 and a 'weights' file name); {advice}.")
    if not (Path(checkpoint_dir) / weights).exists():
        raise TrainingError(f"Checkpoint {str(Path(checkpoint_dir) / weights)!r} named by "
                            f"{str(path)!r} is missing; {advice}.")
    state["weights_path"] = Path(checkpoint_dir) / weights
    return state


def remove_leftovers(checkpoint_dir: Path, state: dict[str, Any] | None) -> None:
    """Deletes what an interrupted checkpoint left: temporary files, and epoch files
    that ``state.json`` does not name."""
    keep = state["weights"] if state else None
    for path in Path(checkpoint_dir).iterdir():
        if path.name.startswith(".tmp-") or (path.name.startswith("epoch-") and path.name != keep):
            path.unlink(missing_ok=True)


def load_resume_weights(model: keras.Model, state: dict[str, Any]) -> None:
    """Loads the epoch weights ``state.json`` names, with a one-line error naming the
    file when it is damaged."""
    path = state["weights_path"]
    try:
        model.load_weights(path)
    except Exception as e:  # h5py raises OSError, Keras ValueError, for damaged files
        reason = " ".join(str(e).split())
        raise TrainingError(f"Checkpoint {str(path)!r} is damaged and cannot be loaded ({reason}); "
                            "remove the checkpoints directory to start over.") from None


class EpochCheckpoint(keras.callbacks.Callback):
    """Saves resumable state after every finished epoch, atomically.

    Writes ``epoch-NNNN.weights.h5`` (weights and optimizer state), its copies
    ``last.weights.h5`` and, when ``val_loss`` improved, ``best.weights.h5``; then
    ``state.json`` naming them, the commit point; then removes the previous epoch's
    file. Each file is flushed and renamed into place, so a process killed at any point
    leaves a consistent set. Epochs whose logs are not finite, and epochs cut short by a
    stop, are not saved. Before writing, free disk space is checked against what the
    files need, so a full disk is reported before anything is half-written.
    """

    def __init__(self, checkpoint_dir: Path, state: dict[str, Any] | None = None, enabled: bool = True,
                 stop: GracefulStop | None = None):
        super().__init__()
        self.dir = Path(checkpoint_dir)
        self.enabled = enabled
        self.stop = stop
        state = state or {}
        best = state.get("best_val_loss")
        self.best = best if isinstance(best, (int, float)) else math.inf
        self.best_epoch = state.get("best_epoch")
        self.previous = state.get("weights")

    def _check_space(self, epoch: int) -> None:
        previous = self.dir / self.previous if self.previous else None
        if previous is not None and previous.exists():
            size = previous.stat().st_size
        else:  # weights, optimizer slots and HDF5 overhead
            size = 2 * sum(int(np.prod(v.shape)) * 4 for v in self.model.weights + self.model.optimizer.variables)
        needed = 3 * size + (1 << 20)  # the epoch file, a copy being written, the state
        free = shutil.disk_usage(self.dir).free
        if free < needed:
            done = f"epoch {epoch}" if self.previous else "no epoch yet"
            raise TrainingError(
                f"No space left on device for the checkpoint of epoch {epoch + 1} in {self.dir}: "
                f"{free >> 20} MiB free, about {needed >> 20} MiB needed. The checkpoint of {done} "
                "is intact; free some space and run the same command to resume."
            )

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if not self.enabled or not all(math.isfinite(float(v)) for v in logs.values()):
            return
        if self.stop is not None and self.stop.partial:
            return  # stopped mid-epoch: the epoch is not finished
        self._check_space(epoch)
        name = f"epoch-{epoch + 1:04d}.weights.h5"
        _replace_atomic(lambda tmp: self.model.save_weights(tmp), self.dir / name)
        val = float(logs.get("val_loss", math.nan))
        improved = math.isfinite(val) and val < self.best
        for target in ["last.weights.h5"] + (["best.weights.h5"] if improved else []):
            _replace_atomic(lambda tmp: shutil.copyfile(self.dir / name, tmp), self.dir / target)
        if improved:
            self.best, self.best_epoch = val, epoch + 1
        write_json_atomic(str(self.dir / STATE_FILE), {
            "epoch": epoch + 1, "weights": name,
            "logs": {k: float(v) for k, v in logs.items()},
            "best_val_loss": self.best if math.isfinite(self.best) else None, "best_epoch": self.best_epoch,
        })
        if self.previous and self.previous != name and (self.dir / self.previous).exists():
            (self.dir / self.previous).unlink()
        self.previous = name


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


# --- TensorBoard monitoring ------------------------------------------------------------------


def _grid(images: np.ndarray, ncols: int) -> np.ndarray:
    """Tiles ``[N, H, W, C]`` images into one ``[rows*H, ncols*W, C]`` image."""
    n, h, w, c = images.shape
    rows = -(-n // ncols)
    canvas = np.zeros((rows * h, ncols * w, c), images.dtype)
    for i, img in enumerate(images):
        r, k = divmod(i, ncols)
        canvas[r * h:(r + 1) * h, k * w:(k + 1) * w] = img
    return canvas


class Monitor(keras.callbacks.Callback):
    """Per-epoch TensorBoard summaries beyond Keras' scalars.

    Writes to ``<logdir>/images``: hold-out originals above their reconstructions,
    prior samples, the sharpness of the hold-out reconstructions (and, for scale, of
    prior samples and the hold-out images), and histograms of the posterior parameters (``mu``, ``r``, ``B`` for EVAE;
    ``mu``, ``log_var`` for VAE). Writes the run's hyperparameters once (HParams).
    """

    def __init__(self, logdir: Path, holdout: np.ndarray, hparams: dict[str, Any], seed: int = 0):
        super().__init__()
        self.writer = tf.summary.create_file_writer(str(Path(logdir) / "images"))
        self.holdout = holdout
        self.hparams = hparams
        self.seed = seed

    def on_train_begin(self, logs=None):
        from tensorboard.plugins.hparams import api as hp

        with self.writer.as_default():
            hp.hparams(self.hparams, trial_id=str(self.hparams.get("workdir", "")))
        self.writer.flush()

    def on_epoch_end(self, epoch, logs=None):
        model = self.model
        x = self.holdout
        recon = model.reconstruct(x).numpy()
        samples = model.generate(len(x), seed=self.seed).numpy()
        params = model.encode(x)
        step = epoch + 1
        with self.writer.as_default(step=step):
            tf.summary.image("holdout_vs_reconstruction", _grid(np.concatenate([x, recon]), len(x))[None])
            tf.summary.image("prior_samples", _grid(samples, len(x))[None])
            tf.summary.scalar("sharpness/reconstruction", metrics.sharpness(recon))
            tf.summary.scalar("sharpness/prior_samples", metrics.sharpness(samples))
            tf.summary.scalar("sharpness/holdout", metrics.sharpness(x))
            names = {"loc": "mu", "spread": "r", "support": "B", "log_var": "log_var"}
            for key, value in params.items():
                tf.summary.histogram(f"posterior/{names.get(key, key)}", value)
            if isinstance(model, models.EVAE):
                tf.summary.histogram("prior/B_running_mean", model.prior_support())
        self.writer.flush()


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


def _monitor_batch(holdout: tf.data.Dataset) -> np.ndarray:
    batch = next(iter(holdout.unbatch().batch(MONITOR_IMAGES).take(1)))
    return batch.numpy()


def hparams_of(config: TrainConfig) -> dict[str, Any]:
    """Flat scalar hyperparameters for TensorBoard's HParams dashboard."""
    m = config.model
    return {
        "dataset": config.dataset, "model": m.kind, "latent_dim": m.latent_dim,
        "support": str(m.support), "step": m.step, "batch_size": config.batch_size,
        "learning_rate": config.learning_rate, "epochs": config.epochs,
        "precision": config.precision, "strategy": config.strategy, "seed": config.seed,
        "workdir": str(config.workdir),
    }


def build_compiled(config: TrainConfig, strategy: tf.distribute.Strategy) -> models.LatentVariableModel:
    with strategy.scope():
        model = models.build(**config.model.build_kwargs(),
                             sync_batchnorm=strategy.num_replicas_in_sync > 1)
        model.compile(optimizer=keras.optimizers.Adam(config.learning_rate))
        model.optimizer.build(model.trainable_variables)
    return model


def train(config: TrainConfig, *, verbose: int | str = "auto",
          callbacks: list[keras.callbacks.Callback] | None = None) -> TrainResult:
    """Trains (or resumes) the run ``config`` describes. See the module docstring."""
    if config.workdir is None:
        config = dataclasses.replace(config, workdir=default_workdir(config))
    policy = resolve_precision(config.precision)
    keras.mixed_precision.set_global_policy(policy)
    strategy = make_strategy(config.strategy)
    chief = is_chief(strategy)
    workdir = prepare_workdir(config) if chief else Path(tempfile.mkdtemp(prefix="evae-worker-"))
    checkpoint_dir = workdir / CHECKPOINT_DIR
    checkpoint_dir.mkdir(exist_ok=True)
    if config.model.seed is None:
        config.model.seed = config.seed
    keras.utils.set_random_seed(config.seed)
    log.info("Run %s: %s on %s, precision %s, %d replica(s)", workdir, config.model.kind,
             config.dataset, policy, strategy.num_replicas_in_sync)

    train_ds, holdout_ds = _datasets(config, strategy)
    model = build_compiled(config, strategy)

    # Every worker resumes from the chief's checkpoint so that all start at the same epoch.
    state = read_state(Path(config.workdir) / CHECKPOINT_DIR)
    if chief:
        remove_leftovers(checkpoint_dir, state)
    initial_epoch = 0
    if state is not None:
        load_resume_weights(model, state)
        initial_epoch = state["epoch"]
        log.info("Resuming %s after epoch %d (of %d).", workdir, initial_epoch, config.epochs)
    if initial_epoch >= config.epochs:
        return TrainResult(workdir, "already_complete", initial_epoch, initial_epoch, {},
                           state.get("best_val_loss"), _final_model(workdir, model, chief), model)

    stop = GracefulStop()
    guard = NonFiniteGuard()
    checkpoint = EpochCheckpoint(checkpoint_dir, state, enabled=chief, stop=stop)
    all_callbacks: list[keras.callbacks.Callback] = [stop, guard, checkpoint]
    if chief:
        all_callbacks += [
            keras.callbacks.TensorBoard(log_dir=str(workdir / LOG_DIR), write_graph=False),
            Monitor(workdir / LOG_DIR, _monitor_batch(holdout_ds), hparams_of(config), seed=config.seed),
        ]
    all_callbacks += list(callbacks or [])

    status = "completed"
    history: dict[str, list[float]] = {}
    try:
        with stop_on_signals(stop):
            if config.strategy == "multi_worker":
                history = fit_custom_loop(model, strategy, train_ds, holdout_ds, config, initial_epoch,
                                          all_callbacks, verbose)
            else:
                history = model.fit(
                    train_ds, validation_data=holdout_ds, epochs=config.epochs,
                    initial_epoch=initial_epoch, steps_per_epoch=config.steps_per_epoch,
                    validation_steps=config.validation_steps, callbacks=all_callbacks,
                    verbose=verbose, shuffle=False,
                ).history
    except KeyboardInterrupt:  # a second signal, or Ctrl-C outside a batch boundary
        status = "interrupted"
    if stop.requested:
        status = "interrupted"
    done = _epochs_done(checkpoint_dir, initial_epoch)
    if guard.failure:
        raise NonFiniteLossError(
            f"Training stopped: {guard.failure}. The last good checkpoint (epoch {done}) is kept in "
            f"{checkpoint_dir}; lower --learning-rate or raise the floors to continue."
        )
    best = checkpoint.best if math.isfinite(checkpoint.best) else None
    if status == "interrupted":
        return TrainResult(workdir, status, initial_epoch, done, history, best, None, model)
    return TrainResult(workdir, status, initial_epoch, done, history, best,
                       _final_model(workdir, model, chief), model)


def _epochs_done(checkpoint_dir: Path, default: int) -> int:
    state = read_state(checkpoint_dir)
    return int(state["epoch"]) if state else default


def _final_model(workdir: Path, model: keras.Model, chief: bool) -> Path | None:
    """Saves ``<workdir>/model.keras`` (chief only) and returns its path."""
    if not chief:
        return None
    path = workdir / MODEL_FILE
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

