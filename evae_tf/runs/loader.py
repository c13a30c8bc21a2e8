"""Loading a run: the one loader of a run's model (final, best or last weights) and of
its ex-post latent sampler, and the one place a run's sampler is fitted. Paths come from
:mod:`evae_tf.runs.rundir`; errors are one-line ``RunDirError``\\ s that name the file and
what to do.

    model, config = load_model("runs/fm")      # model.latent_sampler: the run's, if it has one
    sampler = load_or_fit_sampler("runs/fm", model, config)   # fitted and saved if missing
"""

from __future__ import annotations

import logging
import os
import warnings
import zipfile
from pathlib import Path

from evae_tf.config import SamplerConfig, TrainConfig
from evae_tf.errors import DataNotFoundError, RunDirError, SamplerError, one_line
from evae_tf.runs.rundir import CHECKPOINT_DIR, CONFIG_FILE, MODEL_FILE, RunDir

FIT_BATCH_SIZE = 500  # images per encoder call while fitting a sampler (memory, not results)

log = logging.getLogger(__name__)


def _load_config(workdir: Path):
    run = RunDir(workdir)
    if not run.config_file.is_file():
        raise RunDirError(f"{workdir} is not a run directory: {CONFIG_FILE} is missing "
                          "(pass the --workdir that trainers.fit wrote)")
    return run.read_config()


def _load_final(workdir: Path):
    import keras

    import evae_tf.models  # noqa: F401  (registers the EVAE / VAE classes)

    path = RunDir(workdir).weights_file("final")
    if not path.is_file():
        raise RunDirError(f"{workdir} is not a finished run: {MODEL_FILE} is missing "
                          "(rerun trainers.fit with the same --workdir to finish it; its checkpoints "
                          "are --weights last and best where a command takes --weights)")
    if not zipfile.is_zipfile(path):
        raise RunDirError(f"{path} is unreadable or corrupt: not a .keras (zip) archive")
    try:
        return keras.saving.load_model(str(path), compile=False)
    except Exception as e:  # Keras raises many types for a corrupt archive
        raise RunDirError(f"{path} is unreadable or corrupt: {one_line(e)}") from None


def _load_checkpoint(workdir: Path, config, weights: str):
    path = RunDir(workdir).weights_file(weights)
    if not path.is_file():
        raise RunDirError(
            f"{workdir} has no {weights} weights: {CHECKPOINT_DIR}/{path.name} is missing "
            "(train at least one epoch" + (" with validation" if weights == "best" else "")
            + " or pass --weights final)"
        )
    try:
        model = build_model(config)
    except ValueError as e:
        raise RunDirError(f"{RunDir(workdir).config_file}: {one_line(e)}") from None
    try:
        with warnings.catch_warnings():
            # Weights of a mixed_float16 run carry LossScaleOptimizer variables too;
            # only the model's weights matter here.
            warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
            model.load_weights(str(path))
    except Exception as e:  # h5py / Keras raise many types for a bad file
        raise RunDirError(f"{path} is unreadable or corrupt: {one_line(e)}") from None
    return model


def build_model(config: TrainConfig, strategy=None):
    """The run's model, compiled with Adam and its optimizer built (so that checkpoints
    with optimizer state load into it), under ``strategy``'s scope (default: the
    current strategy)."""
    import keras
    import tensorflow as tf

    from evae_tf import models

    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():
        model = models.build(**config.model.build_kwargs(),
                             sync_batchnorm=strategy.num_replicas_in_sync > 1)
        model.compile(optimizer=keras.optimizers.Adam(config.learning_rate))
        model.optimizer.build(model.trainable_variables)
    return model


def _kind(model) -> str:
    from evae_tf import models

    try:
        return models.kind_of(model)
    except TypeError as e:
        raise RunDirError(str(e)) from None


def load_model(workdir: str | os.PathLike, weights: str = "final", *, with_sampler: bool = True):
    """``(model, train_config)`` of a run directory at ``weights``, validated against
    ``config.json``; with ``with_sampler``, the run's ex-post sampler for those weights
    is attached (``model.latent_sampler``) when it has one."""
    RunDir(workdir).weights_file(weights)  # an unknown name fails first
    workdir = Path(workdir)
    if not workdir.exists():
        raise RunDirError(f"{workdir} does not exist")
    if not workdir.is_dir():
        raise RunDirError(f"{workdir} is not a directory")
    config = _load_config(workdir)
    model = _load_final(workdir) if weights == "final" else _load_checkpoint(workdir, config, weights)
    kind = _kind(model)
    expected = (config.model.kind, tuple(config.model.image_shape), config.model.latent_dim)
    actual = (kind, tuple(model.image_shape), int(model.latent_dim))
    if actual != expected:
        raise RunDirError(
            f"{RunDir(workdir).model_file} holds a {kind} with image_shape={actual[1]}, latent_dim={actual[2]} "
            f"but {CONFIG_FILE} describes a {expected[0]} with image_shape={expected[1]}, "
            f"latent_dim={expected[2]}"
        )
    if with_sampler:
        model.latent_sampler = load_sampler(workdir, weights)
    return model, config


def refit_hint(workdir, weights: str = "final") -> str:
    flag = "" if weights == "final" else f" --weights {weights}"
    return f"python -m trainers.fit_sampler --workdir {workdir}{flag}"


def load_sampler(workdir, weights: str = "final"):
    """The run's ex-post sampler for ``weights``, or ``None`` when it has none; a damaged
    file is a ``RunDirError`` that says how to refit it."""
    from evae_tf import samplers

    path = RunDir(workdir).sampler_file(weights)
    if not path.exists():
        return None
    try:
        return samplers.GaussianMixtureSampler.load(path)
    except SamplerError as e:
        raise RunDirError(f"{e}; refit it with: {refit_hint(workdir, weights)}") from None


def fit_sampler(workdir, model, config, weights: str = "final", sampler_config: SamplerConfig | None = None,
                *, data_dir=None, seed: int | None = None, progress: bool = True):
    """Fits the run's ex-post sampler for ``weights`` to its training split and saves it
    in the run (atomically). Logs a progress bar while encoding and one line for the fit."""
    sampler_config = sampler_config or config.sampler
    try:
        sampler = _fit_expost(model, config, sampler_config, data_dir=data_dir, progress=progress,
                              seed=config.seed if seed is None else seed, weights=weights)
    except SamplerError as e:
        raise RunDirError(f"cannot fit the ex-post sampler of {workdir}: {e}") from None
    except DataNotFoundError as e:
        raise RunDirError(f"{workdir}: the training data to fit the ex-post sampler was not found "
                          f"({one_line(str(e).splitlines()[0])}); fit it where the data is: "
                          f"{refit_hint(workdir, weights)} --data-dir DIR") from None
    sampler.save(RunDir(workdir).sampler_file(weights))
    return sampler


def _fit_expost(model, config, sampler_config: SamplerConfig, *, data_dir, progress, seed, weights):
    from evae_tf import data as data_lib
    from evae_tf import samplers

    kind, components = sampler_config.covariance_type, sampler_config.components
    samplers.check_fit_arguments(components, kind)  # before the encoding pass
    ds = data_lib.load(config.dataset, "train", batch_size=FIT_BATCH_SIZE, data_dir=data_dir or config.data_dir)
    log.info("Ex-post sampler: encoding the %s training split", config.dataset)
    z = samplers.aggregate_posterior(model, ds, seed=seed, progress=progress)
    log.info("Ex-post sampler: fitting a %d-component %s-covariance Gaussian mixture to %d latents",
             components, kind, len(z))
    sampler = samplers.fit_gaussian_mixture(
        z, components, kind, seed=seed, fit_info={"dataset": config.dataset, "split": "train", "weights": weights})
    info = sampler.fit_info
    log.info("Ex-post sampler: done in %.1f s (%s after %d EM iterations; mean log-likelihood %.2f)",
             info["fit_seconds"], "converged" if info["converged"] else "not converged",
             info["iterations"], info["mean_log_likelihood"])
    return sampler


def load_or_fit_sampler(workdir, model, config, weights: str = "final"):
    """The run's sampler for ``weights``; fitted and saved when it has none yet. A damaged
    sampler file is refused, never replaced silently."""
    sampler = load_sampler(workdir, weights)
    if sampler is None:
        log.info("%s has no ex-post sampler for its %s weights yet: fitting one.", workdir, weights)
        sampler = fit_sampler(workdir, model, config, weights)
    return sampler
