"""``ablations``: the library's BatchNorm and first transposed convolution against Keras'
own layers (step-time ratios, interleaved in-process)."""

from __future__ import annotations

from typing import Any

from bench.harness import Context, Stepper, build_model, library_stepper, ms
from bench.table import Rows
from bench.timing import interleave, paired_ratio, summary


def measure(ctx: Context) -> dict[str, Any]:
    """The library's performance choices against Keras' own layers, interleaved in-process.

    * ``batchnorm``: ``networks.BatchNormalization`` (TF's fused kernel) vs Keras' layer;
    * ``first_deconv``: ``networks.Conv2DTranspose`` (a matmul for the 1×1 input) vs Keras';
    * ``both``: the library vs the network built from Keras' layers only.
    """
    import contextlib

    import keras

    from evae_tf.models import networks

    @contextlib.contextmanager
    def keras_layers(*names):
        saved = {name: getattr(networks, name) for name in names}
        for name in names:
            setattr(networks, name, getattr(keras.layers, name))
        try:
            yield
        finally:
            for name, layer in saved.items():
                setattr(networks, name, layer)

    variants = {"library": library_stepper(ctx, "evae")}
    for label, names in (("keras_batchnorm", ("BatchNormalization",)),
                         ("keras_conv2dtranspose", ("Conv2DTranspose",)),
                         ("keras_layers_only", ("BatchNormalization", "Conv2DTranspose"))):
        with keras_layers(*names):
            variants[label] = Stepper(build_model("evae"))
    steps = ctx.steps(10, 3)
    times = interleave({k: (lambda s=v: s.run(steps)) for k, v in variants.items()},
                       max(ctx.repeats, 5) * (1 if ctx.quick else 2))
    out: dict[str, Any] = {"step_ms": {k: ms(summary(v)) for k, v in times.items()}}
    for label in variants:
        if label != "library":
            out[f"library_over_{label}"] = paired_ratio(times["library"], times[label])
    out["method"] = ("float32 EVAE step of the library's network vs the same network with Keras' "
                     "own layer(s) in place of networks.BatchNormalization / networks."
                     "Conv2DTranspose, interleaved; ratio = median of per-repeat ratios")
    return out


def rows(r: dict[str, Any]) -> Rows:
    rows = Rows()
    for label, t in r["step_ms"].items():
        rows.add(f"step, {label}", t, "ms")
    for key, ratio in r.items():
        if key.startswith("library_over_"):
            rows.add(key.replace("_", " "), ratio, "x")
    return rows
