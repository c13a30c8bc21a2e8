"""The cells of the grid (model × d_z × seed) and the state of each cell's run directory."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from evae_tf.runs import RunDir

TIMING_FILE = "timing.json"  # a cell's accumulated training seconds, beside its run files


@dataclasses.dataclass(frozen=True)
class Cell:
    """One run of the grid."""

    dataset: str
    model: str
    latent_dim: int
    seed: int

    @property
    def name(self) -> str:
        return f"{self.dataset}-{self.model}-d{self.latent_dim}-s{self.seed}"


@dataclasses.dataclass
class CellResult:
    """What became of a cell: ``status`` is ``"complete"`` or ``"failed"`` (then ``error``)."""

    cell: Cell
    workdir: Path
    status: str
    metrics: dict[str, Any] | None = None
    error: str | None = None
    train_seconds: float | None = None
    trained_now: bool = False
    evaluated_now: bool = False


def grid(dataset: str, latent_dims: Sequence[int], models: Sequence[str], seeds: int) -> list[Cell]:
    """The cells, d_z-major then model then seed (seeds ``0 .. seeds-1``)."""
    return [Cell(dataset, m, int(d), s) for d in latent_dims for m in models for s in range(seeds)]


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``; None when it is missing or unreadable."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def is_trained(workdir: Path, epochs: int) -> bool:
    """Whether the run has its final model and at least ``epochs`` finished epochs."""
    run = RunDir(workdir)
    done = run.epochs_done()
    return run.model_file.is_file() and done is not None and done >= epochs


def needs_evaluation(workdir: Path, fid: str, num_images: int | None, fid_available: bool) -> bool:
    """Whether ``metrics.json`` is missing, older than ``model.keras``, or from other settings."""
    run = RunDir(workdir)
    previous = read_json(run.metrics_file)
    if previous is None or run.metrics_file.stat().st_mtime <= run.model_file.stat().st_mtime:
        return True
    if previous.get("fid_requested") != fid:
        return True
    if num_images is not None and previous.get("num_images") != num_images:
        return True
    was_skipped = previous.get("fid", {}).get("reconstruction", {}).get("fid") is None
    return was_skipped and fid_available
