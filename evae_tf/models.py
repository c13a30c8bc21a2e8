"""EVAE and VAE as Keras 3 subclassed models (docs/math.md, 'The EVAE posterior' to
'Sampling from the paper's prior').

Both receive an encoder (images → dict of unconstrained heads) and a decoder
(latents → Bernoulli means), override ``train_step`` and ``test_step`` with a
``tf.GradientTape`` step, track ``loss``, ``reconstruction`` and the penalty
(``kernel`` for EVAE, ``kl`` for VAE) in ``keras.metrics.Mean`` trackers, and offer
``encode``, ``posterior``, ``decode``, ``reconstruct`` and ``generate``.

>>> model = build("evae", image_shape=(32, 32, 1), latent_dim=16)
>>> model.compile(optimizer=keras.optimizers.Adam(1e-4))
>>> model.fit(images, epochs=1)                    # images: [N, 32, 32, 1] in [0, 1]
>>> model.generate(8, seed=0).shape                 # TensorShape([8, 32, 32, 1])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import tensorflow as tf

from evae_tf import losses, networks
from evae_tf.config import DEFAULT_STEP, MODEL_KINDS, ModelConfig
from evae_tf.distributions import EVAEPosterior

_PACKAGE = "evae_tf"
SUPPORT_MOMENTUM = 0.99  # the running mean of B, like BatchNorm's moving mean


def _images(data):
    """The images of a batch given as ``x``, ``(x,)`` or ``(x, y, ...)``."""
    if isinstance(data, (tuple, list)):
        return data[0]
    return data


class LatentVariableModel(keras.Model):
    """What EVAE and VAE share: the training step, trackers and codec methods.

    Subclasses define ``penalty_name``, ``heads``, ``encode``, ``sample_posterior``,
    ``penalty`` and ``sample_prior``.
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
        ``model.latent_sampler``, when one is attached (training and ``load_run``
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
        """A stateless seed: ``[seed, 0]`` for an int, a ``[2]`` seed tensor as given,
        else the next seed of the model's own generator."""
        if seed is None:
            return tf.cast(self.seed_generator.next(), tf.int32)
        if isinstance(seed, int):
            return tf.constant([seed, 0], dtype=tf.int32)
        return tf.cast(seed, tf.int32)

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


@keras.saving.register_keras_serializable(package=_PACKAGE)
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
        support: str | float = "learned",
        step: float = DEFAULT_STEP,
        spread_floor: float = 1e-3,
        support_floor: float = 1e-3,
        kernel_n: int | None = None,
        seed: int | None = None,
        **kwargs,
    ):
        # Validated like a ModelConfig: one-line errors naming what was received.
        checked = ModelConfig(
            support=support, step=step, spread_floor=spread_floor,
            support_floor=support_floor, kernel_n=kernel_n,
        )
        self.support = checked.support
        self.heads = self.heads_for(self.support)
        self.step = checked.step
        self.spread_floor = checked.spread_floor
        self.support_floor = checked.support_floor
        self.kernel_n = checked.kernel_n
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

    def sample_prior(self, num_samples: int, seed: int | None = None, support=None):
        """``z ~ Unif[-B_prior/2, B_prior/2]^d``; ``support`` overrides ``B_prior``."""
        b = self.prior_support() if support is None else tf.cast(support, tf.float32)
        v = tf.random.stateless_uniform([num_samples, self.latent_dim], seed=self._seed(seed))
        return b * (v - 0.5)

    def get_config(self):
        config = super().get_config()
        config.update(
            support=self.support, step=self.step, spread_floor=self.spread_floor,
            support_floor=self.support_floor, kernel_n=self.kernel_n,
        )
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
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
        import tensorflow_probability as tfp

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

    def sample_prior(self, num_samples: int, seed: int | None = None):
        """``z ~ N(0, I)``."""
        return tf.random.stateless_normal([num_samples, self.latent_dim], seed=self._seed(seed))


MODELS = {"evae": EVAE, "vae": VAE}
_EVAE_OPTIONS = ("support", "step", "spread_floor", "support_floor", "kernel_n", "seed")
_VAE_OPTIONS = ("seed",)


def build(
    kind: str, image_shape: Sequence[int], latent_dim: int, sync_batchnorm: bool = False, **options
) -> LatentVariableModel:
    """Builds an uncompiled EVAE (``"evae"``) or VAE (``"vae"``) with the paper's networks.

    Args:
      kind: ``"evae"`` or ``"vae"``.
      image_shape: (H, W, C), one of ``networks.ARCHITECTURES``.
      latent_dim: the latent dimension ``d_z``.
      sync_batchnorm: global BatchNorm statistics across replicas (multi-replica training).
      **options: EVAE: ``support``, ``step``, ``spread_floor``, ``support_floor``,
        ``kernel_n``, ``seed``; VAE: ``seed``.
    """
    if kind not in MODELS:
        raise ValueError(f"Unknown model kind {kind!r}; expected one of: {', '.join(MODEL_KINDS)}.")
    allowed = _EVAE_OPTIONS if kind == "evae" else _VAE_OPTIONS
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(
            f"Unknown option(s) {unknown} for kind={kind!r}; allowed: {', '.join(allowed)}."
        )
    config = ModelConfig(kind=kind, image_shape=tuple(image_shape), latent_dim=latent_dim, **options)
    if kind == "evae":
        heads = EVAE.heads_for(config.support)
    else:
        heads = VAE.heads
    encoder = networks.build_encoder(image_shape, latent_dim, heads=heads, sync_batchnorm=sync_batchnorm)
    decoder = networks.build_decoder(image_shape, latent_dim, sync_batchnorm=sync_batchnorm)
    return MODELS[kind](encoder, decoder, name=kind, **options)
