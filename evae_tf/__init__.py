"""evae-tf: the Epanechnikov Variational Autoencoder for TensorFlow / Keras 3.

The names users need, importable from here::

    import evae_tf
    evae_tf.configure()                                   # before TensorFlow loads (oneDNN on)
    model = evae_tf.build("evae", image_shape=(32, 32, 1), latent_dim=64)
    model, config = evae_tf.load_model("runs/fm")         # a trained run, its sampler attached

Each name is imported on first use, so ``import evae_tf`` loads no TensorFlow and
:func:`configure` still runs first. The subpackages (``evae_tf.distributions``,
``bijectors``, ``models``, ``samplers``, ``data``, ``training``, ``runs``, ``evaluation``,
``experiments``) hold the rest; docs/architecture.md maps them.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_PUBLIC = {
    # the mathematics
    "Epanechnikov": "evae_tf.distributions",
    "EVAEPosterior": "evae_tf.distributions",
    "EpanechnikovCDF": "evae_tf.bijectors",
    "EVAE": "evae_tf.models",
    "VAE": "evae_tf.models",
    "LatentVariableModel": "evae_tf.models",
    "build": "evae_tf.models",
    "GaussianMixtureSampler": "evae_tf.samplers",
    "UniformPrior": "evae_tf.samplers",
    "NormalPrior": "evae_tf.samplers",
    "aggregate_posterior": "evae_tf.samplers",
    "fit_gaussian_mixture": "evae_tf.samplers",
    # the application
    "ModelConfig": "evae_tf.config",
    "TrainConfig": "evae_tf.config",
    "SamplerConfig": "evae_tf.config",
    "train": "evae_tf.training",
    "load_model": "evae_tf.runs",
    "RunDir": "evae_tf.runs",
    "EvaeError": "evae_tf.errors",
    "configure": "evae_tf.runtime",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'evae_tf' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_PUBLIC))
