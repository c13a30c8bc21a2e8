"""One measurement in a fresh process, for settings that must precede TensorFlow's start.

    python -m bench.probe --inter 1 --intra 2 --steps 10 --repeats 5

Sets the TensorFlow thread pools (``-1``: TensorFlow's default) before any op runs, builds the
float32 EVAE as ``evae_tf.training`` does, and prints one JSON line: the seconds per step of
each repeat (compiled train_function on an in-memory batch) and the thread settings seen.
Environment variables (oneDNN, malloc tuning) are given by the caller.
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.probe")
    p.add_argument("--inter", type=int, default=-1)
    p.add_argument("--intra", type=int, default=-1)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--kind", default="evae")
    args = p.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    if args.inter >= 0:
        tf.config.threading.set_inter_op_parallelism_threads(args.inter)
    if args.intra >= 0:
        tf.config.threading.set_intra_op_parallelism_threads(args.intra)
    from bench.harness import Stepper, build_model

    stepper = Stepper(build_model(args.kind))
    times = [stepper.run(args.steps) for _ in range(args.repeats)]
    print(json.dumps({
        "step_s": times,
        "inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
        "intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
