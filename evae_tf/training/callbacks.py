"""The training callbacks: the per-epoch checkpoint (the run directory's atomic protocol),
the graceful stop on SIGINT / SIGTERM, and the guard against non-finite losses."""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import threading
from pathlib import Path
from typing import Any

import keras

from evae_tf.runs import CheckpointWriter, weights_size_estimate

log = logging.getLogger(__name__)


class EpochCheckpoint(keras.callbacks.Callback):
    """Saves resumable state after every finished epoch with the run directory's atomic
    protocol (:class:`evae_tf.runs.rundir.CheckpointWriter`).

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
