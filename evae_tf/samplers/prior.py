"""The paper's priors as latent samplers: where ``sampler="prior"`` draws from.

* EVAE: ``z ~ Unif[-B/2, B/2]^d`` with ``B`` the prior's support per latent dimension
  (docs/math.md, 'Sampling from the paper's prior');
* VAE: ``z ~ N(0, I)``.

Both have the interface of :class:`~evae_tf.samplers.GaussianMixtureSampler`
(``draw(num_samples, seed)``, ``sample(num_samples, seed=None)``), so the models'
``sample_prior`` and the exported ``sample_prior`` signature draw the same latents from
the same seed.
"""

from __future__ import annotations

import tensorflow as tf

from evae_tf.samplers.seeds import stateless_seed


class UniformPrior:
    """``z = B * (V - 1/2)``, ``V ~ Unif[0, 1)^d``: the EVAE's prior.

    Args:
      support: ``B``, ``[d]`` (or broadcastable), positive. An eager value is a constant
        of any graph that draws from this prior.
    """

    name = "uniform"

    def __init__(self, support):
        self.support = tf.cast(support, tf.float32)
        self.latent_dim = int(self.support.shape[-1])

    def draw(self, num_samples, seed) -> tf.Tensor:
        v = tf.random.stateless_uniform(tf.stack([num_samples, self.latent_dim]),
                                        seed=stateless_seed(seed), dtype=tf.float32)
        return self.support * (v - 0.5)

    def sample(self, num_samples: int, seed=None) -> tf.Tensor:
        return self.draw(num_samples, stateless_seed(seed))


class NormalPrior:
    """``z ~ N(0, I_d)``: the VAE's prior."""

    name = "normal"

    def __init__(self, latent_dim: int):
        self.latent_dim = int(latent_dim)

    def draw(self, num_samples, seed) -> tf.Tensor:
        return tf.random.stateless_normal(tf.stack([num_samples, self.latent_dim]),
                                          seed=stateless_seed(seed), dtype=tf.float32)

    def sample(self, num_samples: int, seed=None) -> tf.Tensor:
        return self.draw(num_samples, stateless_seed(seed))
