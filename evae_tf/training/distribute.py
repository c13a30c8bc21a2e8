"""Devices and strategies: the dtype policy, the distribution strategy, which worker is
the chief, and the epoch loop that replaces ``fit`` under ``MultiWorkerMirroredStrategy``
(Keras 3.15's ``fit()`` is broken under it)."""

from __future__ import annotations

import os

import keras
import tensorflow as tf

from evae_tf.config import TrainConfig
from evae_tf.errors import TrainingError


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
                                "(cluster and task); see docs/operations.md, 'Multi-worker training'.")
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"Unknown strategy {name!r}")


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "cluster_spec", lambda: None)():
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    return task_type in (None, "chief") or (task_type == "worker" and task_id == 0
                                             and "chief" not in resolver.cluster_spec().jobs)


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
