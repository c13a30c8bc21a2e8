"""Runs: the run directory (its layout, state and atomic checkpoint protocol) and the one
loader of a run's model and ex-post sampler.

    model, config = load_model("runs/fm")         # final weights, the run's sampler attached
    model, config = load_model("runs/fm", "best")  # or "last"
    sampler = load_or_fit_sampler("runs/fm", model, config)   # fitted and saved if missing

Importing this package loads no TensorFlow (the command lines name run files in ``--help``).
"""

from evae_tf.errors import RunDirError
from evae_tf.runs.loader import (
    build_model,
    fit_sampler,
    load_model,
    load_or_fit_sampler,
    load_sampler,
    refit_hint,
)
from evae_tf.runs.rundir import (
    BEST_WEIGHTS,
    CHECKPOINT_DIR,
    CONFIG_FILE,
    LAST_WEIGHTS,
    LOG_DIR,
    METRICS_FILE,
    MIN_FREE_BYTES,
    MODEL_FILE,
    RESUMABLE_CHANGES,
    SAMPLER_FILE,
    STATE_FILE,
    WEIGHTS,
    CheckpointWriter,
    RunDir,
    load_resume_weights,
    prepare_workdir,
    read_state,
    remove_leftovers,
    replace_or_fail,
    save_model_atomic,
    weights_size_estimate,
)

__all__ = [
    "BEST_WEIGHTS",
    "CHECKPOINT_DIR",
    "CONFIG_FILE",
    "LAST_WEIGHTS",
    "LOG_DIR",
    "METRICS_FILE",
    "MIN_FREE_BYTES",
    "MODEL_FILE",
    "RESUMABLE_CHANGES",
    "SAMPLER_FILE",
    "STATE_FILE",
    "WEIGHTS",
    "CheckpointWriter",
    "RunDir",
    "RunDirError",
    "build_model",
    "fit_sampler",
    "load_model",
    "load_or_fit_sampler",
    "load_resume_weights",
    "load_sampler",
    "prepare_workdir",
    "read_state",
    "refit_hint",
    "remove_leftovers",
    "replace_or_fail",
    "save_model_atomic",
    "weights_size_estimate",
]
