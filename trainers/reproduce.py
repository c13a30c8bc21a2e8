"""Reproduce the paper's Table 1/2 grid: train, evaluate and report EVAE vs VAE.

    python -m trainers.reproduce --dataset fashion_mnist --latent-dims 8 16 32 64 \\
        --models evae vae --fid-weights classify_image_graph_def.pb --out reports/fmnist

A thin CLI over ``evae_tf.experiments.reproduce``. Each cell is a run directory under
``<out>/runs``; re-running the same command resumes unfinished cells and skips
finished ones. The report (``report.md``, ``results.csv``, ``figures/``) is
rewritten at the end of every invocation.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys

from evae_tf.cli import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    HelpFormatter,
    fail,
    positive,
    readable_dir,
    sigterm_as_keyboard_interrupt,
)
from evae_tf.config import MODEL_KINDS, TRAIN_DEFAULTS
from evae_tf.data.registry import DATASETS
from evae_tf.errors import EvaeError
from trainers.evaluate import add_fid_arguments


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m trainers.reproduce",
        description="Train and evaluate the paper's grid (models x latent dims x seeds) and write a report.",
        formatter_class=HelpFormatter,
    )
    p.add_argument("--dataset", required=True, choices=DATASETS, help="dataset")
    p.add_argument("--latent-dims", type=positive(int), nargs="+", default=[8, 16, 32, 64],
                   help="latent dimensions d_z")
    p.add_argument("--models", choices=MODEL_KINDS, nargs="+", default=list(MODEL_KINDS), help="model kinds")
    p.add_argument("--epochs", type=positive(int), default=TRAIN_DEFAULTS["epochs"], help="epochs per cell")
    p.add_argument("--seeds", type=positive(int), default=1,
                   help="number of seeds per cell (seeds 0..N-1; the report shows mean ± sd)")
    p.add_argument("--steps-per-epoch", type=positive(int), default=None,
                   help="training steps per epoch (default: the whole training split)")
    p.add_argument("--batch-size", type=positive(int), default=TRAIN_DEFAULTS["batch_size"], help="batch size")
    p.add_argument("--learning-rate", type=positive(float), default=TRAIN_DEFAULTS["learning_rate"], help="Adam learning rate")
    add_fid_arguments(p)
    p.add_argument("--data-dir", type=readable_dir, default=None,
                   help="directory with the dataset (IDX files or a TFDS data_dir); also EVAE_DATA_DIR")
    p.add_argument("--out", default=None, help="report directory (default: reports/<dataset>)")
    p.add_argument("--verbose", type=int, choices=(0, 1, 2), default=2,
                   help="training output: 0 silent, 1 progress bar, 2 one line per epoch")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    command = "python -m trainers.reproduce " + shlex.join(sys.argv[1:] if argv is None else argv)
    try:
        with sigterm_as_keyboard_interrupt():
            from evae_tf import experiments  # TensorFlow: after the flags are checked

            result = experiments.reproduce(
                args.dataset, args.latent_dims, args.models, epochs=args.epochs, seeds=args.seeds,
                steps_per_epoch=args.steps_per_epoch, batch_size=args.batch_size,
                learning_rate=args.learning_rate, fid=args.fid, fid_weights=args.fid_weights,
                num_images=args.num_images, data_dir=args.data_dir, cache_dir=args.cache_dir,
                out=args.out, verbose=args.verbose, command=command,
            )
    except (EvaeError, ValueError, OSError) as e:  # ValueError: a bad value in a library check
        return fail(e)
    except KeyboardInterrupt:
        print("Interrupted: finished epochs and cells are saved; run the same command again to resume.",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    trained = sum(c.trained_now for c in result.cells)
    evaluated = sum(c.evaluated_now for c in result.cells)
    failed = [c for c in result.cells if c.status == "failed"]
    fid = f"skipped ({result.fid_skipped})" if result.fid_skipped else result.fid_network
    print(f"Report written: {result.report}\n"
          f"  cells    : {len(result.cells)} ({trained} trained now, {evaluated} evaluated now, "
          f"{len(failed)} failed)\n"
          f"  FID      : {fid}\n"
          f"  results  : {result.out / 'results.csv'}\n"
          f"  figures  : {result.out / 'figures'}")
    for cell in failed:
        print(f"  failed   : {cell.cell.name}: {cell.error}")
    return EXIT_FAILURE if failed else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
