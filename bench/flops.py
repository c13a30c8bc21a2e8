"""FLOPs of the networks, counted analytically from the layer shapes, and TF's own count.

Conventions (multiply-add = 2 FLOPs, per image):

* ``Conv2D``: ``2 · H_out · W_out · K_h · K_w · C_in · C_out``;
* ``Conv2DTranspose``: the same from its *input* side, ``2 · H_in · W_in · K_h · K_w · C_in · C_out``
  (every input pixel is scattered into a K×K window: the real multiply-adds);
* ``Dense``: ``2 · in · out``.

BatchNorm, ReLU, biases, the sampler and the loss are elementwise and left out (well under
1 % of the total here). A training step is forward + backward, the backward being a gradient
for the weights of every layer and for the input of every layer but the first: about
``3 ×`` the forward FLOPs (``train_step_flops`` gives both the exact sum and the ``3 ×`` rule).

TensorFlow's profiler (``tf.compat.v1.profiler`` statistics) counts a transposed conv
(``Conv2DBackpropInput``) and the conv gradients from the *output* side of the forward
conv, i.e. including the multiplications by the zeros of the stride-2 upsampling; its
totals are therefore larger. ``profiler_flops`` reports its count by op type.
"""

from __future__ import annotations

import collections
import math
from typing import Any

import keras


def _shape(tensor) -> tuple[int, ...]:
    return tuple(int(s) for s in tensor.shape[1:])


def layer_flops(layer) -> int:
    """Forward FLOPs per image of one layer (0 for the elementwise ones)."""
    if isinstance(layer, keras.layers.Conv2DTranspose):
        h, w, c_in = _shape(layer.input)
        kh, kw = layer.kernel_size
        return 2 * h * w * kh * kw * c_in * layer.filters
    if isinstance(layer, keras.layers.Conv2D):
        c_in = _shape(layer.input)[-1]
        h, w, c_out = _shape(layer.output)
        kh, kw = layer.kernel_size
        return 2 * h * w * kh * kw * c_in * c_out
    if isinstance(layer, keras.layers.Dense):
        return 2 * math.prod(_shape(layer.input)) * layer.units
    return 0


def network_flops(network: keras.Model) -> list[dict[str, Any]]:
    """``[{"layer", "type", "flops"}]`` per image for the layers that count."""
    rows = []
    for layer in network.layers:
        flops = layer_flops(layer)
        if flops:
            rows.append({"layer": f"{network.name}/{layer.name}", "type": type(layer).__name__,
                         "flops": flops})
    return rows


def model_flops(model) -> dict[str, Any]:
    """Forward FLOPs per image of an EVAE / VAE (encoder + decoder) with the per-layer rows."""
    rows = network_flops(model.encoder) + network_flops(model.decoder)
    return {"forward_per_image": sum(r["flops"] for r in rows), "layers": rows}


def train_step_flops(model, batch_size: int) -> dict[str, Any]:
    """FLOPs of one training step of ``batch_size`` images.

    ``exact``: forward + weight gradients of every layer + input gradients of every layer
    but the encoder's first (the images need none). ``rule_of_three``: ``3 ×`` forward.
    """
    counted = model_flops(model)
    forward = counted["forward_per_image"]
    first = counted["layers"][0]["flops"]
    exact = forward + forward + (forward - first)
    return {
        "forward_per_image": forward,
        "forward_per_batch": forward * batch_size,
        "train_step_exact": exact * batch_size,
        "train_step_rule_of_three": 3 * forward * batch_size,
        "layers": counted["layers"],
    }


def profiler_flops(concrete_function) -> dict[str, Any]:
    """TF's registered FLOP statistics summed over a concrete function's graph, by op type."""
    from tensorflow.python.framework import ops as tf_ops

    graph = concrete_function.graph
    by_type: collections.Counter = collections.Counter()
    for op in graph.get_operations():
        try:
            value = tf_ops.get_stats_for_node_def(graph, op.node_def, "flops").value
        except Exception:  # no statistics registered, or unknown shapes
            value = None
        if value:
            by_type[op.type] += int(value)
    return {"total": int(sum(by_type.values())), "by_op_type": dict(by_type.most_common())}
