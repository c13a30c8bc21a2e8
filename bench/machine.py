"""The machine a figure was measured on: one record, one function (:func:`describe`).

Every speed figure of the bench names it: CPU model, cores (online and usable by this
process), the ISA flags that decide TensorFlow's kernels (AVX2, FMA, AVX-512F, AVX-512
VNNI / BF16, AMX), the oneDNN state (the ``TF_ENABLE_ONEDNN_OPTS`` environment variable and
whether TensorFlow actually runs with it), the TensorFlow version and the load average.

TensorFlow 2.21 turns oneDNN on by default only on Linux CPUs with AVX-512 VNNI, AVX-512 BF16,
AVX-VNNI or AMX; elsewhere it is off unless ``TF_ENABLE_ONEDNN_OPTS=1``. The variable is read once, when
TensorFlow starts, so the state is what it was at import time.
"""

from __future__ import annotations

import os
import platform
from typing import Any

# /proc/cpuinfo flag -> the name the record uses.
ISA_FLAGS = {
    "avx2": "avx2",
    "fma": "fma",
    "avx512f": "avx512f",
    "avx512_vnni": "avx512_vnni",
    "avx512_bf16": "avx512_bf16",
    "avx_vnni": "avx_vnni",
    "amx_tile": "amx",
}
# The flags with which TensorFlow 2.21 enables oneDNN by default (tensorflow/core/util/util.cc).
ONEDNN_DEFAULT_FLAGS = ("avx512_vnni", "avx512_bf16", "avx_vnni", "amx")


def cpu_info(text: str | None = None) -> dict[str, Any]:
    """CPU model and ISA flags from ``/proc/cpuinfo`` (or ``text``, for tests)."""
    if text is None:
        try:
            with open("/proc/cpuinfo") as f:
                text = f.read()
        except OSError:
            text = ""
    model, flags = None, set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model is None:
            model = value.strip()
        elif key == "flags" and not flags:
            flags = set(value.split())
    isa = {name: flag in flags for flag, name in ISA_FLAGS.items()}
    return {"model": model or platform.processor() or platform.machine(), "isa": isa}


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (``/proc/loadavg``), or None."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def onednn_state(tf_module=None) -> dict[str, Any]:
    """The oneDNN environment variable and whether TensorFlow uses oneDNN.

    ``tf_module``: TensorFlow if it is already imported (``enabled`` is then read from
    TensorFlow itself); without it only the variable is recorded (no import here).
    """
    env = os.environ.get("TF_ENABLE_ONEDNN_OPTS")
    state: dict[str, Any] = {"env": env if env is not None else "unset", "enabled": None}
    if tf_module is not None:
        try:
            from tensorflow.python.util import _pywrap_util_port

            state["enabled"] = bool(_pywrap_util_port.IsMklEnabled())
        except (ImportError, AttributeError):
            pass
    return state


def describe(tf_module=None) -> dict[str, Any]:
    """The machine record (JSON-able) of this process, right now."""
    cpu = cpu_info()
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    record: dict[str, Any] = {
        "cpu": cpu["model"],
        "cores": os.cpu_count(),
        "cores_usable": usable,
        "isa": cpu["isa"],
        "onednn": onednn_state(tf_module),
        "onednn_default_on_this_cpu": any(cpu["isa"].get(f) for f in ONEDNN_DEFAULT_FLAGS),
        "tensorflow": getattr(tf_module, "__version__", None),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average": load_average(),
    }
    return record


def one_line(record: dict[str, Any]) -> str:
    """``record`` as one line for printed reports."""
    isa = record.get("isa", {})
    flags = ",".join(name for name, present in isa.items() if present) or "none of " + ",".join(isa)
    onednn = record.get("onednn", {})
    enabled = {True: "on", False: "off", None: "?"}[onednn.get("enabled")]
    load = record.get("load_average")
    load_text = "/".join(f"{x:.2f}" for x in load) if load else "?"
    return (f"{record.get('cpu')} ({record.get('cores_usable')} of {record.get('cores')} cores usable), "
            f"ISA {flags}; oneDNN {enabled} (TF_ENABLE_ONEDNN_OPTS={onednn.get('env')}); "
            f"TensorFlow {record.get('tensorflow')}; load average {load_text}")
