"""The Gaussian baseline VAE (docs/math.md, 'The baseline VAE')."""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from evae_tf.models import losses
from evae_tf.models.base import PACKAGE, LatentVariableModel
from evae_tf.samplers.prior import NormalPrior


@keras.saving.register_keras_serializable(package=PACKAGE)
class VAE(LatentVariableModel):
    """The Gaussian baseline VAE (docs/math.md, 'The baseline VAE'): heads ``loc`` and ``log_var``,
    ``z = loc + exp(log_var / 2) * eps`` and the analytic KL to ``N(0, I)``."""

    penalty_name = "kl"
    heads = ("loc", "log_var")

    def encode(self, x, training: bool = False):
        heads = self.encoder(x, training=training)
        return {k: tf.cast(heads[k], tf.float32) for k in self.heads}

    def posterior(self, x, training: bool = False):
        """The posterior ``q(z | x)`` of each example as a TFP distribution."""
        params = self.encode(x, training=training)
        return tfp.distributions.Normal(params["loc"], tf.exp(0.5 * params["log_var"]))

    def sample_posterior(self, params, seed: int | None = None):
        shape, seed = tf.shape(params["loc"]), self._seed(seed)
        eps = self._per_replica(
            lambda n: tf.random.stateless_normal(shape if n is None else tf.concat([[n], shape], 0), seed=seed)
        )
        return params["loc"] + tf.exp(0.5 * params["log_var"]) * eps

    def penalty(self, params, batch_size):
        return losses.gaussian_kl(params["loc"], params["log_var"])

    def prior_spec(self) -> dict[str, Any]:
        return {"distribution": "normal", "loc": 0.0, "scale": 1.0}

    def prior(self) -> NormalPrior:
        """``N(0, I)``."""
        return NormalPrior(self.latent_dim)
