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
    runtime.configure()          # oneDNN on (unless set), a quiet TensorFlow import
    import tensorflow as tf

``configure`` also has TensorFlow's first import run with its start-up noise filtered: the absl
preamble, the oneDNN and CPU-feature notices, "could not find cuda drivers", and, on a
machine with no NVIDIA device at all, the ``failed call to cuInit`` error. Every other
line (real warnings and errors, and all GPU messages on a GPU machine) still reaches
stderr.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
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
    """Sets ``TF_ENABLE_ONEDNN_OPTS=1`` unless already set, and makes TensorFlow's first
    import quiet.

    Must run before the first ``import tensorflow`` of the process; afterwards it can
    change nothing (TensorFlow has read its settings) and only returns. It imports
    nothing itself, so a command's ``--help`` stays fast: the import that comes later
    runs with the noise filtered. ``onednn=False`` leaves the variable alone;
    ``quiet=False`` keeps TensorFlow's full output.
    """
    if "tensorflow" in sys.modules:
        return
    if onednn:
        os.environ.setdefault(ONEDNN_ENV, "1")
    if quiet and not any(isinstance(f, _QuietTensorFlowImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietTensorFlowImport())


class _QuietTensorFlowImport(importlib.abc.MetaPathFinder):
    """Finds ``tensorflow`` once, and has it executed inside :func:`filtered_stderr`."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)  # one import only; later ones find the loaded module
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


class _QuietLoader(importlib.abc.Loader):
    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        with filtered_stderr(noise_patterns()):
            self.loader.exec_module(module)
            module.config.list_physical_devices("GPU")  # the CUDA probe prints here, filtered


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
