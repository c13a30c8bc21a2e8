"""The Epanechnikov VAE (docs/math.md, 'The EVAE posterior' to 'Sampling from the paper's prior')."""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from evae_tf import checks, defaults
from evae_tf.distributions import EVAEPosterior
from evae_tf.models import losses
from evae_tf.models.base import PACKAGE, LatentVariableModel
from evae_tf.samplers.prior import UniformPrior

SUPPORT_MOMENTUM = 0.99  # the running mean of B, like BatchNorm's moving mean


def check_support(support) -> str | float:
    """``"learned"`` or a positive number (a fixed B), else a ``ValueError`` naming it."""
    return checks.support(support)


@keras.saving.register_keras_serializable(package=PACKAGE)
class EVAE(LatentVariableModel):
    """The Epanechnikov VAE (docs/math.md, 'The EVAE posterior' to 'Sampling from the
    paper's prior').

    The encoder gives ``loc``, ``raw_spread`` and, with ``support="learned"``,
    ``raw_support`` heads; ``r = softplus(raw_spread) + spread_floor`` and
    ``B = softplus(raw_support) + support_floor``. The latent is
    ``z = step * (loc + r * K) + U`` with ``K ~ Epanechnikov(0, 1)`` and
    ``U ~ Unif[-B/2, B/2]``, and the loss is
    ``mean_i [BCE_sum(x_i, x̂_i) + sum_d 3 B_id / (5 n r_id)]``.

    Args:
      encoder: images → ``{"loc", "raw_spread"[, "raw_support"]}``.
      decoder: latents → images in (0, 1).
      support: ``"learned"`` (an encoder head) or a positive float (fixed B).
      step: the step size ``b`` (default ``100 ** (-2/9)``).
      spread_floor, support_floor: the floors ``r_min``, ``B_min``.
      kernel_n: ``n`` in the penalty; ``None`` uses the (global) batch size.
      seed: seeds the model's ``keras.random.SeedGenerator``.
    """

    penalty_name = "kernel"

    def __init__(
        self,
        encoder,
        decoder,
        support: str | float = defaults.SUPPORT,
        step: float = defaults.STEP,
        spread_floor: float = defaults.SPREAD_FLOOR,
        support_floor: float = defaults.SUPPORT_FLOOR,
        kernel_n: int | None = None,
        seed: int | None = None,
        **kwargs,
    ):
        self.support = check_support(support)
        self.heads = self.heads_for(self.support)
        self.step = checks.positive_number("step", step)
        self.spread_floor = checks.positive_number("spread_floor", spread_floor)
        self.support_floor = checks.positive_number("support_floor", support_floor)
        self.kernel_n = checks.positive_int("kernel_n", kernel_n, allow_none=True)
        super().__init__(encoder, decoder, seed=seed, **kwargs)

    def build(self, input_shape=None):
        # The running mean of B over the training data: the prior's support
        # (docs/math.md, 'Sampling from the paper's prior').
        self.support_mean = self.add_weight(
            shape=(self.latent_dim,), initializer="ones", trainable=False,
            aggregation="mean", name="support_mean",
        )
        self.support_updates = self.add_weight(
            shape=(), initializer="zeros", trainable=False,
            aggregation="only_first_replica", name="support_updates",
        )
        super().build(input_shape)

    @staticmethod
    def heads_for(support) -> tuple[str, ...]:
        """The encoder heads an EVAE with this ``support`` needs."""
        return ("loc", "raw_spread") + (("raw_support",) if support == "learned" else ())

    @property
    def learned_support(self) -> bool:
        return self.support == "learned"

    def encode(self, x, training: bool = False):
        heads = self.encoder(x, training=training)
        loc = tf.cast(heads["loc"], tf.float32)
        spread = tf.nn.softplus(tf.cast(heads["raw_spread"], tf.float32)) + self.spread_floor
        if self.learned_support:
            support = tf.nn.softplus(tf.cast(heads["raw_support"], tf.float32)) + self.support_floor
        else:
            support = tf.fill(tf.shape(loc), tf.constant(self.support, tf.float32))
        return {"loc": loc, "spread": spread, "support": support}

    def posterior(self, x, training: bool = False) -> EVAEPosterior:
        """The posterior ``q(z | x)`` of each example as a TFP distribution."""
        return EVAEPosterior(step=self.step, **self.encode(x, training=training))

    def sample_posterior(self, params, seed: int | None = None):
        posterior, seed = EVAEPosterior(step=self.step, **params), self._seed(seed)
        return self._per_replica(lambda n: posterior.sample(() if n is None else n, seed=seed))

    def penalty(self, params, batch_size):
        if self.kernel_n is not None:
            n = self.kernel_n
        else:
            n = batch_size * tf.distribute.get_strategy().num_replicas_in_sync
        return losses.kernel_penalty(params["spread"], params["support"], n)

    def after_train_batch(self, params) -> None:
        if not self.learned_support:
            return
        batch_mean = tf.reduce_mean(params["support"], axis=0)
        updated = SUPPORT_MOMENTUM * self.support_mean + (1.0 - SUPPORT_MOMENTUM) * batch_mean
        self.support_mean.assign(tf.where(self.support_updates > 0, updated, batch_mean))
        self.support_updates.assign_add(1.0)

    def prior_support(self):
        """``B_prior`` per latent dimension: the fixed B, or the running mean of B."""
        if self.learned_support:
            return tf.convert_to_tensor(self.support_mean)
        return tf.fill([self.latent_dim], tf.constant(self.support, tf.float32))

    def prior_spec(self) -> dict[str, Any]:
        """The prior as JSON-able facts (for exports and reports)."""
        return {
            "distribution": "uniform",
            "low": (-0.5 * self.prior_support()).numpy().tolist(),
            "high": (0.5 * self.prior_support()).numpy().tolist(),
        }

    def prior(self, support=None) -> UniformPrior:
        """``Unif[-B_prior/2, B_prior/2]^d``; ``support`` overrides ``B_prior``."""
        return UniformPrior(self.prior_support() if support is None else support)

    def sample_prior(self, num_samples: int, seed: int | None = None, support=None):
        """``z ~ Unif[-B_prior/2, B_prior/2]^d``; ``support`` overrides ``B_prior``."""
        return self.prior(support).draw(num_samples, self._seed(seed))

    def get_config(self):
        config = super().get_config()
        config.update(
            support=self.support, step=self.step, spread_floor=self.spread_floor,
            support_floor=self.support_floor, kernel_n=self.kernel_n,
        )
        return config
