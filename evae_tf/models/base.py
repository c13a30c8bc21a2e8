"""What the EVAE and the VAE share: :class:`LatentVariableModel`, a Keras 3 subclassed model.

It receives an encoder (images → dict of unconstrained heads) and a decoder (latents →
Bernoulli means), overrides ``train_step`` and ``test_step`` with a ``tf.GradientTape``
step, tracks ``loss``, ``reconstruction`` and the penalty (``kernel`` for EVAE, ``kl`` for
VAE) in ``keras.metrics.Mean`` trackers, and offers ``encode``, ``posterior``, ``decode``,
``reconstruct`` and ``generate`` (docs/math.md, 'The EVAE posterior' to 'Ex-post sampling').
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from evae_tf.models import losses
from evae_tf.models.networks import PACKAGE  # noqa: F401  (the models register under it too)
from evae_tf.samplers.seeds import stateless_seed


def _images(data):
    """The images of a batch given as ``x``, ``(x,)`` or ``(x, y, ...)``."""
    if isinstance(data, (tuple, list)):
        return data[0]
    return data


class LatentVariableModel(keras.Model):
    """What EVAE and VAE share: the training step, trackers and codec methods.

    Subclasses define ``penalty_name``, ``heads``, ``encode``, ``sample_posterior``,
    ``penalty`` and ``prior``.
    """

    penalty_name: str = ""
    heads: tuple[str, ...] = ()
    latent_sampler = None  # an ex-post sampler for `generate` (not part of model.keras)

    def __init__(self, encoder: keras.Model, decoder: keras.Model, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        missing = sorted(set(self.heads) - set(encoder.output))
        if missing:
            raise ValueError(
                f"{type(self).__name__} needs encoder heads {list(self.heads)}; "
                f"the encoder outputs {sorted(encoder.output)} (missing {missing})."
            )
        self.encoder = encoder
        self.decoder = decoder
        self.latent_dim = int(decoder.inputs[0].shape[-1])
        self.image_shape = tuple(int(s) for s in encoder.inputs[0].shape[1:])
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.reconstruction_tracker = keras.metrics.Mean(name="reconstruction")
        self.penalty_tracker = keras.metrics.Mean(name=self.penalty_name)
        # Built from the start (the sub-models are), so that saving, reloading and
        # reloading optimizer state never meet an unbuilt model.
        self.build((None, *self.image_shape))

    def build(self, input_shape=None):
        self.built = True

    @property
    def metrics(self):
        return [self.loss_tracker, self.reconstruction_tracker, self.penalty_tracker]

    # --- the codec -------------------------------------------------------------------------

    def decode(self, z, training: bool = False):
        """Bernoulli means (images in (0, 1)) for latents ``z``."""
        return self.decoder(z, training=training)

    def reconstruct(self, x, training: bool = False):
        """Decodes the posterior mean of each image (deterministic)."""
        return self.decode(self.posterior(x, training=training).mean(), training=training)

    def generate(self, num_samples: int, seed: int | None = None, sampler=None, **prior_kwargs):
        """Decodes ``num_samples`` latent draws into images.

        ``sampler`` is a latent sampler of ``evae_tf.samplers`` or ``"prior"`` (the
        paper's prior). By default it is the model's ex-post sampler,
        ``model.latent_sampler``, when one is attached (training and ``runs.load_model``
        attach the run's), else the prior (docs/math.md, 'Ex-post sampling: how
        images are generated').
        ``prior_kwargs`` (EVAE: ``support``) go to ``sample_prior``.
        """
        sampler = self.latent_sampler if sampler is None else sampler
        if sampler is None or isinstance(sampler, str) or prior_kwargs:
            if isinstance(sampler, str) and sampler != "prior":
                raise ValueError(f"`sampler` must be a latent sampler or 'prior'. Received: sampler={sampler!r}")
            return self.decode(self.sample_prior(num_samples, seed=seed, **prior_kwargs))
        return self.decode(sampler.sample(num_samples, seed=seed))

    def call(self, x, training: bool = False):
        """Reconstructions: a posterior sample when training, the posterior mean otherwise."""
        if training:
            return self.decode(self.sample_posterior(self.encode(x, training=True)), training=True)
        return self.reconstruct(x)

    @staticmethod
    def _per_replica(draw):
        """Runs ``draw(n)`` so that replicas share one global draw.

        ``draw(None)`` gives this replica's noise; ``draw(R)`` gives ``R`` stacked draws
        of the same shape from the same seed. Under a strategy with ``R`` replicas each
        replica keeps slice ``replica_id`` of the ``R`` draws: the replicas' noise then
        equals the noise of one device drawing for the global batch, so distributed
        training matches single-device training.
        """
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        context = tf.distribute.get_replica_context()
        if replicas == 1 or context is None:
            return draw(None)
        return tf.gather(draw(replicas), context.replica_id_in_sync_group)

    def _seed(self, seed=None):
        """A stateless seed (:func:`evae_tf.samplers.stateless_seed`); ``None`` takes the
        next seed of the model's own ``keras.random.SeedGenerator``."""
        return stateless_seed(self.seed_generator.next() if seed is None else seed)

    def prior(self):
        """The paper's prior as a latent sampler (:mod:`evae_tf.samplers.prior`); each model
        kind defines its own (EVAE: uniform, VAE: normal)."""
        raise NotImplementedError(f"{type(self).__name__} must define prior() (the paper's prior of its kind)")

    def sample_prior(self, num_samples: int, seed: int | None = None):
        """``num_samples`` latents from :meth:`prior`."""
        return self.prior().draw(num_samples, self._seed(seed))

    # --- the objective ---------------------------------------------------------------------

    def compute_terms(self, x, training: bool = False) -> dict[str, Any]:
        """Encodes, samples, decodes and returns the batch-mean loss terms.

        Returns a dict with ``loss``, ``reconstruction``, ``penalty`` (scalars) and
        the ``params`` of the posterior.
        """
        x = tf.cast(x, tf.float32)
        params = self.encode(x, training=training)
        z = self.sample_posterior(params)
        x_hat = self.decode(z, training=training)
        reconstruction = losses.bce_sum(x, x_hat)
        penalty = self.penalty(params, batch_size=tf.shape(x)[0])
        return {
            "loss": tf.reduce_mean(reconstruction + penalty),
            "reconstruction": tf.reduce_mean(reconstruction),
            "penalty": tf.reduce_mean(penalty),
            "params": params,
        }

    def _record(self, terms):
        self.loss_tracker.update_state(terms["loss"])
        self.reconstruction_tracker.update_state(terms["reconstruction"])
        self.penalty_tracker.update_state(terms["penalty"])
        return {m.name: m.result() for m in self.metrics}

    def train_step(self, data):
        x = _images(data)
        with tf.GradientTape() as tape:
            terms = self.compute_terms(x, training=True)
            loss = terms["loss"]
            if self.losses:
                loss = loss + tf.add_n([tf.cast(v, tf.float32) for v in self.losses])
            # The optimizer sums gradients over replicas: scale the per-replica mean.
            replicas = tf.distribute.get_strategy().num_replicas_in_sync
            scaled = self.optimizer.scale_loss(loss / replicas)
        grads = tape.gradient(scaled, self.trainable_variables)
        self.optimizer.apply(grads, self.trainable_variables)
        self.after_train_batch(terms["params"])
        return self._record(terms)

    def test_step(self, data):
        return self._record(self.compute_terms(_images(data), training=False))

    def after_train_batch(self, params) -> None:
        """Hook for state updated from each training batch (EVAE: the running B)."""

    # --- serialisation ---------------------------------------------------------------------

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "encoder": keras.saving.serialize_keras_object(self.encoder),
            "decoder": keras.saving.serialize_keras_object(self.decoder),
            "seed": self.seed,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["encoder"] = keras.saving.deserialize_keras_object(config["encoder"])
        config["decoder"] = keras.saving.deserialize_keras_object(config["decoder"])
        return cls(**config)


