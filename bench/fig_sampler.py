"""``sampler``: median-of-three vs inverse-cdf Epanechnikov draws, and the EVAE posterior
sampler's share of a training step."""

from __future__ import annotations

import math
from typing import Any

from bench.harness import BATCH, LATENT_DIM, Context, library_stepper, ms, timed
from bench.table import Rows
from bench.timing import interleave, paired_ratio, scaled, summary


def _sampler_methods(ctx: Context) -> dict[str, Any]:
    """Median-of-three vs inverse-cdf draws (ns per draw) at the training and a large shape."""
    import tensorflow as tf

    from evae_tf.bijectors.epanechnikov_cdf import standard_quantile
    from evae_tf.distributions import epanechnikov

    def median3(shape, seed):
        return epanechnikov.sample_standard(shape, tf.float32, seed)

    def inverse_cdf(shape, seed):
        u = tf.random.stateless_uniform(shape, seed=seed, dtype=tf.float32)
        return standard_quantile(u)

    def looped(sampler, shape, loops):
        @tf.function
        def run():
            def body(i, acc):
                draw = sampler(tf.constant(shape), tf.stack([i, 7]))
                return i + 1, acc + draw[..., :1]
            acc0 = tf.zeros([*shape[:-1], 1]) if len(shape) > 1 else tf.zeros([1])
            return tf.while_loop(lambda i, _: i < loops, body, (tf.constant(0), acc0))[1]
        float(tf.reduce_sum(run()))
        return run

    shapes = {"train_batch": [BATCH, LATENT_DIM], "large": [250_000 if ctx.quick else 1_000_000]}
    methods: dict[str, Any] = {}
    for label, shape in shapes.items():
        loops = 200 if label == "train_batch" else (4 if ctx.quick else 10)
        fns = {name: looped(fn, shape, loops) for name, fn in
               (("median_of_three", median3), ("inverse_cdf", inverse_cdf))}
        size = math.prod(shape)
        times = interleave({name: (lambda f=f, n=loops: timed(f) / n) for name, f in fns.items()},
                           ctx.repeats)
        methods[label] = {
            "shape": shape,
            **{f"{name}_ns_per_draw": scaled(summary(times[name]), 1e9 / size) for name in fns},
            "inverse_over_median": paired_ratio(times["inverse_cdf"], times["median_of_three"]),
        }
    return methods


def _posterior_fwd_bwd(loops: int):
    """The training step's sampling: the EVAE posterior (z = b (mu + r K) + U), forward and
    backward, at the training shape, looped ``loops`` times inside one graph (no dispatch)."""
    import tensorflow as tf

    from evae_tf.distributions.evae_posterior import EVAEPosterior

    loc = tf.random.stateless_normal([BATCH, LATENT_DIM], seed=[0, 1])
    spread = tf.fill([BATCH, LATENT_DIM], 0.5)
    support = tf.fill([BATCH, LATENT_DIM], 0.1)

    @tf.function
    def posterior_fwd_bwd():
        def body(i, acc):
            with tf.GradientTape() as tape:
                tape.watch([loc, spread, support])
                z = EVAEPosterior(loc=loc, spread=spread, support=support).sample(seed=tf.stack([i, 3]))
                total = tf.reduce_sum(z)
            grads = tape.gradient(total, [loc, spread, support])
            return i + 1, acc + total + tf.add_n([tf.reduce_sum(g) for g in grads])
        return tf.while_loop(lambda i, _: i < loops, body, (tf.constant(0), tf.constant(0.0)))[1]

    float(posterior_fwd_bwd())
    return posterior_fwd_bwd


def measure(ctx: Context) -> dict[str, Any]:
    """Median-of-three vs inverse-cdf sampling, and the sampler's share of a training step."""
    methods = _sampler_methods(ctx)
    loops = 200
    posterior_fwd_bwd = _posterior_fwd_bwd(loops)
    stepper = library_stepper(ctx, "evae")
    steps = ctx.steps(10, 3)
    times = interleave({"sampler": lambda: timed(posterior_fwd_bwd) / loops,
                        "train_step": lambda: stepper.run(steps)}, ctx.repeats)
    return {
        "methods": methods,
        "posterior_sample_us": scaled(summary(times["sampler"]), 1e6),
        "train_step_ms": ms(summary(times["train_step"])),
        "share_of_train_step": paired_ratio(times["sampler"], times["train_step"]),
        "method": "samplers looped in a tf.while_loop inside one tf.function (no dispatch); "
                  "share = (EVAE posterior sample + its gradient, [100, 64]) / float32 EVAE step",
    }


def rows(r: dict[str, Any]) -> Rows:
    rows = Rows()
    for m in r["methods"].values():
        rows.add(f"median-of-three {m['shape']}", m["median_of_three_ns_per_draw"], "ns/draw")
        rows.add(f"inverse-cdf {m['shape']}", m["inverse_cdf_ns_per_draw"], "ns/draw")
        rows.add(f"inverse-cdf / median-of-three {m['shape']}", m["inverse_over_median"], "x")
    rows.add("EVAE posterior sample + grad [100, 64]", r["posterior_sample_us"], "us")
    rows.add("train step", r["train_step_ms"], "ms")
    rows.add("sampling share of a train step", r["share_of_train_step"], "fraction")
    return rows
