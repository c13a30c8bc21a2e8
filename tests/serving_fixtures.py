"""Small decoder SavedModels in TF Serving layout, shaped like ``export/``'s output.

Each version directory holds a SavedModel written by ``export.saved_model.decoder_archive``
(the exporter's own endpoints) around a tiny Dense -> Reshape -> sigmoid decoder:

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

from export.saved_model import MAX_SAMPLES  # noqa: F401  (the served sample limit)

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

    # The exporter's own endpoints, around a toy decoder and a N(0, I) prior.
    from export.saved_model import decoder_archive

    # `sample` stands for an ex-post sampler (a shifted, wider Gaussian here), `sample_prior`
    # for the paper's prior N(0, I): the exporter's two sampling signatures.
    archive, _ = decoder_archive(decoder, latent_dim, {
        "sample": lambda shape, seed: 1.0 + 2.0 * tf.random.stateless_normal(shape, seed=seed),
        "sample_prior": lambda shape, seed: tf.random.stateless_normal(shape, seed=seed),
    })
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
