"""Training: ``train(config)`` makes or resumes a run (``python -m trainers.fit``), with its
callbacks, TensorBoard monitor and distribution strategies."""

from evae_tf.errors import NonFiniteLossError, TrainingError
from evae_tf.training.callbacks import (
    EpochCheckpoint,
    GracefulStop,
    NonFiniteGuard,
    stop_on_signals,
)
from evae_tf.training.distribute import fit_custom_loop, is_chief, make_strategy, resolve_precision
from evae_tf.training.monitor import Monitor, hparams_of, monitor_batch, write_sampler_grids
from evae_tf.training.trainer import TrainResult, datasets, default_workdir, train

__all__ = [
    "EpochCheckpoint",
    "GracefulStop",
    "Monitor",
    "NonFiniteGuard",
    "NonFiniteLossError",
    "TrainResult",
    "TrainingError",
    "datasets",
    "default_workdir",
    "fit_custom_loop",
    "hparams_of",
    "is_chief",
    "make_strategy",
    "monitor_batch",
    "resolve_precision",
    "stop_on_signals",
    "train",
    "write_sampler_grids",
]
