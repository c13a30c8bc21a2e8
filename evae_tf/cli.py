"""What the command lines (trainers, export, serving, bench) share: argparse value types,
the ``--help`` formatter, the ex-post sampler's flags, exit codes, the ``error:`` line,
``--verbose auto`` and the SIGTERM handling.

Exit codes: 0 done · 1 failure (one ``error:`` line on stderr, see :func:`fail`) · 2 usage
error (argparse: the message names the flag and the value) · 130 interrupted. Each value
type raises ``argparse.ArgumentTypeError``, so argparse prints one line naming the flag and
the value received, and exits with status 2. Nothing here imports TensorFlow, so ``--help``
and usage errors stay fast.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import signal
import sys
import threading

from evae_tf.config import COVARIANCE_TYPES, SamplerConfig
from evae_tf.errors import EvaeError, one_line

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2  # argparse's own status for a bad flag
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports Ctrl-C
VERBOSE_CHOICES = ("auto", 0, 1, 2)  # Keras' fit(verbose=...): 0 silent, 1 bar, 2 line per epoch


def fail(error: BaseException | str) -> int:
    """Prints ``error: <one line>`` on stderr and returns :data:`EXIT_FAILURE`.

    An :class:`~evae_tf.errors.EvaeError` prints as it is (its message and hint are one
    line already); any other error is squeezed onto one line.
    """
    text = str(error) if isinstance(error, EvaeError) else one_line(error)
    print(f"error: {text}", file=sys.stderr)
    return EXIT_FAILURE


def verbose_flag(text: str) -> str | int:
    """A ``--verbose`` type: ``auto`` or an integer (``choices=VERBOSE_CHOICES`` checks it)."""
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected auto, 0, 1 or 2, received {text!r}") from None


def resolve_verbose(verbose: str | int, stream=None) -> int:
    """Keras' verbosity for ``verbose``: ``auto`` is 1 (a progress bar) when ``stream``
    (default: stdout) is a terminal and 2 (one line per epoch, no ANSI codes) when it is
    a file or a pipe; 0, 1 and 2 are kept."""
    if verbose != "auto":
        return int(verbose)
    stream = sys.stdout if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return 1 if isatty is not None and isatty() else 2


def _number(kind, accepts, wanted: str):
    """A type accepting finite numbers of ``kind`` for which ``accepts(value)`` holds;
    anything else gets "expected <wanted>, received '<text>'"."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not math.isfinite(value) or not accepts(value):
            raise argparse.ArgumentTypeError(f"expected {wanted}, received {text!r}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in "invalid ... value" errors
    return parse


def positive(kind, noun: str | None = None):
    """A type accepting finite numbers of ``kind`` (``int`` or ``float``) above zero.

    ``noun`` names the kind in the message (default: ``kind.__name__``).
    """
    return _number(kind, lambda value: value > 0, f"a positive {noun or kind.__name__}")


def in_range(kind, low, high=None):
    """A type accepting finite numbers of ``kind`` in ``[low, high]`` (no upper bound if
    ``high`` is None)."""
    noun = "an integer" if kind is int else "a finite number"
    if high is None:
        return _number(kind, lambda value: value >= low, f"{noun} >= {low}")
    return _number(kind, lambda value: low <= value <= high, f"{noun} in {low}..{high}")


def readable_dir(text: str) -> str:
    """A type accepting an existing, readable directory."""
    if not os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a directory")
    if not os.access(text, os.R_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"{text!r} is not readable")
    return text


def _format_default(value) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return " ".join(_format_default(v) for v in value)
    return str(value)


class HelpFormatter(argparse.HelpFormatter):
    """Appends ``(default: X)`` to a flag's help only when it tells something: not for a
    default of ``None`` or ``False`` (the help says what happens then), and not when the
    help already names its default. Floats print short (``0.0001``), lists as typed."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (not action.option_strings or default is None or default is False
                or default is argparse.SUPPRESS or "(default" in text or "%(default)" in text):
            return text
        return f"{text} (default: {_format_default(default).replace('%', '%%')})"


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt


@contextlib.contextmanager
def sigterm_as_keyboard_interrupt():
    """Within the block, SIGTERM unwinds like Ctrl-C (``KeyboardInterrupt``), so that
    ``finally`` blocks remove temporary files and the command exits as interrupted.

    Only the main thread can install handlers; elsewhere this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def add_sampler_arguments(p: argparse.ArgumentParser, prefix: str = "") -> None:
    """The ex-post sampler's flags (``--<prefix>components``, ``--<prefix>covariance-type``)
    of ``trainers.fit`` and ``trainers.fit_sampler``; defaults from
    :class:`evae_tf.config.SamplerConfig`."""
    g = p.add_argument_group("ex-post sampler (a Gaussian mixture fitted to the training latents)")
    g.add_argument(f"--{prefix}components", type=positive(int), default=SamplerConfig().components,
                   help="mixture components")
    g.add_argument(f"--{prefix}covariance-type", choices=COVARIANCE_TYPES, default=SamplerConfig().covariance_type,
                   help="covariance of each component (scikit-learn's names)")
