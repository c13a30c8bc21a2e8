"""TensorBoard monitoring of a training run beyond Keras' scalars (:class:`Monitor`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from evae_tf import models
from evae_tf.config import TrainConfig
from evae_tf.evaluation import sharpness
from evae_tf.images import grid

MONITOR_IMAGES = 8  # hold-out images shown in TensorBoard each epoch
# TensorBoard names of the posterior parameters (the paper's symbols).
PARAMETER_NAMES = {"loc": "mu", "spread": "r", "support": "B", "log_var": "log_var"}


def monitor_batch(holdout: tf.data.Dataset, count: int = MONITOR_IMAGES) -> np.ndarray:
    """The first ``count`` hold-out images, the ones the monitor shows every epoch."""
    batch = next(iter(holdout.unbatch().batch(count).take(1)))
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


class Monitor(keras.callbacks.Callback):
    """Per-epoch TensorBoard summaries beyond Keras' scalars.

    Writes to ``<logdir>/images``: hold-out originals above their reconstructions,
    prior samples (the paper's prior; the ex-post sampler is fitted when training ends,
    see :func:`write_sampler_grids`), the sharpness of the hold-out reconstructions (and, for scale, of
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
        samples = model.generate(len(x), seed=self.seed, sampler="prior").numpy()
        params = model.encode(x)
        with self.writer.as_default(step=epoch + 1):
            tf.summary.image("holdout_vs_reconstruction", grid(np.concatenate([x, recon]), len(x))[None])
            tf.summary.image("prior_samples", grid(samples, len(x))[None])
            tf.summary.scalar("sharpness/reconstruction", sharpness(recon))
            tf.summary.scalar("sharpness/prior_samples", sharpness(samples))
            tf.summary.scalar("sharpness/holdout", sharpness(x))
            for key, value in params.items():
                tf.summary.histogram(f"posterior/{PARAMETER_NAMES.get(key, key)}", value)
            if isinstance(model, models.EVAE):
                tf.summary.histogram("prior/B_running_mean", model.prior_support())
        self.writer.flush()


def write_sampler_grids(logdir: Path, model, sampler, step: int, *, count: int = 4 * MONITOR_IMAGES,
                        seed: int = 0) -> None:
    """The final model's ex-post samples beside its prior samples (``<logdir>/images``:
    ``expost_samples``, ``prior_samples_final`` and their sharpness), at ``step``."""
    expost = model.generate(count, seed=seed, sampler=sampler).numpy()
    prior = model.generate(count, seed=seed, sampler="prior").numpy()
    writer = tf.summary.create_file_writer(str(Path(logdir) / "images"))
    with writer.as_default(step=step):
        tf.summary.image("expost_samples", grid(expost, MONITOR_IMAGES)[None])
        tf.summary.image("prior_samples_final", grid(prior, MONITOR_IMAGES)[None])
        tf.summary.scalar("sharpness/expost_samples", sharpness(expost))
    writer.close()
