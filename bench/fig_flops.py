"""``flops``: FLOPs of a training step (analytic, cross-checked with TF's op statistics), the
achieved GFLOP/s against an in-run matmul peak, and the step's matrix products alone (the
GEMM bound)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from bench import flops as flops_lib
from bench.harness import BATCH, IMAGE_SHAPE, Context, library_stepper, matmul_block, ms
from bench.table import Rows
from bench.timing import interleave, inverted, paired_ratio, summary


def _gemm_blocks(products: list[dict[str, Any]], calls: int) -> tuple[Callable[[], float], Callable[[], list[float]]]:
    """Timers for a training step's matrix products as plain float32 ``tf.matmul``.

    Returns ``(all_block, each)``: ``all_block()`` is the seconds per call of one
    ``tf.function`` running every product (independent, so the executor may overlap two,
    as it does in the real step); ``each()`` the seconds of every product alone.
    """
    import tensorflow as tf

    operands = [(tf.random.stateless_normal(p["a"], seed=[i, 1]),
                 tf.random.stateless_normal(p["b"], seed=[i, 2])) for i, p in enumerate(products)]

    def corner(a, b):
        return tf.reduce_sum(tf.matmul(a, b)[:1, :1])

    every = tf.function(lambda ops: tf.add_n([corner(a, b) for a, b in ops]))
    one = tf.function(corner)
    float(every(operands))

    def all_block() -> float:
        start = time.perf_counter()
        out = None
        for _ in range(calls):
            out = every(operands)
        float(out)
        return (time.perf_counter() - start) / calls

    def each() -> list[float]:
        times = []
        for a, b in operands:
            float(one(a, b))
            runs = []
            for _ in range(max(3, calls)):
                start = time.perf_counter()
                float(one(a, b))
                runs.append(time.perf_counter() - start)
            times.append(float(np.median(runs)))
        return times

    return all_block, each


def _profiled_flops(model) -> dict[str, Any]:
    """TF's own FLOP statistics of the forward pass and the training step (a cross-check)."""
    import tensorflow as tf

    profiled: dict[str, Any] = {}
    try:
        spec = tf.TensorSpec([BATCH, *IMAGE_SHAPE], tf.float32)
        forward = tf.function(lambda x: model.decode(model.sample_posterior(model.encode(x, True)), True))
        profiled["forward"] = flops_lib.profiler_flops(forward.get_concrete_function(spec))
        profiled["train_step"] = flops_lib.profiler_flops(tf.function(model.train_step).get_concrete_function(spec))
    except Exception as e:  # the cross-check is optional
        profiled["error"] = f"{type(e).__name__}: {e}"
    return profiled


def measure(ctx: Context) -> dict[str, Any]:
    """FLOPs of a training step, the achieved GFLOP/s and the in-run matmul peak."""
    stepper = library_stepper(ctx, "evae")
    model = stepper.model
    counted = flops_lib.train_step_flops(model, BATCH)
    step_flops = counted["train_step_exact"]

    profiled = _profiled_flops(model)

    n = 2048
    matmul_flops = 2 * n**3
    steps = ctx.steps(10, 3)
    products = flops_lib.train_step_gemms(model, BATCH)
    gemm_all, gemm_each = _gemm_blocks(products, 2 if ctx.quick else 5)
    cpu: dict[str, list[float]] = {}
    times = interleave({"matmul": matmul_block(n, 2 if ctx.quick else 5),
                        "train_step": lambda: stepper.run(steps),
                        "gemms_only": gemm_all}, ctx.repeats, cpu=cpu)
    peak = inverted(summary(times["matmul"]), matmul_flops / 1e9)
    achieved = inverted(summary(times["train_step"]), step_flops / 1e9)
    fraction = summary([(step_flops / t) / (matmul_flops / m)
                        for t, m in zip(times["train_step"], times["matmul"], strict=True)])
    gemm_fraction = summary([(step_flops / g) / (matmul_flops / m)
                             for g, m in zip(times["gemms_only"], times["matmul"], strict=True)])
    peak_flops_per_s = matmul_flops / float(np.median(times["matmul"]))
    each = gemm_each()
    by_product = [{"layer": p["layer"], "product": p["product"], "a": list(p["a"]), "b": list(p["b"]),
                   "ms": t * 1000.0, "fraction_of_peak": p["flops"] / t / peak_flops_per_s}
                  for p, t in zip(products, each, strict=True)]
    return {
        "analytic": {k: v for k, v in counted.items()},
        "profiler": profiled,
        "matmul_n": n, "matmul_gflops": peak,
        "train_step_ms": ms(summary(times["train_step"])),
        "train_gflops": achieved,
        "fraction_of_matmul_peak": fraction,
        "fraction_of_matmul_peak_per_cpu_s": summary(
            [(step_flops / t) / (matmul_flops / m) for t, m in zip(cpu["train_step"], cpu["matmul"], strict=True)]),
        "gemm_bound": {
            "products": len(products),
            "step_ms": ms(summary(times["gemms_only"])),
            "fraction_of_matmul_peak": gemm_fraction,
            "train_step_over_gemms": paired_ratio(times["train_step"], times["gemms_only"]),
            "sum_of_products_alone_ms": float(sum(each)) * 1000.0,
            "by_product": by_product,
            "method": "every matrix product of the step (forward, weight and input gradients, "
                      "im2col shapes from bench.flops.train_step_gemms) as a plain float32 "
                      "tf.matmul in one tf.function, no im2col/col2im and no elementwise ops: "
                      "the step a perfect GEMM-based convolution would take",
        },
        "method": "analytic FLOPs (exact backward) / step time; matmul n×n float32 interleaved "
                  "with the float32 EVAE step; fraction = per-repeat ratio",
    }


def rows(r: dict[str, Any]) -> Rows:
    rows = Rows()
    a = r["analytic"]
    rows.add("forward FLOPs / image (analytic)", a["forward_per_image"] / 1e6, "MFLOP")
    rows.add("train step FLOPs (analytic, exact)", a["train_step_exact"] / 1e9, "GFLOP")
    rows.add("train step FLOPs (3 x forward)", a["train_step_rule_of_three"] / 1e9, "GFLOP")
    if "train_step" in r["profiler"]:
        rows.add("train step FLOPs (TF op statistics)", r["profiler"]["train_step"]["total"] / 1e9, "GFLOP")
    rows.add("train step", r["train_step_ms"], "ms")
    rows.add("achieved training", r["train_gflops"], "GFLOP/s")
    rows.add(f"matmul {r['matmul_n']}^2 float32 peak", r["matmul_gflops"], "GFLOP/s")
    rows.add("achieved / matmul peak", r["fraction_of_matmul_peak"], "fraction")
    if "fraction_of_matmul_peak_per_cpu_s" in r:
        rows.add("the same per CPU-second (robust to load)", r["fraction_of_matmul_peak_per_cpu_s"], "fraction")
    if "gemm_bound" in r:
        g = r["gemm_bound"]
        rows.add(f"the step's {g['products']} matrix products alone", g["step_ms"], "ms")
        rows.add("products alone / matmul peak (GEMM bound)", g["fraction_of_matmul_peak"], "fraction")
        rows.add("train step / products alone", g["train_step_over_gemms"], "x")
    return rows
