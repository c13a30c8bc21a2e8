"""The run directory: the one owner of its layout, its state and its checkpoint protocol.

::

    <workdir>/config.json              the full TrainConfig (enough to rebuild the model)
    <workdir>/model.keras              the final model (written when training ends)
    <workdir>/expost_sampler.npz       the ex-post latent sampler (evae_tf.samplers); for the
                                       best / last weights: expost_sampler.{best,last}.npz
    <workdir>/metrics.json             the evaluation (evae_tf.evaluation)
    <workdir>/checkpoints/state.json   the resume state: the checkpoint protocol's commit point
    <workdir>/checkpoints/epoch-NNNN.weights.h5, last.weights.h5, best.weights.h5
    <workdir>/logs/{train,validation,images}/   TensorBoard event files

Training (:mod:`evae_tf.training`), evaluation, the experiments and the export
ask this module where a file is, read the config and ``state.json`` through it, and
write checkpoints with its protocol (:class:`CheckpointWriter`). Every file is written
atomically (:mod:`evae_tf.files`).

This module imports no TensorFlow, so that command lines can name the files in
``--help`` and usage errors without loading it; models are handed in by the caller.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from evae_tf.config import TrainConfig
from evae_tf.errors import RunDirError, one_line
from evae_tf.files import replace_atomic, write_json_atomic

CONFIG_FILE = "config.json"
MODEL_FILE = "model.keras"
METRICS_FILE = "metrics.json"
CHECKPOINT_DIR = "checkpoints"
STATE_FILE = "state.json"
LOG_DIR = "logs"
LAST_WEIGHTS = "last.weights.h5"
BEST_WEIGHTS = "best.weights.h5"
SAMPLER_FILE = "expost_sampler.npz"  # the ex-post latent sampler of the final model
WEIGHTS = ("final", "best", "last")  # which weights a finished run offers (see RunDir.weights_file)
MIN_FREE_BYTES = 200 << 20  # refuse to start a run with less free disk than this
# Fields of a run's config that may change when it is resumed.
RESUMABLE_CHANGES = ("epochs", "workdir", "data_dir", "steps_per_epoch", "validation_steps", "sampler")
_START_OVER = "remove the checkpoints directory to start over"


class RunDir:
    """A run directory: a path-like object naming each of its files.

        run = RunDir("runs/fashion_mnist-evae-d64")
        run.model_file                 # runs/.../model.keras
        run.read_state()               # the validated state.json, or None
        open(run / "timing.json")      # any other file in it
    """

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)

    def __fspath__(self) -> str:
        return os.fspath(self.path)

    def __str__(self) -> str:
        return str(self.path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    @property
    def config_file(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def model_file(self) -> Path:
        return self.path / MODEL_FILE

    @property
    def metrics_file(self) -> Path:
        return self.path / METRICS_FILE

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / CHECKPOINT_DIR

    @property
    def state_file(self) -> Path:
        return self.checkpoint_dir / STATE_FILE

    @property
    def log_dir(self) -> Path:
        return self.path / LOG_DIR

    def weights_file(self, which: str) -> Path:
        """The file of ``which`` weights: ``final`` is ``model.keras`` (the whole model);
        ``best`` and ``last`` are ``checkpoints/<which>.weights.h5`` (weights only)."""
        if which not in WEIGHTS:
            raise RunDirError(f"unknown weights {which!r}; expected one of: {', '.join(WEIGHTS)}")
        return self.model_file if which == "final" else self.checkpoint_dir / f"{which}.weights.h5"

    def sampler_file(self, which: str = "final") -> Path:
        """The ex-post sampler fitted to ``which`` weights: a sampler belongs to the encoder
        whose latents it was fitted to."""
        self.weights_file(which)  # validates the name
        suffix = "" if which == "final" else f".{which}"
        return self.path / SAMPLER_FILE.replace(".npz", f"{suffix}.npz")

    def read_config(self) -> TrainConfig:
        """The run's ``TrainConfig``; a one-line ``RunDirError`` when it is unreadable."""
        try:
            return TrainConfig.load(str(self.config_file))
        except (OSError, ValueError, TypeError, KeyError) as e:
            raise RunDirError(f"{self.config_file} is unreadable or corrupt: {one_line(e)}") from None

    def read_state(self) -> dict[str, Any] | None:
        """The validated resume state (:func:`read_state`); ``None`` for a new run."""
        return read_state(self.checkpoint_dir)

    def epochs_done(self) -> int | None:
        """Epochs in the run's last checkpoint; ``None`` when it has none or it is unusable."""
        try:
            state = self.read_state()
        except RunDirError:
            return None
        return None if state is None else state["epoch"]


# --- creating and checking ---------------------------------------------------------------------


def _check_writable(workdir: Path) -> None:
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / CHECKPOINT_DIR).mkdir(exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=workdir, prefix=".write-test-"):
            pass
    except OSError as e:
        raise RunDirError(f"Cannot write to workdir {str(workdir)!r}: {e.strerror or e}.") from None
    free = shutil.disk_usage(workdir).free
    if free < MIN_FREE_BYTES:
        raise RunDirError(
            f"Only {free >> 20} MiB free on the disk of workdir {str(workdir)!r}; "
            f"at least {MIN_FREE_BYTES >> 20} MiB are needed for checkpoints."
        )


def _check_same_run(run: RunDir, config: TrainConfig) -> None:
    """Refuses to resume a run with a configuration that differs in more than
    :data:`RESUMABLE_CHANGES`."""
    if not run.config_file.exists():
        return
    previous = TrainConfig.load(str(run.config_file)).to_dict()
    current = config.to_dict()
    differing = sorted(k for k in current if k not in RESUMABLE_CHANGES and current[k] != previous.get(k))
    if differing:
        detail = ", ".join(f"{k}: {previous.get(k)!r} -> {current[k]!r}" for k in differing)
        raise RunDirError(
            f"Workdir {str(run.path)!r} holds a run with a different configuration ({detail}); "
            "use a new --workdir, or the same flags to resume it."
        )


def prepare_workdir(config: TrainConfig) -> Path:
    """Creates (or checks) the run directory before any training starts, and writes its
    ``config.json``: the directory must be writable, have :data:`MIN_FREE_BYTES` free,
    and hold no run of another configuration."""
    run = RunDir(config.workdir)
    _check_writable(run.path)
    _check_same_run(run, config)
    config.save(str(run.config_file))
    return run.path


# --- state.json ----------------------------------------------------------------------------------


def read_state(checkpoint_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The resume state ``state.json`` names, validated; ``None`` for a new run.

    Adds ``weights_path``, the epoch file the state names (which must exist).
    """
    checkpoint_dir = Path(checkpoint_dir)
    path = checkpoint_dir / STATE_FILE
    if not path.exists():
        return None
    try:
        with open(path) as f:
            state = json.load(f)
    except (OSError, ValueError) as e:
        raise RunDirError(f"Checkpoint state {str(path)!r} is unreadable ({e}); {_START_OVER}.") from None
    weights = state.get("weights") if isinstance(state, dict) else None
    epoch = state.get("epoch") if isinstance(state, dict) else None
    if (not isinstance(weights, str) or Path(weights).name != weights
            or isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0):
        raise RunDirError(f"Checkpoint state {str(path)!r} is malformed (expected an object with "
                          f"'epoch' >= 0 and a 'weights' file name); {_START_OVER}.")
    if not (checkpoint_dir / weights).exists():
        raise RunDirError(f"Checkpoint {str(checkpoint_dir / weights)!r} named by "
                          f"{str(path)!r} is missing; {_START_OVER}.")
    state["weights_path"] = checkpoint_dir / weights
    return state


def remove_leftovers(checkpoint_dir: str | os.PathLike[str], state: dict[str, Any] | None) -> None:
    """Deletes what an interrupted checkpoint left: temporary files, and epoch files
    that ``state.json`` does not name."""
    keep = state["weights"] if state else None
    for path in Path(checkpoint_dir).iterdir():
        if path.name.startswith(".tmp-") or (path.name.startswith("epoch-") and path.name != keep):
            path.unlink(missing_ok=True)


def load_resume_weights(model, state: dict[str, Any]) -> None:
    """Loads the epoch weights ``state.json`` names into ``model``, with a one-line error
    naming the file when it is damaged."""
    path = state["weights_path"]
    try:
        model.load_weights(path)
    except Exception as e:  # h5py raises OSError, Keras ValueError, for damaged files
        reason = " ".join(str(e).split())
        raise RunDirError(f"Checkpoint {str(path)!r} is damaged and cannot be loaded ({reason}); "
                          f"{_START_OVER}.") from None


# --- writing -------------------------------------------------------------------------------------


def replace_or_fail(write: Callable[[Path], Any], path: str | os.PathLike[str]) -> None:
    """:func:`evae_tf.files.replace_atomic`, with a failing write (a full disk, an I/O
    error) reported as a one-line ``RunDirError``; ``path`` is left as it was."""
    path = Path(path)
    try:
        replace_atomic(path, write)
    except Exception as e:  # h5py and Keras raise several types for the same I/O failures
        reason = getattr(e, "strerror", None) or " ".join(str(e).split())
        raise RunDirError(f"Could not write {path}: {reason}.") from None


def save_model_atomic(model, path: str | os.PathLike[str]) -> None:
    """Saves a Keras model (``model.keras``) atomically."""
    replace_or_fail(lambda tmp: model.save(tmp), path)


class CheckpointWriter:
    """The atomic checkpoint protocol, one finished epoch at a time.

    :meth:`commit` writes ``epoch-NNNN.weights.h5`` (weights and optimizer state), its
    copies ``last.weights.h5`` and, when ``val_loss`` improved, ``best.weights.h5``;
    then ``state.json`` naming them, the commit point; then removes the previous
    epoch's file. Each file is flushed and renamed into place, so a process killed at
    any point leaves a consistent set. Before writing, free disk space is checked
    against what the files need, so a full disk is reported before anything is
    half-written.
    """

    def __init__(self, checkpoint_dir: str | os.PathLike[str], state: dict[str, Any] | None = None):
        self.dir = Path(checkpoint_dir)
        state = state or {}
        best = state.get("best_val_loss")
        self.best = best if isinstance(best, (int, float)) else math.inf
        self.best_epoch = state.get("best_epoch")
        self.previous = state.get("weights")

    def check_space(self, epoch: int, estimated_size: int) -> None:
        """Raises ``RunDirError`` unless the checkpoint of ``epoch`` (0-based) fits on the
        disk; its size is the previous epoch file's, else ``estimated_size`` bytes."""
        previous = self.dir / self.previous if self.previous else None
        size = previous.stat().st_size if previous is not None and previous.exists() else estimated_size
        needed = 3 * size + (1 << 20)  # the epoch file, a copy being written, the state
        free = shutil.disk_usage(self.dir).free
        if free < needed:
            done = f"epoch {epoch}" if self.previous else "no epoch yet"
            raise RunDirError(
                f"No space left on device for the checkpoint of epoch {epoch + 1} in {self.dir}: "
                f"{free >> 20} MiB free, about {needed >> 20} MiB needed. The checkpoint of {done} "
                "is intact; free some space and run the same command to resume."
            )

    def commit(self, epoch: int, logs: dict[str, float], save_weights: Callable[[Path], Any]) -> None:
        """Checkpoints the finished ``epoch`` (0-based): ``save_weights(path)`` writes the
        weights file (e.g. ``model.save_weights``)."""
        name = f"epoch-{epoch + 1:04d}.weights.h5"
        replace_or_fail(save_weights, self.dir / name)
        val = float(logs.get("val_loss", math.nan))
        improved = math.isfinite(val) and val < self.best
        for target in [LAST_WEIGHTS] + ([BEST_WEIGHTS] if improved else []):
            replace_or_fail(lambda tmp: shutil.copyfile(self.dir / name, tmp), self.dir / target)
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


def weights_size_estimate(shapes: Sequence[Sequence[int]]) -> int:
    """Bytes of a weights file holding float32 variables of ``shapes`` (weights,
    optimizer slots and HDF5 overhead)."""
    return 2 * sum(math.prod(int(s) for s in shape) * 4 for shape in shapes)
