"""Small decoder SavedModels in TF Serving layout, shaped like ``export/``'s output.

Each version directory holds a SavedModel written with ``keras.export.ExportArchive``
from a tiny Dense -> Reshape -> sigmoid decoder, with two endpoints:

* ``serving_default``: ``z`` float32 [None, latent_dim] -> ``images`` float32
  [None, H, W, C] in [0, 1] and ``png_bytes`` string [None] (one PNG per image);
* ``sample``: ``num_samples`` int32 scalar, ``seed`` int64 scalar -> ``z``, ``images``,
  ``png_bytes``; stateless, so a seed always gives the same samples; ``num_samples``
  outside 1..1024 fails a ``tf.debugging`` assertion (InvalidArgumentError).

The models: ``evae`` (versions 1 and 2, different weights, 12x10 grayscale) and ``vae``
(version 1, 8x6 RGB), plus a ``models.config`` serving every ``evae`` version.

To run the contract tests against a real TF Serving, write them out and mount them::

    python tests/serving_fixtures.py /tmp/tfs_models
    docker run --rm -p 8501:8501 -v /tmp/tfs_models:/models -t tensorflow/serving \\
        --model_config_file=/models/models.config
    TF_SERVING_URL=http://localhost:8501 pytest tests/test_serving_server.py
"""

from __future__ import annotations

import argparse
import atexit
import dataclasses
import functools
import os
import shutil
import sys
import tempfile
from pathlib import Path

MAX_SAMPLES = 1024
# Set to run the contract tests against a real TF Serving serving these models.
TF_SERVING_URL = os.environ.get("TF_SERVING_URL") or None


@dataclasses.dataclass(frozen=True)
class FixtureModel:
    name: str
    latent_dim: int
    image_shape: tuple[int, int, int]
    versions: tuple[int, ...]


EVAE = FixtureModel("evae", latent_dim=4, image_shape=(12, 10, 1), versions=(1, 2))
VAE = FixtureModel("vae", latent_dim=3, image_shape=(8, 6, 3), versions=(1,))
MODELS = (EVAE, VAE)


def export_decoder(
    path: str | os.PathLike, latent_dim: int, image_shape: tuple[int, int, int], seed: int
) -> None:
    """Write one decoder SavedModel with ``serving_default`` and ``sample`` endpoints."""
    import keras
    import tensorflow as tf

    height, width, channels = image_shape
    init = keras.initializers.RandomNormal(stddev=1.0, seed=seed)
    decoder = keras.Sequential(
        [
            keras.Input((latent_dim,)),
            keras.layers.Dense(
                height * width * channels,
                kernel_initializer=init,
                bias_initializer=keras.initializers.RandomNormal(seed=seed + 1),
            ),
            keras.layers.Reshape(image_shape),
            keras.layers.Activation("sigmoid", dtype="float32"),
        ]
    )

    def decode(z):
        images = decoder(z, training=False)
        pixels = tf.cast(tf.round(images * 255.0), tf.uint8)
        png_bytes = tf.map_fn(tf.io.encode_png, pixels, fn_output_signature=tf.string)
        return images, png_bytes

    @tf.function
    def serve(z):
        images, png_bytes = decode(z)
        return {"images": images, "png_bytes": png_bytes}

    @tf.function
    def sample(num_samples, seed):
        message = f"num_samples must be in [1, {MAX_SAMPLES}]"
        checks = [
            tf.debugging.assert_greater_equal(num_samples, 1, message=message),
            tf.debugging.assert_less_equal(num_samples, MAX_SAMPLES, message=message),
        ]
        with tf.control_dependencies(checks):
            shape = tf.stack([num_samples, latent_dim])
        z = tf.random.stateless_normal(shape, seed=tf.stack([seed, tf.constant(0, tf.int64)]))
        images, png_bytes = decode(z)
        return {"z": z, "images": images, "png_bytes": png_bytes}

    archive = keras.export.ExportArchive()
    archive.track(decoder)
    archive.add_endpoint(
        "serving_default",
        serve,
        input_signature=[tf.TensorSpec([None, latent_dim], tf.float32, name="z")],
    )
    archive.add_endpoint(
        "sample",
        sample,
        input_signature=[
            tf.TensorSpec([], tf.int32, name="num_samples"),
            tf.TensorSpec([], tf.int64, name="seed"),
        ],
    )
    archive.write_out(str(path), verbose=False)


def models_config_text(base_prefix: str | None = None) -> str:
    """``models.config`` for the fixture models; relative base paths when no prefix."""
    blocks = []
    for model in MODELS:
        base_path = model.name if base_prefix is None else f"{base_prefix}/{model.name}"
        policy = "\n    model_version_policy { all {} }" if len(model.versions) > 1 else ""
        blocks.append(
            f"  config {{\n    name: '{model.name}'\n    base_path: '{base_path}'\n"
            f"    model_platform: 'tensorflow'{policy}\n  }}"
        )
    return "model_config_list {\n" + "\n".join(blocks) + "\n}\n"


def write_fixture_models(root: str | os.PathLike, base_prefix: str | None = None) -> Path:
    """Write every fixture model version under ``root``; return ``root/models.config``."""
    root = Path(root)
    for model in MODELS:
        for version in model.versions:
            target = root / model.name / str(version)
            if target.exists():
                shutil.rmtree(target)
            export_decoder(target, model.latent_dim, model.image_shape, seed=100 * version)
    config = root / "models.config"
    config.write_text(models_config_text(base_prefix))
    return config


@functools.cache
def fixture_models_dir() -> Path:
    """The fixture models, written once per test session into a temporary directory."""
    root = Path(tempfile.mkdtemp(prefix="serving-fixtures-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    write_fixture_models(root)
    return root


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", help="directory to write the models and models.config into")
    parser.add_argument(
        "--base-prefix",
        default="/models",
        help="base_path prefix in models.config, as mounted in the container",
    )
    args = parser.parse_args(argv)
    config = write_fixture_models(args.root, args.base_prefix)
    print(f"wrote {config}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
