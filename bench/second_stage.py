"""Ex-post samplers compared on one trained run: the 10-component Gaussian mixture, a
single Gaussian, and a second-stage VAE on the latents (Dai & Wipf 2019, "Diagnosing and
Enhancing VAE Models"), by domain FID and sharpness of 10,000 decoded samples.

    python -m bench.second_stage --workdir runs/evae-learned [--epochs 30]

Prints one JSON object. This is the experiment behind docs/results.md, 'A second stage':
the second stage did not beat the mixture, so the library ships the mixture only.
"""

from __future__ import annotations

import argparse
import json
import time

import keras
import numpy as np
import tensorflow as tf

from evae_tf import data, evaluation, runs, samplers

SAMPLES, BATCH = 10_000, 500


class SecondStage(keras.Model):
    """A VAE on standardised latents ``u``: Gaussian encoder, Gaussian decoder with a
    learned scale ``gamma`` (Dai & Wipf's second stage), MLPs of two hidden layers."""

    def __init__(self, dim: int, width: int = 512):
        super().__init__()
        self.dim = dim
        self.enc = keras.Sequential([keras.layers.Dense(width, "relu"), keras.layers.Dense(width, "relu"),
                                     keras.layers.Dense(2 * dim)])
        self.dec = keras.Sequential([keras.layers.Dense(width, "relu"), keras.layers.Dense(width, "relu"),
                                     keras.layers.Dense(dim)])
        self.log_gamma = self.add_weight(shape=(), initializer="zeros", name="log_gamma")

    def train_step(self, u):
        with tf.GradientTape() as tape:
            h = self.enc(u)
            mu, log_var = h[:, :self.dim], h[:, self.dim:]
            v = mu + tf.exp(0.5 * log_var) * tf.random.normal(tf.shape(mu))
            residual = tf.square(u - self.dec(v)) / (2.0 * tf.exp(2.0 * self.log_gamma)) + self.log_gamma
            kl = 0.5 * tf.reduce_sum(tf.square(mu) + tf.exp(log_var) - 1.0 - log_var, -1)
            loss = tf.reduce_mean(tf.reduce_sum(residual, -1) + kl)
        grads = tape.gradient(loss, self.trainable_variables)
        self.optimizer.apply_gradients(zip(grads, self.trainable_variables, strict=True))
        return {"negative_elbo": loss}


def second_stage_sampler(z: np.ndarray, epochs: int):
    """Trains :class:`SecondStage` on ``z``; returns ``sample(n, seed) -> [n, d]`` latents."""
    mean, std = z.mean(0), z.std(0) + 1e-6
    u = ((z - mean) / std).astype("float32")
    model = SecondStage(z.shape[1])
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.enc(u[:2])
    model.dec(u[:2])
    model.fit(tf.data.Dataset.from_tensor_slices(u).shuffle(len(u), seed=0).batch(256), epochs=epochs, verbose=2)
    return lambda n, seed: model.dec(tf.random.stateless_normal([n, z.shape[1]], seed=[seed, 0])).numpy() * std + mean


def score(model, draw, network, real) -> dict[str, float]:
    images = [model.decode(draw(BATCH, i)).numpy() for i in range(SAMPLES // BATCH)]
    fake = evaluation.feature_stats(images, network)
    return {"fid": evaluation.fid_from_stats(real, fake, network)["fid"],
            "sharpness": float(np.mean([evaluation.sharpness(b) for b in images]))}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.second_stage")
    p.add_argument("--workdir", required=True)
    p.add_argument("--epochs", type=int, default=30, help="second-stage training epochs")
    args = p.parse_args(argv)
    model, config = runs.load_model(args.workdir)
    z = samplers.aggregate_posterior(model, data.load(config.dataset, "train", batch_size=BATCH), progress=False)
    out: dict = {}
    start = time.perf_counter()
    mixture = samplers.fit_gaussian_mixture(z, 10)
    single = samplers.fit_gaussian_mixture(z, 1)
    out["mixture_fit_seconds"] = time.perf_counter() - start
    start = time.perf_counter()
    stage2 = second_stage_sampler(z, args.epochs)
    out["second_stage_train_seconds"] = time.perf_counter() - start
    network = evaluation.fid_network("domain", dataset=config.dataset)
    real = evaluation.feature_stats(data.load(config.dataset, "holdout", batch_size=BATCH), network)
    for name, draw in (("mixture_10_full", lambda n, s: mixture.sample(n, seed=s).numpy()),
                       ("gaussian_1_full", lambda n, s: single.sample(n, seed=s).numpy()),
                       ("second_stage_vae", stage2)):
        out[name] = score(model, draw, network, real)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
