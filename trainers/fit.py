"""Train an EVAE or VAE with the paper's settings.

    python -m trainers.fit --dataset fashion_mnist            # 50 epochs, d_z = 64, EVAE
    python -m trainers.fit --dataset fashion_mnist --epochs 1 --model vae

A thin CLI: it parses flags into a ``TrainConfig`` and calls ``evae_tf.training.train``.
Re-running with the same ``--workdir`` resumes after the last finished epoch.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from evae_tf.cli import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    VERBOSE_CHOICES,
    HelpFormatter,
    add_sampler_arguments,
    fail,
    positive,
    readable_dir,
    resolve_verbose,
    sigterm_as_keyboard_interrupt,
    verbose_flag,
)
from evae_tf.config import (
    MODEL_DEFAULTS,
    MODEL_KINDS,
    PRECISIONS,
    STRATEGIES,
    TRAIN_DEFAULTS,
    ModelConfig,
    SamplerConfig,
    TrainConfig,
    parse_support,
)
from evae_tf.data.registry import DATASETS, image_shape
from evae_tf.errors import EvaeError


def _support(text: str):
    try:
        return parse_support(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'learned' or a positive number, received {text!r}") from None


def _workdir(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a directory path, received ''")
    return text


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m trainers.fit",
        description="Train an Epanechnikov VAE (or the Gaussian VAE baseline) with the paper's settings.",
        formatter_class=HelpFormatter,
    )
    p.add_argument("--dataset", required=True, choices=DATASETS, help="dataset to train on")
    p.add_argument("--model", default=MODEL_DEFAULTS["kind"], choices=MODEL_KINDS, help="model kind")
    p.add_argument("--latent-dim", type=positive(int), default=MODEL_DEFAULTS["latent_dim"], help="latent dimension d_z")
    p.add_argument("--support", type=_support, default=MODEL_DEFAULTS["support"],
                   help="EVAE prior support B: 'learned' (an encoder head) or a positive float (fixed)")
    p.add_argument("--epochs", type=positive(int), default=TRAIN_DEFAULTS["epochs"], help="number of epochs")
    p.add_argument("--batch-size", type=positive(int), default=TRAIN_DEFAULTS["batch_size"], help="global batch size")
    p.add_argument("--learning-rate", type=positive(float), default=TRAIN_DEFAULTS["learning_rate"], help="Adam learning rate")
    p.add_argument("--steps-per-epoch", type=positive(int), default=None,
                   help="training steps per epoch (default: the whole training split)")
    p.add_argument("--validation-steps", type=positive(int), default=None,
                   help="hold-out batches per validation (default: the whole hold-out split)")
    p.add_argument("--precision", choices=PRECISIONS, default=TRAIN_DEFAULTS["precision"],
                   help="dtype policy; auto = mixed_float16 on a GPU, float32 on CPU")
    p.add_argument("--strategy", choices=STRATEGIES, default=TRAIN_DEFAULTS["strategy"],
                   help="tf.distribute strategy; auto = mirrored over several GPUs, else default; "
                        "multi_worker reads TF_CONFIG")
    p.add_argument("--cpu-replicas", type=positive(int), default=1,
                   help="split the CPU into this many logical devices (to run --strategy mirrored on CPU)")
    p.add_argument("--seed", type=int, default=TRAIN_DEFAULTS["seed"], help="seed for data order, initialisation and sampling")
    p.add_argument("--data-dir", type=readable_dir, default=None,
                   help="directory with the dataset (IDX files or a TFDS data_dir); also EVAE_DATA_DIR")
    p.add_argument("--workdir", type=_workdir, default=None,
                   help="run directory (default: runs/<dataset>-<model>-d<latent>-<timestamp>)")
    g = p.add_argument_group("EVAE options (docs/math.md)")
    g.add_argument("--step", type=positive(float), default=MODEL_DEFAULTS["step"], help="step size b")
    g.add_argument("--spread-floor", type=positive(float), default=MODEL_DEFAULTS["spread_floor"], help="floor r_min of the spread r")
    g.add_argument("--support-floor", type=positive(float), default=MODEL_DEFAULTS["support_floor"], help="floor B_min of learned B")
    g.add_argument("--kernel-n", type=positive(int), default=MODEL_DEFAULTS["kernel_n"],
                   help="n in the penalty 3B/(5nr) (default: the batch size)")
    add_sampler_arguments(p, prefix="sampler-")
    p.add_argument("--verbose", type=verbose_flag, choices=VERBOSE_CHOICES, default="auto",
                   help="0 silent, 1 progress bar, 2 one line per epoch; auto: 1 on a terminal, "
                        "2 when the output goes to a file or a pipe")
    return p


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    model = ModelConfig(
        kind=args.model, image_shape=image_shape(args.dataset), latent_dim=args.latent_dim,
        support=args.support, step=args.step, spread_floor=args.spread_floor,
        support_floor=args.support_floor, kernel_n=args.kernel_n, seed=args.seed,
    )
    return TrainConfig(
        dataset=args.dataset, model=model, epochs=args.epochs, batch_size=args.batch_size,
        learning_rate=args.learning_rate, steps_per_epoch=args.steps_per_epoch,
        validation_steps=args.validation_steps, precision=args.precision, strategy=args.strategy,
        seed=args.seed, data_dir=args.data_dir, workdir=args.workdir,
        sampler=SamplerConfig(args.sampler_components, args.sampler_covariance_type),
    )


def _split_cpu(replicas: int) -> None:
    """Splits the CPU into logical devices; must run before TensorFlow runs any op."""
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * replicas)


def summary(result, config: TrainConfig) -> str:
    workdir = str(result.workdir)
    logs_root = os.path.dirname(workdir) or "."
    best = f"{result.best_val_loss:.4f}" if result.best_val_loss is not None else "n/a"
    lines = {
        "completed": f"Training finished: epochs {result.initial_epoch} -> {result.epochs_done} of {config.epochs}; "
                     f"best val_loss {best}.",
        "already_complete": f"Nothing to do: this run already finished {result.epochs_done} epoch(s).",
        "interrupted": f"Interrupted: progress is saved up to epoch {result.epochs_done}; "
                       "run the same command again to resume.",
    }
    out = [lines[result.status], f"  run directory : {workdir}"]
    if result.model_path:
        out.append(f"  final model   : {result.model_path}")
    if result.sampler_path:
        out.append(f"  sampler       : {result.sampler_path} (ex-post; refit: python -m trainers.fit_sampler "
                   f"--workdir {workdir})")
    out += [
        f"  monitor       : tensorboard --logdir {logs_root}",
        f"  resume        : python -m trainers.fit --dataset {config.dataset} --workdir {workdir} ...",
        f"  export        : python -m export.saved_model --workdir {workdir} "
        f"--model-base-path models/{config.model.kind}",
    ]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
    except ValueError as e:
        parser.error(str(e))
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.cpu_replicas > 1:
        _split_cpu(args.cpu_replicas)

    try:
        with sigterm_as_keyboard_interrupt():
            from evae_tf import training  # TensorFlow: after the flags are checked

            result = training.train(config, verbose=resolve_verbose(args.verbose))
    except (EvaeError, ValueError, OSError) as e:  # ValueError: a bad value in a library check
        return fail(e)
    except KeyboardInterrupt:  # before fit started: nothing to save
        print("Interrupted before training started; nothing was changed.", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(summary(result, config))
    return EXIT_INTERRUPTED if result.status == "interrupted" else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
