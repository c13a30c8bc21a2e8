"""Process settings that only take effect before TensorFlow is first imported.

TensorFlow reads ``TF_ENABLE_ONEDNN_OPTS`` once, when its shared library loads, and it
turns its oneDNN kernels *off* by default on x86 CPUs without AVX-512 VNNI/BF16 or AMX
(an AVX2-only machine, say). On such a CPU this project's training step runs about
1.9x faster with oneDNN on, so every entry point (``trainers``, ``export``, ``serving``,
``bench``) calls :func:`configure` in its package ``__init__``, before anything imports
TensorFlow. A value the user set is never overridden: ``TF_ENABLE_ONEDNN_OPTS=0 python -m
trainers.fit ...`` runs with oneDNN off.

Library users do the same in their own program, first thing::

    from evae_tf import runtime
    runtime.configure()          # oneDNN on (unless set), TensorFlow imported quietly
    import tensorflow as tf

``configure`` also imports TensorFlow with its start-up noise filtered out: the absl
preamble, the oneDNN and CPU-feature notices, "could not find cuda drivers", and, on a
machine with no NVIDIA device at all, the ``failed call to cuInit`` error. Every other
line (real warnings and errors, and all GPU messages on a GPU machine) still reaches
stderr.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import threading

ONEDNN_ENV = "TF_ENABLE_ONEDNN_OPTS"

# Lines TensorFlow 2.21 prints on every start, which say nothing actionable.
STARTUP_NOISE = (
    "All log messages before absl::InitializeLog() is called",
    "oneDNN custom operations are",
    "cudart_stub.cc",
    "cpu_feature_guard.cc",
    "rebuild TensorFlow with the appropriate compiler flags",
    "Unable to register cu",  # cuFFT / cuDNN / cuBLAS factory registration on CPU builds
    "computation placer already registered",
)
# Noise only where there is no NVIDIA device: on a GPU machine it is a real error.
NO_GPU_NOISE = ("failed call to cuInit",)


def has_nvidia_device() -> bool:
    return os.path.exists("/dev/nvidiactl") or os.path.exists("/dev/dxg")


def noise_patterns() -> tuple[str, ...]:
    return STARTUP_NOISE + (() if has_nvidia_device() else NO_GPU_NOISE)


def configure(*, onednn: bool = True, quiet: bool = True) -> None:
    """Sets ``TF_ENABLE_ONEDNN_OPTS=1`` unless already set, then imports TensorFlow.

    Must run before the first ``import tensorflow`` of the process; afterwards it can
    change nothing (TensorFlow has read its settings) and only returns. ``onednn=False``
    leaves the variable alone; ``quiet=False`` imports TensorFlow with its full output.
    """
    if "tensorflow" in sys.modules:
        return
    if onednn:
        os.environ.setdefault(ONEDNN_ENV, "1")
    with filtered_stderr(noise_patterns() if quiet else ()):
        import tensorflow as tf

        tf.config.list_physical_devices("GPU")  # the CUDA probe prints here, inside the filter


def onednn_enabled() -> bool:
    """Whether the TensorFlow in this process runs its oneDNN kernels."""
    from tensorflow.python.util import _pywrap_util_port

    return bool(_pywrap_util_port.IsMklEnabled())


@contextlib.contextmanager
def filtered_stderr(patterns: tuple[str, ...]):
    """Drops lines containing any of ``patterns`` from file descriptor 2 while active.

    Works at the descriptor level, so it also filters what C++ code writes. Lines are
    forwarded as they arrive; the context waits for the last of them on exit.
    """
    if not patterns:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    forward = threading.Thread(target=_forward, args=(read_end, saved, patterns), daemon=True)
    forward.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)  # closes the pipe's last write end: the forwarder sees EOF
        forward.join(timeout=5)
        os.close(saved)


def _forward(read_end: int, target: int, patterns: tuple[str, ...]) -> None:
    noise = re.compile("|".join(re.escape(p) for p in patterns))
    with os.fdopen(read_end, "rb") as pipe:
        for line in pipe:
            if not noise.search(line.decode("utf-8", "replace")):
                os.write(target, line)
