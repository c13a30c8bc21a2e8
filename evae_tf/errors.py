"""Every error evae-tf raises on purpose, under one base class.

An :class:`EvaeError` carries a one-line ``message`` (what was received, what is allowed)
and an optional ``hint`` (what to do). ``str(error)`` is both, on one line, so a command
line prints ``error: <str(error)>`` and exits 1; it catches ``EvaeError`` alone. Each
subclass also derives from the built-in type callers caught before (``ValueError``,
``RuntimeError``, ``OSError``), so ``except ValueError`` keeps working.

This module imports nothing, so every layer may use it.
"""

from __future__ import annotations

__all__ = [
    "DataNotFoundError",
    "EvaeError",
    "EvaluationError",
    "ExportError",
    "FIDUnavailableError",
    "IdxFormatError",
    "ModelConfigError",
    "NonFiniteLossError",
    "RunDirError",
    "SamplerError",
    "ServingError",
    "TrainingError",
    "one_line",
]

MAX_LINE = 300  # characters of a foreign error kept on one line


def one_line(error: BaseException | str) -> str:
    """An error's message squeezed onto one line (Keras and h5py errors span several)."""
    text = str(error).strip() or type(error).__name__
    first = " ".join(text.split())
    return first if len(first) <= MAX_LINE else first[: MAX_LINE - 3] + "..."


class EvaeError(Exception):
    """The base of evae-tf's errors: a one-line message and an optional hint."""

    def __init__(self, message: str, hint: str | None = None):
        # Whitespace squeezed onto one line, never cut: the project's own messages are
        # written to be read whole (one_line's cut is for foreign errors).
        self.message = " ".join(str(message).split())
        self.hint = " ".join(str(hint).split()) if hint else None
        super().__init__(self.message if self.hint is None else f"{self.message} ({self.hint})")


class DataNotFoundError(EvaeError):
    """No copy of a dataset was found and none can be downloaded."""


class IdxFormatError(EvaeError, ValueError):
    """An IDX file is truncated, corrupt or not what was expected."""


class SamplerError(EvaeError, ValueError):
    """A latent sampler cannot be fitted, built or loaded."""


class RunDirError(EvaeError, RuntimeError):
    """A run directory that cannot be used or written."""


class TrainingError(EvaeError, RuntimeError):
    """A run that cannot start or continue (run-directory problems are RunDirError)."""


class NonFiniteLossError(TrainingError):
    """Training produced a NaN or Inf loss; the last good checkpoint is kept."""


class EvaluationError(EvaeError, RuntimeError):
    """A run that cannot be evaluated."""


class FIDUnavailableError(EvaeError, RuntimeError):
    """The requested FID feature network cannot be used here."""


class ExportError(EvaeError):
    """An export that cannot be done."""


class ModelConfigError(EvaeError, ValueError):
    """A serving model config file that cannot be parsed or is not valid."""


class ServingError(EvaeError):
    """A failed serving request (the server's and the client's errors derive from it)."""
