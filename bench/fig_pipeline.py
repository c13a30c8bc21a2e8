"""``pipeline``: the training input pipeline's rate (real Fashion-MNIST files) against the
training step's consumption."""

from __future__ import annotations

import time
from typing import Any

from bench.harness import BATCH, Context, find_data, library_stepper, training_pipeline
from bench.table import Rows
from bench.timing import interleave, inverted, paired_ratio, scaled, summary


def measure(ctx: Context) -> dict[str, Any]:
    """The training input pipeline's rate (real Fashion-MNIST) vs the step's consumption."""
    source = find_data(ctx)
    train_ds = training_pipeline()
    batches = ctx.steps(600, 60)  # a full epoch is 600 batches
    cpu_per_batch: list[float] = []

    def one_pass() -> float:
        cpu0 = time.process_time()
        start = time.perf_counter()
        count = 0
        for batch in train_ds.take(batches):
            count += int(batch.shape[0])
        wall = time.perf_counter() - start
        cpu_per_batch.append((time.process_time() - cpu0) / batches)
        return wall / count  # seconds per image

    start = time.perf_counter()
    next(iter(train_ds))
    first_batch_s = time.perf_counter() - start
    stepper = library_stepper(ctx, "evae")
    steps = ctx.steps(10, 3)
    repeats = max(3, ctx.repeats // 2) if not ctx.quick else ctx.repeats
    times = interleave({"pipeline": one_pass, "train_step": lambda: stepper.run(steps) / BATCH}, repeats)
    return {
        "source": f"{source.kind}:{source.path}",
        "batches_per_pass": batches,
        "pipeline_images_per_s": inverted(summary(times["pipeline"])),
        "pipeline_cpu_ms_per_batch": scaled(summary(cpu_per_batch), 1000.0),
        "first_batch_s": first_batch_s,
        "train_images_per_s": inverted(summary(times["train_step"])),
        "pipeline_over_consumption": paired_ratio(times["train_step"], times["pipeline"]),
        "method": "training.datasets (shuffled, batched, resized, prefetched) iterated alone "
                  "for a pass of batches, interleaved with the float32 EVAE step",
    }


def rows(r: dict[str, Any]) -> Rows:
    rows = Rows()
    rows.add("input pipeline", r["pipeline_images_per_s"], "img/s")
    rows.add("input pipeline CPU time / batch", r["pipeline_cpu_ms_per_batch"], "ms")
    rows.add("training consumption", r["train_images_per_s"], "img/s")
    rows.add("pipeline / consumption", r["pipeline_over_consumption"], "x")
    return rows
