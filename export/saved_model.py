"""Export a trained decoder as a TensorFlow Serving SavedModel.

    python -m export.saved_model --workdir runs/<run> --model-base-path models/evae \\
        [--version N] [--weights {final,best,last}]

writes ``models/evae/<version>/`` (``saved_model.pb``, ``variables/``,
``assets.extra/evae_model.json``): the layout TF Serving and ``serving.server`` load.
Without ``--version`` the next integer is taken (highest existing + 1, from 1); an
existing version is never overwritten.

Each version is written atomically: the SavedModel is built in a temporary directory
inside the base path whose name TF Serving ignores (``.tmp-export-<pid>-...``; only
all-digit names are versions), then renamed into place, so a watching server never
loads half a model. On any failure or interrupt the temporary directory is removed.

The SavedModel is float32 whatever precision trained the model: the decoder is
rebuilt under the float32 policy and the trained weights copied in; BatchNorm runs in
inference mode. Signatures:

* ``serving_default``: ``z`` float32 ``[None, latent_dim]`` -> ``images`` float32
  ``[None, H, W, C]`` in [0, 1] and ``png_bytes`` string ``[None]`` (one PNG each);
* ``sample``: ``num_samples`` int32 scalar (1..1024), ``seed`` int64 scalar -> ``z``,
  ``images``, ``png_bytes``: stateless draws from the run's ex-post sampler (a Gaussian
  mixture fitted to the training latents, docs/math.md, 'Ex-post sampling: how images
  are generated'; fitted on export when the run has none), so a seed always gives the
  same samples (those of ``model.generate(num_samples, seed=seed)`` with the sampler
  attached);
* ``sample_prior``: the same inputs and outputs, drawn from the paper's prior (EVAE
  ``Unif[-B_prior/2, B_prior/2]^d`` with ``B_prior`` baked in as a constant, VAE
  ``N(0, I)``; docs/math.md, 'Sampling from the paper's prior').

``assets.extra/evae_model.json`` says under ``samplers`` what each sample signature
draws from and how the ex-post sampler was fitted.

Library::

    from export.saved_model import export_run, export_decoder
    path = export_run("runs/x", "models/evae")          # -> models/evae/<next version>
    export_decoder(model, "models/evae/7", train_config=config)
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import logging
import os
import re
import secrets
import shlex
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from evae_tf.cli import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    HelpFormatter,
    fail,
    positive,
    sigterm_as_keyboard_interrupt,
)
from evae_tf.errors import EvaeError, ExportError, RunDirError, one_line
from evae_tf.runs.rundir import WEIGHTS

log = logging.getLogger(__name__)

MAX_SAMPLES = 1024
METADATA_DIR = "assets.extra"
METADATA_FILE = "evae_model.json"
SERVING_PORT = 8501
# A version being written; TF Serving only loads all-digit names. export.cleanup removes
# the ones a killed export left.
TEMP_PREFIX = ".tmp-export-"


# --- small helpers -------------------------------------------------------------------------


def _version_dirs(base_path: Path) -> list[int]:
    if not base_path.is_dir():
        return []
    return [
        int(entry.name)
        for entry in os.scandir(base_path)
        if re.fullmatch(r"[0-9]+", entry.name) and entry.is_dir()
    ]


def next_version(base_path: str | os.PathLike) -> int:
    """The next version number under ``base_path``: highest existing + 1, from 1."""
    return max(_version_dirs(Path(base_path)), default=0) + 1


def evae_tf_version() -> str:
    try:
        from importlib.metadata import version

        return version("evae-tf")
    except Exception:  # not installed as a distribution
        return "unknown"


def model_kind(model) -> str:
    """``"evae"`` or ``"vae"`` (:func:`evae_tf.models.kind_of`), else an ``ExportError``."""
    from evae_tf import models

    try:
        return models.kind_of(model)
    except TypeError as e:
        raise ExportError(str(e)) from None


# --- the decoder and the endpoints ---------------------------------------------------------


def float32_decoder(model):
    """The model's decoder rebuilt under the float32 policy with the trained weights."""
    import keras

    from evae_tf.models import networks

    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32")
    try:
        decoder = networks.build_decoder(model.image_shape, model.latent_dim, name="decoder")
    finally:
        keras.mixed_precision.set_global_policy(previous)
    trained = model.decoder.get_weights()
    if len(trained) != len(decoder.weights):
        raise ExportError(
            f"the model's decoder has {len(trained)} weight arrays; the Appendix-B decoder for "
            f"image_shape={model.image_shape} has {len(decoder.weights)}"
        )
    decoder.set_weights(trained)
    return decoder


def build_archive(model, sampler):
    """An ``ExportArchive`` of the model's float32 decoder with ``sample`` drawing from
    ``sampler`` (an ex-post sampler of ``evae_tf.samplers``) and ``sample_prior`` from
    the paper's prior, ``model.prior()`` (see :func:`decoder_archive`)."""
    model_kind(model)
    prior = model.prior()  # built eagerly: the EVAE's B_prior becomes a graph constant
    draws = {
        "sample": lambda shape, seed: sampler.draw(shape[0], seed),
        "sample_prior": lambda shape, seed: prior.draw(shape[0], seed),
    }
    return decoder_archive(float32_decoder(model), int(model.latent_dim), draws)


def decoder_archive(decoder, latent_dim: int, draws):
    """An ``ExportArchive`` holding ``decoder``, ``serving_default`` and sample endpoints.

    ``draws`` maps a signature name to ``draw(shape, seed_pair) -> z``; a single
    ``draw`` is the ``sample`` signature alone. Returns ``(archive, signatures)`` where
    ``signatures`` describes each endpoint's inputs and outputs as JSON (dtype name and
    shape, ``None`` for unknown sizes).
    """
    import keras
    import tensorflow as tf

    def decode(z):
        images = tf.cast(decoder(z, training=False), tf.float32)
        pixels = tf.cast(tf.clip_by_value(tf.round(images * 255.0), 0.0, 255.0), tf.uint8)
        # Stored (compression 0) PNGs: half the CPU of zlib's default level, which is a
        # quarter of a sample(16) request's; a 32x32 image is 1.1 KB instead of ~0.65 KB.
        png_bytes = tf.map_fn(lambda image: tf.io.encode_png(image, compression=0), pixels,
                              fn_output_signature=tf.string)
        return images, png_bytes

    @tf.function
    def serve(z):
        images, png_bytes = decode(z)
        return {"images": images, "png_bytes": png_bytes}

    def sample_endpoint(draw):
        @tf.function
        def sample(num_samples, seed):
            message = f"num_samples must be in [1, {MAX_SAMPLES}]"
            checks = [
                tf.debugging.assert_greater_equal(num_samples, 1, message=message),
                tf.debugging.assert_less_equal(num_samples, MAX_SAMPLES, message=message),
            ]
            with tf.control_dependencies(checks):  # every use of num_samples waits for them
                num_samples = tf.identity(num_samples)
            shape = tf.stack([num_samples, latent_dim])
            z = draw(shape, tf.stack([seed, tf.constant(0, tf.int64)]))
            images, png_bytes = decode(z)
            return {"z": z, "images": images, "png_bytes": png_bytes}

        return sample

    draws = {"sample": draws} if callable(draws) else dict(draws)
    sample_spec = [tf.TensorSpec([], tf.int32, name="num_samples"), tf.TensorSpec([], tf.int64, name="seed")]
    endpoints = {"serving_default": (serve, [tf.TensorSpec([None, latent_dim], tf.float32, name="z")])}
    endpoints.update({name: (sample_endpoint(draw), sample_spec) for name, draw in draws.items()})
    archive = keras.export.ExportArchive()
    archive.track(decoder)
    signatures = {}
    for name, (fn, spec) in endpoints.items():
        endpoint = archive.add_endpoint(name, fn, input_signature=spec)
        outputs = endpoint.get_concrete_function().structured_outputs
        signatures[name] = {
            "inputs": {s.name: _tensor_json(s) for s in spec},
            "outputs": {key: _tensor_json(value) for key, value in sorted(outputs.items())},
        }
    return archive, signatures


def _tensor_json(tensor) -> dict[str, Any]:
    return {"dtype": tensor.dtype.name, "shape": tensor.shape.as_list()}


# --- writing -------------------------------------------------------------------------------


def model_metadata(model, signatures, *, sampler=None, train_config=None, source=None) -> dict[str, Any]:
    """The facts written to ``assets.extra/evae_model.json``; ``samplers`` says what each
    sample signature draws from and how that sampler was fitted."""
    if train_config is not None and hasattr(train_config, "to_dict"):
        train_config = train_config.to_dict()
    source = dict(source or {})
    return {
        "kind": model_kind(model),
        "latent_dim": int(model.latent_dim),
        "image_shape": [int(s) for s in model.image_shape],
        "prior": model.prior_spec(),
        "samplers": {
            "sample": sampler.spec() if sampler is not None else None,
            "sample_prior": {"kind": "prior", **model.prior_spec()},
        },
        "training_config": train_config,
        "source_workdir": source.get("workdir"),
        "weights": source.get("weights"),
        "exported_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "evae_tf_version": evae_tf_version(),
        "dtype": "float32",
        "max_samples": MAX_SAMPLES,
        "signatures": signatures,
    }


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _make_temp_dir(parent: Path) -> Path:
    """A new ``.tmp-export-<pid>-<random>`` directory in ``parent`` (umask permissions,
    unlike ``mkdtemp``'s 0700, so that a server running as another user can read it)."""
    for _ in range(100):
        path = parent / f"{TEMP_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
        try:
            path.mkdir()
        except FileExistsError:
            continue
        except OSError as e:
            raise ExportError(f"cannot write into {parent}: {one_line(e)}") from None
        return path
    raise ExportError(f"cannot create a temporary directory in {parent}")


def export_decoder(model, export_dir: str | os.PathLike, *, sampler=None, train_config=None,
                   source=None) -> Path:
    """Writes one SavedModel of ``model``'s decoder to ``export_dir`` atomically.

    Args:
      model: a trained ``evae_tf.models.EVAE`` or ``VAE`` (any precision).
      sampler: the ex-post latent sampler ``sample`` draws from (default: the model's
        ``latent_sampler``); required, because the paper's prior alone generates
        collapsed images (docs/math.md, 'Ex-post sampling: how images are generated').
      export_dir: the version directory to create (e.g. ``models/evae/3``); it must
        not exist. Its parent is created if needed.
      train_config: the run's ``TrainConfig`` (or its dict), recorded in the metadata.
      source: ``{"workdir": ..., "weights": ...}``, recorded in the metadata.

    Returns:
      ``export_dir`` as a ``Path``.

    Raises:
      ExportError: ``export_dir`` exists, or the model cannot be exported.
    """
    export_dir = Path(export_dir)
    if export_dir.exists():
        raise ExportError(f"{export_dir} already exists; refusing to overwrite it")
    model_kind(model)  # fail early on anything but an EVAE / VAE
    sampler = _check_sampler(model, sampler if sampler is not None else model.latent_sampler)
    parent = export_dir.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ExportError(f"cannot create {parent}: {one_line(e)}") from None
    tmp = _make_temp_dir(parent)
    try:
        archive, signatures = build_archive(model, sampler)
        archive.write_out(str(tmp), verbose=False)
        metadata = model_metadata(model, signatures, sampler=sampler, train_config=train_config,
                                  source=source)
        (tmp / METADATA_DIR).mkdir(exist_ok=True)
        with open(tmp / METADATA_DIR / METADATA_FILE, "w") as f:
            json.dump(metadata, f, indent=2, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        if export_dir.exists():  # someone else took this version meanwhile
            raise ExportError(f"{export_dir} already exists; refusing to overwrite it")
        try:
            os.rename(tmp, export_dir)
        except OSError as e:
            raise ExportError(f"cannot move the export into {export_dir}: {one_line(e)}") from None
        _fsync_dir(parent)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return export_dir


def _check_sampler(model, sampler):
    if sampler is None:
        raise ExportError("the model has no ex-post sampler, and the paper's prior alone generates "
                          "collapsed images; fit one with evae_tf.runs.fit_sampler (or "
                          "python -m trainers.fit_sampler --workdir RUN) and pass it as sampler=")
    if getattr(sampler, "latent_dim", None) != int(model.latent_dim):
        raise ExportError(f"the sampler draws {getattr(sampler, 'latent_dim', '?')}-dimensional latents; "
                          f"the model's latent_dim is {int(model.latent_dim)}")
    return sampler


# --- runs ----------------------------------------------------------------------------------


def run_sampler(workdir: Path, model, config, weights: str):
    """:func:`evae_tf.runs.load_or_fit_sampler`, its errors as ``ExportError``."""
    from evae_tf import runs

    try:
        return runs.load_or_fit_sampler(workdir, model, config, weights)
    except RunDirError as e:
        raise ExportError(str(e)) from None


def load_run_model(workdir: str | os.PathLike, weights: str = "final"):
    """``(model, train_config)`` of a run directory, validated (:func:`evae_tf.runs.load_model`)."""
    from evae_tf import runs

    try:
        return runs.load_model(workdir, weights)
    except RunDirError as e:
        raise ExportError(str(e)) from None


def export_run(
    workdir: str | os.PathLike,
    model_base_path: str | os.PathLike,
    version: int | None = None,
    weights: str = "final",
) -> Path:
    """Exports a training run's decoder to ``<model_base_path>/<version>``.

    Args:
      workdir: a run directory written by ``trainers.fit`` (``config.json``,
        ``model.keras``, ``checkpoints/``).
      model_base_path: the model's TF Serving base path (e.g. ``models/evae``).
      version: the version number; ``None`` takes ``next_version(model_base_path)``.
      weights: ``"final"`` (``model.keras``), ``"best"`` or ``"last"`` (checkpoints).

    Returns:
      The version directory written.

    Raises:
      ExportError: a bad run directory, an existing version, or a failed write.
    """
    base = Path(model_base_path)
    if base.exists() and not base.is_dir():
        raise ExportError(f"model base path {base} is not a directory")
    if version is not None:
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise ExportError(f"version must be a positive integer, received {version!r}")
        if (base / str(version)).exists():
            raise ExportError(
                f"version {version} already exists in {base}; refusing to overwrite it "
                f"(omit --version to export as version {next_version(base)})"
            )
    model, config = load_run_model(workdir, weights)
    sampler = run_sampler(Path(workdir), model, config, weights)
    target = base / str(version if version is not None else next_version(base))
    return export_decoder(
        model, target, sampler=sampler, train_config=config,
        source={"workdir": str(workdir), "weights": weights},
    )


# --- command line --------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m export.saved_model",
        description="Export a trained EVAE/VAE decoder as a TensorFlow Serving SavedModel.",
        formatter_class=HelpFormatter,
    )
    p.add_argument("--workdir", required=True, help="run directory written by trainers.fit")
    p.add_argument("--model-base-path", required=True,
                   help="the model's TF Serving base path; versions are written under it")
    p.add_argument("--version", type=positive(int, "integer"), default=None,
                   help="version number (default: highest existing + 1)")
    p.add_argument("--weights", choices=WEIGHTS, default="final",
                   help="final: <workdir>/model.keras; best/last: checkpoints/<name>.weights.h5")
    return p


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def summary(path: Path, base: Path, seconds: float) -> str:
    name = base.resolve().name or "evae"
    base_arg = shlex.quote(str(base))
    mount = shlex.quote(f"type=bind,source={base.resolve()},target=/models/{name}")
    return "\n".join([
        f"Exported version {path.name} to {path} ({_size(path) / 1e6:.1f} MB, {seconds:.1f} s).",
        "  serve   : python -m serving.server --model_name "
        f"{shlex.quote(name)} --model_base_path {base_arg} --rest_api_port {SERVING_PORT}",
        f"  docker  : docker run -p {SERVING_PORT}:{SERVING_PORT} --mount {mount} "
        f"-e MODEL_NAME={shlex.quote(name)} -t tensorflow/serving",
        f"  query   : python -m serving.client --url http://localhost:{SERVING_PORT} "
        f"--model {shlex.quote(name)} --num 16 --seed 0 --out samples.png",
        f"  inspect : saved_model_cli show --all --dir {shlex.quote(str(path))}",
    ])


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    start = time.perf_counter()
    try:
        with sigterm_as_keyboard_interrupt():  # so that the temporary directory is removed
            path = export_run(args.workdir, args.model_base_path, args.version, args.weights)
    except EvaeError as e:
        return fail(e)
    except KeyboardInterrupt:
        print("Interrupted; nothing was exported.", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:  # never a traceback on the command line
        return fail(f"export failed: {type(e).__name__}: {one_line(e)}")
    print(summary(path, Path(args.model_base_path), time.perf_counter() - start))
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
