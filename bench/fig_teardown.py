"""``teardown``: what an epoch boundary costs: deleting a used training iterator with
tf.data autotuning on (TF's default) vs off (the library's pipelines)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from bench.harness import Context, find_data, training_pipeline
from bench.table import Rows
from bench.timing import summary


def measure(ctx: Context) -> dict[str, Any]:
    """An epoch boundary's hidden cost: destroying a used training iterator, tf.data autotune
    on (TF's default) vs off (the library's pipelines, see ``data.pipeline_options``)."""
    import gc

    import tensorflow as tf

    find_data(ctx)
    train_ds = training_pipeline()
    batches = ctx.steps(300, 100)
    epochs = ctx.steps(4, 2)
    # A stand-in for the training step that, like it, keeps both cores busy for ~40 ms per
    # batch (a sleep instead does not reproduce the wait: the autotuning thread then idles).
    a = tf.random.stateless_normal([2048, 2048], seed=[1, 2])
    step = tf.function(lambda images, a: tf.reduce_sum(tf.matmul(a, a)[:1, :1]) + tf.reduce_sum(images))
    float(step(next(iter(train_ds)), a))

    def run_epochs(enabled: bool) -> tuple[list[float], list[float]]:
        options = tf.data.Options()
        options.autotune.enabled = enabled
        ds = train_ds.with_options(options)
        teardown, epoch_s = [], []
        for _ in range(epochs):
            start = time.perf_counter()
            iterator = iter(ds)
            for _ in range(batches):
                float(step(next(iterator), a))
            epoch_s.append(time.perf_counter() - start)
            start = time.perf_counter()
            del iterator  # what Keras' fit does at every epoch boundary
            gc.collect()
            teardown.append(time.perf_counter() - start)
        return teardown, epoch_s

    out: dict[str, Any] = {"batches_per_epoch": batches, "epochs": epochs,
                           "library_autotune": bool(train_ds.options().autotune.enabled)}
    for enabled in (False, True):
        teardown, epoch_s = run_epochs(enabled)
        name = "autotune_on" if enabled else "autotune_off"
        out[name] = {"teardown_s": summary(teardown), "teardown_s_all": teardown,
                     "teardown_mean_s": float(np.mean(teardown)),
                     "epoch_s": summary(epoch_s)}
    out["method"] = ("iterate the training pipeline for an epoch of `batches` with a 2048² matmul "
                     "per batch standing in for the step, then time deleting the iterator, as "
                     "Keras' fit does at every epoch boundary (for the validation data too); "
                     "consecutive epochs per setting, autotune off first; the wait is "
                     "intermittent (about every other epoch) and needs epochs of several "
                     "seconds: --quick's 100-batch epochs do not show it")
    return out


def rows(r: dict[str, Any]) -> Rows:
    rows = Rows()
    for variant in ("autotune_off", "autotune_on"):
        label = variant.replace("_", " ")
        rows.add(f"iterator teardown after an epoch, {label}", r[variant]["teardown_s"], "s")
        rows.add(f"iterator teardown, mean per epoch, {label}", r[variant]["teardown_mean_s"], "s")
    return rows
