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


def layer_gemm(layer, batch_size: int) -> tuple[int, int, int] | None:
    """The ``(M, K, N)`` of the matrix product a layer's forward pass is (im2col view).

    ``Conv2D``: ``M = batch · H_out · W_out`` output pixels, ``K = K_h · K_w · C_in``,
    ``N = C_out``. ``Conv2DTranspose`` from its input side: ``M = batch · H_in · W_in``,
    ``K = C_in``, ``N = K_h · K_w · C_out`` (then scattered). ``Dense``: ``M = batch``.
    ``2 · M · K · N`` equals :func:`layer_flops` times the batch.
    """
    if isinstance(layer, keras.layers.Conv2DTranspose):
        h, w, c_in = _shape(layer.input)
        kh, kw = layer.kernel_size
        return batch_size * h * w, c_in, kh * kw * layer.filters
    if isinstance(layer, keras.layers.Conv2D):
        c_in = _shape(layer.input)[-1]
        h, w, c_out = _shape(layer.output)
        kh, kw = layer.kernel_size
        return batch_size * h * w, kh * kw * c_in, c_out
    if isinstance(layer, keras.layers.Dense):
        return batch_size, math.prod(_shape(layer.input)), layer.units
    return None


def train_step_gemms(model, batch_size: int) -> list[dict[str, Any]]:
    """Every matrix product of a training step, as plain GEMM shapes.

    Per layer: the forward ``[M, K] @ [K, N]``, the weight gradient ``[K, M] @ [M, N]`` and,
    except for the encoder's first layer, the input gradient ``[M, N] @ [N, K]``. Their
    FLOPs sum to ``train_step_flops(...)["train_step_exact"]``.
    """
    rows = []
    layers = [(model.encoder.name, layer) for layer in model.encoder.layers]
    layers += [(model.decoder.name, layer) for layer in model.decoder.layers]
    first = True
    for network, layer in layers:
        shape = layer_gemm(layer, batch_size)
        if shape is None:
            continue
        m, k, n = shape
        products = [("forward", (m, k), (k, n)), ("weight_gradient", (k, m), (m, n))]
        if not first:
            products.append(("input_gradient", (m, n), (n, k)))
        first = False
        for kind, a, b in products:
            rows.append({"layer": f"{network}/{layer.name}", "product": kind, "a": a, "b": b,
                         "flops": 2 * a[0] * a[1] * b[1]})
    return rows
