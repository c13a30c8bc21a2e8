"""``profile``: where a training step's time goes (TF profiler): op time by category and
by convolution layer, beside each layer's share of the FLOPs."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

from bench import flops as flops_lib
from bench.harness import BATCH, Context, library_stepper
from bench.table import Rows


def _xplane_op_times(logdir: Path, steps: int) -> list[tuple[str, str, float]]:
    """``(scope, op type, ms per step)`` of every TF op event in the profile's host plane."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    files = sorted(logdir.glob("**/*.xplane.pb"))
    space = xplane_pb2.XSpace()
    space.ParseFromString(files[-1].read_bytes())
    out = []
    for plane in space.planes:
        metadata = plane.event_metadata
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):  # executor threads run the kernels
                continue
            for event in line.events:
                name = metadata[event.metadata_id].name
                if "::" in name or ":" not in name:
                    continue
                scope, op_type = name.rsplit(":", 1)
                out.append((scope, op_type, event.duration_ps / 1e9 / steps))
    return out


def _category(scope: str, op_type: str) -> str:
    if "Conv2D" in op_type:
        return "convolutions (forward)" if "gradient_tape" not in scope else "convolutions (backward)"
    if "MatMul" in op_type:
        return "dense layers"
    if "/adam/" in scope or scope.startswith("adam") or "/adam" in scope:
        return "optimizer (Adam)"
    if "BatchNorm" in op_type or "/bn" in scope:
        return "batchnorm"
    if "/relu" in scope or "Relu" in op_type:
        return "relu"
    return "other (loss, sampler, bias, metrics, casts)"


def measure(ctx: Context) -> dict[str, Any]:
    """Where a training step's time goes: TF profiler op times by category and by layer."""
    import tensorflow as tf

    stepper = library_stepper(ctx, "evae")
    steps = ctx.steps(20, 5)
    logdir = ctx.workdir / "profile"
    shutil.rmtree(logdir, ignore_errors=True)
    tf.profiler.experimental.start(str(logdir))
    try:
        wall_s = stepper.run(steps)
    finally:
        tf.profiler.experimental.stop()
    events = _xplane_op_times(logdir, steps)
    total = sum(ms for _, _, ms in events)
    by_category: dict[str, float] = {}
    by_layer: dict[str, float] = {}
    for scope, op_type, ms in events:
        category = _category(scope, op_type)
        by_category[category] = by_category.get(category, 0.0) + ms
        match = re.search(r"(encoder|decoder)(?:_\d+)?/([a-z]+\d*)(?:_\d+)?/", scope + "/")
        if match and "Conv2D" in op_type:
            key = f"{match.group(1)}/{match.group(2)}"
            by_layer[key] = by_layer.get(key, 0.0) + ms
    counted = flops_lib.train_step_flops(stepper.model, BATCH)
    layer_flops = {}
    for i, row in enumerate(counted["layers"]):
        if "Conv" in row["type"]:
            passes = 2 if i == 0 else 3  # no input gradient for the images
            layer_flops[row["layer"]] = passes * row["flops"] * BATCH
    conv_flops = sum(layer_flops.values())
    conv_ms = sum(by_layer.values())
    layers = {
        name: {"op_ms": ms, "time_share_of_convs": ms / conv_ms if conv_ms else None,
               "flop_share_of_convs": layer_flops.get(name, 0) / conv_flops if conv_flops else None}
        for name, ms in sorted(by_layer.items(), key=lambda kv: -kv[1])
    }
    return {
        "steps": steps, "wall_ms_per_step": wall_s * 1000.0,
        "op_ms_per_step": total,
        "op_time_over_wall": total / (wall_s * 1000.0),
        "categories": {k: {"op_ms": v, "share": v / total}
                       for k, v in sorted(by_category.items(), key=lambda kv: -kv[1])},
        "conv_layers": layers,
        "method": "tf.profiler over the compiled step; op times summed over the executor threads "
                  "(two run at once on this machine, so the sum exceeds the wall time)",
    }


def rows(r: dict[str, Any]) -> Rows:
    rows = Rows()
    rows.add("wall time per step (under the profiler)", r["wall_ms_per_step"], "ms")
    rows.add("op time per step, summed over threads", r["op_ms_per_step"], "ms")
    for cat, c in r["categories"].items():
        rows.add(f"share of op time: {cat}", c["share"], "fraction")
    for layer, c in r["conv_layers"].items():
        rows.text(f"{layer}: share of conv time / of conv FLOPs", f"{c['time_share_of_convs']:.3f}", "",
                  f"FLOP share {c['flop_share_of_convs']:.3f}")
    return rows
