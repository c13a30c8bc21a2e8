"""argparse value types and argument groups shared by the command lines (trainers,
export, bench).

Each raises ``argparse.ArgumentTypeError``, so argparse prints one line naming the flag
and the value received, and exits with status 2.
"""

from __future__ import annotations

import argparse
import math
import os

from evae_tf.config import COVARIANCE_TYPES, SamplerConfig


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


def add_sampler_arguments(p: argparse.ArgumentParser, prefix: str = "") -> None:
    """The ex-post sampler's flags (``--<prefix>components``, ``--<prefix>covariance-type``)
    of ``trainers.fit`` and ``trainers.fit_sampler``; defaults from
    :class:`evae_tf.config.SamplerConfig`."""
    g = p.add_argument_group("ex-post sampler (a Gaussian mixture fitted to the training latents)")
    g.add_argument(f"--{prefix}components", type=positive(int), default=SamplerConfig().components,
                   help="mixture components")
    g.add_argument(f"--{prefix}covariance-type", choices=COVARIANCE_TYPES, default=SamplerConfig().covariance_type,
                   help="covariance of each component (scikit-learn's names)")
