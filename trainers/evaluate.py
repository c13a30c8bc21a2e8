"""Evaluate a trained run on its hold-out split: loss terms, sharpness and FID.

    python -m trainers.evaluate --workdir runs/fashion_mnist-evae-d64-...
    python -m trainers.evaluate --workdir runs/... --fid-weights classify_image_graph_def.pb
    python -m trainers.evaluate --workdir runs/... --fid domain

A thin CLI over ``evae_tf.evaluation.evaluate_run``: writes ``<workdir>/metrics.json``
and prints a summary. Without Inception weights the FID is skipped (the summary says
why) and everything else is still measured.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from evae_tf.cli import EXIT_INTERRUPTED, EXIT_OK, HelpFormatter, fail, positive, readable_dir
from evae_tf.config import DEFAULT_FID, FID_CHOICES
from evae_tf.errors import EvaeError


def _existing_path(text: str) -> str:
    if not os.path.exists(text):
        raise argparse.ArgumentTypeError(f"{text!r} does not exist")
    return text


def add_fid_arguments(p: argparse.ArgumentParser) -> None:
    """The FID flags shared with ``trainers.reproduce``."""
    p.add_argument("--fid", choices=FID_CHOICES, default=DEFAULT_FID,
                   help="FID feature network: the 2015 Inception graph (the published FIDs), "
                        "Keras' InceptionV3 (an alternative), a classifier trained on the "
                        "dataset's labels (domain FID), or none")
    p.add_argument("--fid-weights", type=_existing_path, default=None,
                   help="weights of the FID network: classify_image_graph_def.pb, "
                        "inception-2015-12-05.tgz or a SavedModel directory for inception2015; "
                        "an .h5 file for keras_inception (also EVAE_FID_WEIGHTS for inception2015)")
    p.add_argument("--num-images", type=positive(int), default=None,
                   help="hold-out images to use (default: all; FID wants at least 10,000)")
    p.add_argument("--cache-dir", default=None,
                   help="cache of FID weights and domain classifiers "
                        "(default: EVAE_CACHE_DIR or ~/.cache/evae_tf)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m trainers.evaluate",
        description="Evaluate a trained EVAE/VAE run on the hold-out split (loss, sharpness, FID).",
        formatter_class=HelpFormatter,
    )
    p.add_argument("--workdir", required=True, type=readable_dir, help="the run directory")
    add_fid_arguments(p)
    p.add_argument("--batch-size", type=positive(int), default=None,
                   help="images per batch (default: the run's batch size)")
    p.add_argument("--data-dir", type=readable_dir, default=None,
                   help="directory with the dataset (default: the run's, then the usual search)")
    p.add_argument("--seed", type=int, default=None, help="seed of the prior samples (default: the run's)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    try:
        from evae_tf import evaluation  # TensorFlow: after the flags are checked

        result = evaluation.evaluate_run(
            args.workdir, fid=args.fid, fid_weights=args.fid_weights, num_images=args.num_images,
            batch_size=args.batch_size, data_dir=args.data_dir, cache_dir=args.cache_dir,
            seed=args.seed,
        )
    except (EvaeError, ValueError, OSError) as e:  # ValueError: a bad value in a library check
        return fail(e)
    except KeyboardInterrupt:
        print("Interrupted; metrics.json was not changed.", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(evaluation.summary(result))
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
