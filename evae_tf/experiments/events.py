"""Validation curves, read from a run's TensorBoard event files with TensorBoard's reader."""

from __future__ import annotations

import logging
from pathlib import Path

import tensorflow as tf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from evae_tf.runs import RunDir

VALIDATION_TAG = "epoch_reconstruction"


def _reloaded(logdir: Path) -> EventAccumulator:
    """Every event of ``logdir`` loaded, without TensorBoard's per-file INFO lines."""
    accumulator = EventAccumulator(str(logdir), size_guidance={"tensors": 0, "scalars": 0})
    tb_logger = logging.getLogger("tensorboard")
    level = tb_logger.level
    tb_logger.setLevel(logging.WARNING)
    try:
        accumulator.Reload()
    finally:
        tb_logger.setLevel(level)
    return accumulator


def validation_curve(workdir: Path, tag: str = VALIDATION_TAG) -> tuple[list[int], list[float]]:
    """``(epochs, values)`` of a run's validation ``tag`` from its TensorBoard events.

    Epochs count from 1; when a resumed run wrote an epoch twice, the last value wins.
    """
    logdir = RunDir(workdir).log_dir / "validation"
    if not logdir.is_dir():
        return [], []
    accumulator = _reloaded(logdir)
    tags = accumulator.Tags()
    points: dict[int, float] = {}
    if tag in tags.get("tensors", []):
        for event in accumulator.Tensors(tag):
            points[int(event.step) + 1] = float(tf.make_ndarray(event.tensor_proto))
    elif tag in tags.get("scalars", []):
        for event in accumulator.Scalars(tag):
            points[int(event.step) + 1] = float(event.value)
    epochs = sorted(points)
    return epochs, [points[e] for e in epochs]
