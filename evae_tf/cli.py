"""argparse value types shared by the command lines (trainers, export, bench).

Each raises ``argparse.ArgumentTypeError``, so argparse prints one line naming the flag
and the value received, and exits with status 2.
"""

from __future__ import annotations

import argparse
import math
import os


def positive(kind, noun: str | None = None):
    """A type accepting finite numbers of ``kind`` (``int`` or ``float``) above zero.

    ``noun`` names the kind in the message (default: ``kind.__name__``).
    """
    noun = noun or kind.__name__

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not math.isfinite(value) or value <= 0:
            raise argparse.ArgumentTypeError(f"expected a positive {noun}, received {text!r}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in "invalid ... value" errors
    return parse


def readable_dir(text: str) -> str:
    """A type accepting an existing, readable directory."""
    if not os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a directory")
    if not os.access(text, os.R_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"{text!r} is not readable")
    return text
