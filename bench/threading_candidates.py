"""Threading settings tried against the bimodal training throughput (issue 12).

Each candidate is a name, the environment variables it needs (set before TensorFlow is first
imported: TensorFlow reads them once at start-up) and a function applying the
``tf.config.threading`` calls (after import, before the first op runs).
``python -m bench.bimodal`` runs each in fresh processes, interleaved.

:func:`apply` is what an entry point calls: ``apply(name)`` before TensorFlow is imported
sets the variables (``os.environ.setdefault``: a user's own value wins), and again (or
:func:`configure_tensorflow`) after the import for the thread-pool sizes.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable


@dataclasses.dataclass(frozen=True)
class Candidate:
    name: str
    env: dict[str, str]
    inter_op: int = 0  # 0: TensorFlow's choice
    intra_op: int = 0
    note: str = ""


CANDIDATES: dict[str, Candidate] = {c.name: c for c in (
    Candidate("default", {}, note="TensorFlow's choice of pools; oneDNN as the bench sets it"),
    Candidate("inter_op_1", {}, inter_op=1,
              note="one inter-op thread: ops run one at a time, each with the intra-op pool"),
    Candidate("intra_op_1", {}, intra_op=1,
              note="no intra-op parallelism: ops run in parallel with each other only"),
    Candidate("omp_1", {"OMP_NUM_THREADS": "1"},
              note="OpenMP limited to one thread (oneDNN in TF uses TF's own pool)"),
    Candidate("onednn_off", {"TF_ENABLE_ONEDNN_OPTS": "0"},
              note="Eigen kernels instead of oneDNN (the reference for the speed-up)"),
    # oneDNN's kernels as on an AVX2-only CPU (issue 12's machine) on a CPU with AVX-512:
    # ONEDNN_MAX_CPU_ISA caps the instruction set oneDNN's JIT uses (read once, at start).
    Candidate("isa_avx2", {"ONEDNN_MAX_CPU_ISA": "AVX2"},
              note="oneDNN limited to AVX2 kernels: emulates an AVX2-only machine"),
    Candidate("isa_avx2_inter_op_1", {"ONEDNN_MAX_CPU_ISA": "AVX2"}, inter_op=1,
              note="the AVX2 emulation with one inter-op thread"),
)}


def environment(name: str) -> dict[str, str]:
    """The environment variables of candidate ``name``."""
    return dict(CANDIDATES[name].env)


def configure_tensorflow(name: str, tf_module) -> dict[str, int]:
    """Applies candidate ``name``'s thread-pool sizes to an imported TensorFlow.

    Must run before TensorFlow's first op (the pools are created then). Returns the sizes
    TensorFlow reports afterwards.
    """
    c = CANDIDATES[name]
    if c.inter_op:
        tf_module.config.threading.set_inter_op_parallelism_threads(c.inter_op)
    if c.intra_op:
        tf_module.config.threading.set_intra_op_parallelism_threads(c.intra_op)
    return {"inter_op": tf_module.config.threading.get_inter_op_parallelism_threads(),
            "intra_op": tf_module.config.threading.get_intra_op_parallelism_threads()}


def apply(name: str, setdefault: Callable[[str, str], str] = os.environ.setdefault) -> dict[str, str]:
    """Sets candidate ``name``'s environment variables unless the user set them.

    Call before TensorFlow is imported. Returns the variables as they are afterwards.
    """
    return {key: setdefault(key, value) for key, value in CANDIDATES[name].env.items()}
