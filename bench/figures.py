"""The figures of the benchmark suite; each returns a JSON-able dict.

Every figure takes a :class:`Context` (``quick`` mode, ``repeats``, a log function and a
scratch directory). Absolute numbers are medians over repeats with quartiles and range;
every comparison is a ratio of measurements interleaved in the same process.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench import flops as flops_lib
from bench.table import Rows, num
from bench.timing import interleave, inverted, paired_ratio, percentiles, scaled, summary

BATCH = 100
IMAGE_SHAPE = (32, 32, 1)  # Fashion-MNIST as delivered to the paper's network
LATENT_DIM = 64  # the paper's Fashion-MNIST sharpness runs use d_z = 64
DATASET = "fashion_mnist"


@dataclasses.dataclass
class Context:
    quick: bool = False
    repeats: int = 7
    log: Callable[[str], None] = print
    workdir: Path = dataclasses.field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="evae-bench-")))
    cache: dict[str, Any] = dataclasses.field(default_factory=dict)

    def steps(self, full: int, quick: int) -> int:
        return quick if self.quick else full


# --------------------------------------------------------------------------- models and steps


def train_config(kind: str = "evae", precision: str = "float32", **overrides):
    """The library's TrainConfig for the paper's Fashion-MNIST network (batch 100, d_z 64)."""
    from evae_tf.config import ModelConfig, TrainConfig

    model = ModelConfig(kind=kind, image_shape=IMAGE_SHAPE, latent_dim=LATENT_DIM, seed=0)
    return TrainConfig(dataset=DATASET, model=model, batch_size=BATCH, precision=precision,
                       **overrides)


def build_model(kind: str, precision: str = "float32", jit_compile: bool | None = None):
    """A compiled model exactly as ``evae_tf.training`` builds it.

    ``jit_compile=None`` keeps the library's choice; True / False force XLA on or off.
    """
    import keras
    import tensorflow as tf

    from evae_tf import training

    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(precision)
    try:
        keras.utils.set_random_seed(0)
        model = training.build_compiled(train_config(kind, precision), tf.distribute.get_strategy())
    finally:
        keras.mixed_precision.set_global_policy(previous)
    if jit_compile is not None:
        model.jit_compile = jit_compile
    model.make_train_function(force=True)
    return model


def synthetic_batch(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((BATCH, *IMAGE_SHAPE), dtype=np.float32)


class Stepper:
    """Calls a model's compiled ``train_function`` (what ``fit`` calls each step) on a
    fixed in-memory batch, so that only the training step is timed."""

    def __init__(self, model):
        import tensorflow as tf

        self.model = model
        batch = synthetic_batch()
        self.iterator = iter(tf.data.Dataset.from_tensors(batch).repeat())
        start = time.perf_counter()
        self.run(1)
        self.first_call_s = time.perf_counter() - start  # tracing (and XLA compilation)
        self.run(2)

    def run(self, steps: int) -> float:
        """Seconds per step over ``steps`` steps."""
        start = time.perf_counter()
        logs = None
        for _ in range(steps):
            logs = self.model.train_function(self.iterator)
        float(logs["loss"])  # the value exists on the host: the steps have finished
        return (time.perf_counter() - start) / steps


def library_stepper(ctx: Context, kind: str = "evae") -> Stepper:
    """One shared float32 stepper per kind with the library's settings."""
    key = f"stepper/{kind}"
    if key not in ctx.cache:
        ctx.cache[key] = Stepper(build_model(kind))
    return ctx.cache[key]


def _ms(s):
    return scaled(s, 1000.0)


# --------------------------------------------------------------------------- 1. training step


def fig_train(ctx: Context) -> dict[str, Any]:
    """Training throughput of EVAE and VAE: float32 / mixed precision, with and without XLA."""
    steps = ctx.steps(10, 3)
    groups: list[tuple[str, list[tuple[str, str, bool]]]] = [
        ("no_xla", [(k, p, False) for p in ("float32", "mixed_float16", "mixed_bfloat16")
                    for k in ("evae", "vae")]),
        ("xla", [(k, p, True) for p in ("float32", "mixed_float16") for k in ("evae", "vae")]),
    ]
    if ctx.quick:  # XLA compiles for ~25 s per model on this CPU: not a smoke run
        groups = groups[:1]
    library_jit = bool(library_stepper(ctx, "evae").model.jit_compile)
    configs: list[dict[str, Any]] = []
    ratios: dict[str, Any] = {}
    for group, members in groups:
        steppers: dict[str, Stepper] = {}
        for kind, precision, jit in members:
            name = f"{kind}/{precision}/{'xla' if jit else 'no_xla'}"
            ctx.log(f"  building {name}")
            steppers[name] = Stepper(build_model(kind, precision, jit_compile=jit))
        reference = None
        if group == "xla":  # the float32 step without XLA, interleaved for the XLA speed-up
            reference = "evae/float32/no_xla(ref)"
            steppers[reference] = Stepper(build_model("evae", "float32", jit_compile=False))
        group_steps = max(1, steps // 5) if group == "xla" else steps
        repeats = max(3, ctx.repeats // 2) if group == "xla" else ctx.repeats
        times = interleave({n: (lambda s=s, k=group_steps: s.run(k)) for n, s in steppers.items()},
                           repeats)
        for name, stepper in steppers.items():
            if name == reference:
                continue
            kind, precision, xla = name.split("/")
            step = summary(times[name])
            configs.append({
                "name": name, "kind": kind, "precision": precision, "xla": xla == "xla",
                "step_ms": _ms(step), "images_per_s": inverted(step, BATCH),
                "first_call_s": stepper.first_call_s, "steps_per_repeat": group_steps,
            })
        for precision in sorted({m[1] for m in members}):
            suffix = f"{precision}/{group}"
            ratios[f"evae_over_vae/{suffix}"] = paired_ratio(times[f"evae/{suffix}"], times[f"vae/{suffix}"])
            if precision != "float32":
                ratios[f"{precision}_over_float32/evae/{group}"] = paired_ratio(
                    times[f"evae/{suffix}"], times[f"evae/float32/{group}"])
        if reference:
            ratios["xla_over_no_xla/evae/float32"] = paired_ratio(times["evae/float32/xla"], times[reference])
        del steppers
    default = f"float32/{'xla' if library_jit else 'no_xla'}"
    if f"evae_over_vae/{default}" not in ratios:  # --quick skips the XLA group
        default = "float32/no_xla"
    return {
        "batch_size": BATCH, "latent_dim": LATENT_DIM, "library_jit_compile": library_jit,
        "configs": configs, "ratios": ratios,
        "default": {"config": default, "evae_over_vae": ratios[f"evae_over_vae/{default}"]},
        "method": "compiled train_function on a fixed in-memory batch; groups interleaved "
                  "round-robin; ratios are medians of per-repeat ratios",
    }


def rows_train(r: dict[str, Any]) -> Rows:
    rows = Rows()
    for c in r["configs"]:
        rows.add(f"{c['name']} step", c["step_ms"], "ms")
        rows.add(f"{c['name']} throughput", c["images_per_s"], "img/s")
    for key, s in r["ratios"].items():
        rows.add(key, s, "x")
    return rows


# --------------------------------------------------------------------------- 2. FLOPs


def _matmul_block(n: int = 2048, calls: int = 5) -> Callable[[], float]:
    import tensorflow as tf

    a = tf.random.stateless_normal([n, n], seed=[1, 2])
    b = tf.random.stateless_normal([n, n], seed=[3, 4])
    matmul = tf.function(lambda a, b: tf.reduce_sum(tf.matmul(a, b)[:1, :1]))
    float(matmul(a, b))

    def block() -> float:
        start = time.perf_counter()
        out = None
        for _ in range(calls):
            out = matmul(a, b)
        float(out)
        return (time.perf_counter() - start) / calls

    return block


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


def fig_flops(ctx: Context) -> dict[str, Any]:
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
    times = interleave({"matmul": _matmul_block(n, 2 if ctx.quick else 5),
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
        "train_step_ms": _ms(summary(times["train_step"])),
        "train_gflops": achieved,
        "fraction_of_matmul_peak": fraction,
        "fraction_of_matmul_peak_per_cpu_s": summary(
            [(step_flops / t) / (matmul_flops / m) for t, m in zip(cpu["train_step"], cpu["matmul"], strict=True)]),
        "gemm_bound": {
            "products": len(products),
            "step_ms": _ms(summary(times["gemms_only"])),
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


def rows_flops(r: dict[str, Any]) -> Rows:
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


# --------------------------------------------------------------------------- 2b. PyTorch reference


def _torch_blocks(ctx: Context, steps: int) -> dict[str, Callable[[], float]]:
    """Seconds-per-step blocks of the TF and PyTorch EVAE / VAE steps and a matmul block."""
    import torch

    from bench import torch_ref

    threads = torch.get_num_threads()
    evae, vae = torch_ref.TorchStepper("evae"), torch_ref.TorchStepper("vae")

    def one_thread(stepper):
        def block() -> float:
            torch.set_num_threads(1)
            try:
                return stepper.run(steps)
            finally:
                torch.set_num_threads(threads)
        return block

    return {
        "tf_evae": lambda: library_stepper(ctx, "evae").run(steps),
        "torch_evae": lambda: evae.run(steps),
        "tf_vae": lambda: library_stepper(ctx, "vae").run(steps),
        "torch_vae": lambda: vae.run(steps),
        "torch_evae_1_thread": one_thread(evae),
        "matmul": _matmul_block(2048, 2 if ctx.quick else 5),
    }


def fig_torch(ctx: Context) -> dict[str, Any]:
    """The TF step against a same-network PyTorch step (bench.torch_ref), interleaved."""
    from bench import torch_ref

    reason = torch_ref.available()
    if reason:
        raise Skip(reason)
    step_flops = flops_lib.train_step_flops(library_stepper(ctx, "evae").model, BATCH)["train_step_exact"]
    vae_flops = flops_lib.train_step_flops(library_stepper(ctx, "vae").model, BATCH)["train_step_exact"]
    cpu: dict[str, list[float]] = {}
    times = interleave(_torch_blocks(ctx, ctx.steps(10, 3)), ctx.repeats, cpu=cpu)
    t = {k: np.asarray(v) for k, v in times.items()}
    c = {k: np.asarray(v) for k, v in cpu.items()}
    peak = 2 * 2048**3 / t["matmul"]
    best_torch = np.minimum(t["torch_evae"], t["torch_evae_1_thread"])
    return {
        "torch": torch_ref.runtime(),
        "images_per_s": {k: inverted(summary(v), BATCH) for k, v in times.items() if k != "matmul"},
        "images_per_cpu_s": {k: inverted(summary(v), BATCH) for k, v in cpu.items() if k != "matmul"},
        "tf_over_torch": summary(t["torch_evae"] / t["tf_evae"]),
        "tf_over_torch_best_threads": summary(best_torch / t["tf_evae"]),
        "tf_over_torch_per_cpu_s": {"default_threads": summary(c["torch_evae"] / c["tf_evae"]),
                                    "1_thread": summary(c["torch_evae_1_thread"] / c["tf_evae"])},
        "fraction_of_matmul_peak_per_cpu_s": {
            "tf": summary((step_flops / c["tf_evae"]) / (2 * 2048**3 / c["matmul"])),
            "torch": summary((step_flops / c["torch_evae"]) / (2 * 2048**3 / c["matmul"]))},
        "evae_over_vae": {"tf": paired_ratio(times["tf_evae"], times["tf_vae"]),
                          "torch": paired_ratio(times["torch_evae"], times["torch_vae"])},
        "matmul_gflops": summary(peak / 1e9),
        "fraction_of_matmul_peak": {"tf": summary(step_flops / t["tf_evae"] / peak),
                                    "torch": summary(step_flops / t["torch_evae"] / peak),
                                    "tf_vae": summary(vae_flops / t["tf_vae"] / peak)},
        "train_step_gflop": step_flops / 1e9,
        "method": "float32 EVAE / VAE training steps, batch 100, fixed in-memory batch: the "
                  "library's compiled train_function vs bench.torch_ref (same layers, loss, "
                  "Adam) at PyTorch's default threads and at 1 thread, and a 2048^2 TF matmul, "
                  "interleaved in this process; ratios per repeat. tf_over_torch = TF "
                  "throughput / PyTorch throughput (issue 12's goal: >= 1.25 in every repeat). "
                  "*_per_cpu_s: the same per CPU-second the process used (all threads), "
                  "which a loaded machine distorts much less than wall time",
    }


def rows_torch(r: dict[str, Any]) -> Rows:
    rows = Rows()
    threads = r["torch"]["threads"]
    for key, s in r["images_per_s"].items():
        label = key.replace("_", " ").replace("torch evae", "PyTorch EVAE").replace("torch vae", "PyTorch VAE")
        rows.add(f"{label.replace('tf ', 'TF ')} step", s, "img/s")
    rows.add(f"TF / PyTorch throughput, EVAE (PyTorch {threads} threads)", r["tf_over_torch"], "x")
    rows.add("TF / PyTorch throughput, EVAE (PyTorch's better of default, 1 thread)",
             r["tf_over_torch_best_threads"], "x")
    if "tf_over_torch_per_cpu_s" in r:
        for key, s in r["images_per_cpu_s"].items():
            rows.add(f"{key.replace('_', ' ')} per CPU-second", s, "img/CPU-s")
        per_cpu = r["tf_over_torch_per_cpu_s"]
        rows.add(f"TF / PyTorch per CPU-second, EVAE (PyTorch {threads} threads)",
                 per_cpu["default_threads"], "x")
        rows.add("TF / PyTorch per CPU-second, EVAE (PyTorch 1 thread)", per_cpu["1_thread"], "x")
        frac = r["fraction_of_matmul_peak_per_cpu_s"]
        rows.add("TF EVAE / matmul, GFLOP per CPU-second", frac["tf"], "fraction")
        rows.add("PyTorch EVAE / matmul, GFLOP per CPU-second", frac["torch"], "fraction")
    rows.add("EVAE step / VAE step, TF", r["evae_over_vae"]["tf"], "x")
    rows.add("EVAE step / VAE step, PyTorch", r["evae_over_vae"]["torch"], "x")
    rows.add("matmul 2048^2 float32 peak (TF)", r["matmul_gflops"], "GFLOP/s")
    rows.add("TF EVAE achieved / matmul peak", r["fraction_of_matmul_peak"]["tf"], "fraction")
    rows.add("PyTorch EVAE achieved / matmul peak", r["fraction_of_matmul_peak"]["torch"], "fraction")
    return rows


# --------------------------------------------------------------------------- 3. sampler


def _sampler_methods(ctx: Context) -> dict[str, Any]:
    """Median-of-three vs inverse-cdf draws (ns per draw) at the training and a large shape."""
    import tensorflow as tf

    from evae_tf.distributions import epanechnikov
    from evae_tf.distributions.epanechnikov_cdf import standard_quantile

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
        times = interleave({name: (lambda f=f, n=loops: _timed(f) / n) for name, f in fns.items()},
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


def fig_sampler(ctx: Context) -> dict[str, Any]:
    """Median-of-three vs inverse-cdf sampling, and the sampler's share of a training step."""
    methods = _sampler_methods(ctx)
    loops = 200
    posterior_fwd_bwd = _posterior_fwd_bwd(loops)
    stepper = library_stepper(ctx, "evae")
    steps = ctx.steps(10, 3)
    times = interleave({"sampler": lambda: _timed(posterior_fwd_bwd) / loops,
                        "train_step": lambda: stepper.run(steps)}, ctx.repeats)
    return {
        "methods": methods,
        "posterior_sample_us": scaled(summary(times["sampler"]), 1e6),
        "train_step_ms": _ms(summary(times["train_step"])),
        "share_of_train_step": paired_ratio(times["sampler"], times["train_step"]),
        "method": "samplers looped in a tf.while_loop inside one tf.function (no dispatch); "
                  "share = (EVAE posterior sample + its gradient, [100, 64]) / float32 EVAE step",
    }


def rows_sampler(r: dict[str, Any]) -> Rows:
    rows = Rows()
    for m in r["methods"].values():
        rows.add(f"median-of-three {m['shape']}", m["median_of_three_ns_per_draw"], "ns/draw")
        rows.add(f"inverse-cdf {m['shape']}", m["inverse_cdf_ns_per_draw"], "ns/draw")
        rows.add(f"inverse-cdf / median-of-three {m['shape']}", m["inverse_over_median"], "x")
    rows.add("EVAE posterior sample + grad [100, 64]", r["posterior_sample_us"], "us")
    rows.add("train step", r["train_step_ms"], "ms")
    rows.add("sampling share of a train step", r["share_of_train_step"], "fraction")
    return rows


def _timed(fn) -> float:
    start = time.perf_counter()
    out = fn()
    float(tf_sum(out))
    return time.perf_counter() - start


def _timed_py(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def tf_sum(x):
    import tensorflow as tf

    return tf.reduce_sum(x)


# --------------------------------------------------------------------------- 4. input pipeline


def _find_data(ctx: Context):
    if "source" not in ctx.cache:
        from evae_tf import data as data_lib

        try:
            ctx.cache["source"] = data_lib.find_source(DATASET, None)
        except Exception as e:  # noqa: BLE001 - reported in the figure
            ctx.cache["source"] = e
    source = ctx.cache["source"]
    if isinstance(source, Exception):
        raise Skip(f"no Fashion-MNIST data: {source}")
    return source


class Skip(Exception):
    """A figure that cannot run on this machine (the message says why)."""


def fig_pipeline(ctx: Context) -> dict[str, Any]:
    """The training input pipeline's rate (real Fashion-MNIST) vs the step's consumption."""
    import tensorflow as tf

    from evae_tf import training

    source = _find_data(ctx)
    config = train_config("evae")
    train_ds, _ = training._datasets(dataclasses.replace(config, data_dir=None), tf.distribute.get_strategy())
    batches = ctx.steps(600, 60)  # a full epoch is 600 batches
    cpu_per_batch: list[float] = []

    def one_pass() -> float:
        cpu0 = time.process_time()
        start = time.perf_counter()
        count = 0
        for batch in train_ds.take(batches):
            count += int(batch.shape[0])
        wall = time.perf_counter() - start
        cpu_per_batch.append((time.process_time() - cpu0) / batches)
        return wall / count  # seconds per image

    start = time.perf_counter()
    next(iter(train_ds))
    first_batch_s = time.perf_counter() - start
    stepper = library_stepper(ctx, "evae")
    steps = ctx.steps(10, 3)
    repeats = max(3, ctx.repeats // 2) if not ctx.quick else ctx.repeats
    times = interleave({"pipeline": one_pass, "train_step": lambda: stepper.run(steps) / BATCH}, repeats)
    return {
        "source": f"{source.kind}:{source.path}",
        "batches_per_pass": batches,
        "pipeline_images_per_s": inverted(summary(times["pipeline"])),
        "pipeline_cpu_ms_per_batch": scaled(summary(cpu_per_batch), 1000.0),
        "first_batch_s": first_batch_s,
        "train_images_per_s": inverted(summary(times["train_step"])),
        "pipeline_over_consumption": paired_ratio(times["train_step"], times["pipeline"]),
        "method": "training._datasets (shuffled, batched, resized, prefetched) iterated alone "
                  "for a pass of batches, interleaved with the float32 EVAE step",
    }


def rows_pipeline(r: dict[str, Any]) -> Rows:
    rows = Rows()
    rows.add("input pipeline", r["pipeline_images_per_s"], "img/s")
    rows.add("input pipeline CPU time / batch", r["pipeline_cpu_ms_per_batch"], "ms")
    rows.add("training consumption", r["train_images_per_s"], "img/s")
    rows.add("pipeline / consumption", r["pipeline_over_consumption"], "x")
    return rows


def fig_teardown(ctx: Context) -> dict[str, Any]:
    """An epoch boundary's hidden cost: destroying a used training iterator, tf.data autotune
    on (TF's default) vs off (the library's pipelines, see ``data.pipeline_options``)."""
    import gc

    import tensorflow as tf

    from evae_tf import training

    _find_data(ctx)
    config = train_config("evae")
    train_ds, _ = training._datasets(dataclasses.replace(config, data_dir=None), tf.distribute.get_strategy())
    batches = ctx.steps(300, 100)
    epochs = ctx.steps(4, 2)
    # A stand-in for the training step that, like it, keeps both cores busy for ~40 ms per
    # batch (a sleep instead does not reproduce the wait: the autotuning thread then idles).
    a = tf.random.stateless_normal([2048, 2048], seed=[1, 2])
    step = tf.function(lambda images, a: tf.reduce_sum(tf.matmul(a, a)[:1, :1]) + tf.reduce_sum(images))
    float(step(next(iter(train_ds)), a))

    def run_epochs(enabled: bool) -> tuple[list[float], list[float]]:
        options = tf.data.Options()
        options.autotune.enabled = enabled
        ds = train_ds.with_options(options)
        teardown, epoch_s = [], []
        for _ in range(epochs):
            start = time.perf_counter()
            iterator = iter(ds)
            for _ in range(batches):
                float(step(next(iterator), a))
            epoch_s.append(time.perf_counter() - start)
            start = time.perf_counter()
            del iterator  # what Keras' fit does at every epoch boundary
            gc.collect()
            teardown.append(time.perf_counter() - start)
        return teardown, epoch_s

    out: dict[str, Any] = {"batches_per_epoch": batches, "epochs": epochs,
                           "library_autotune": bool(train_ds.options().autotune.enabled)}
    for enabled in (False, True):
        teardown, epoch_s = run_epochs(enabled)
        name = "autotune_on" if enabled else "autotune_off"
        out[name] = {"teardown_s": summary(teardown), "teardown_s_all": teardown,
                     "teardown_mean_s": float(np.mean(teardown)),
                     "epoch_s": summary(epoch_s)}
    out["method"] = ("iterate the training pipeline for an epoch of `batches` with a 2048² matmul "
                     "per batch standing in for the step, then time deleting the iterator, as "
                     "Keras' fit does at every epoch boundary (for the validation data too); "
                     "consecutive epochs per setting, autotune off first; the wait is "
                     "intermittent (about every other epoch) and needs epochs of several "
                     "seconds: --quick's 100-batch epochs do not show it")
    return out


def rows_teardown(r: dict[str, Any]) -> Rows:
    rows = Rows()
    for variant in ("autotune_off", "autotune_on"):
        label = variant.replace("_", " ")
        rows.add(f"iterator teardown after an epoch, {label}", r[variant]["teardown_s"], "s")
        rows.add(f"iterator teardown, mean per epoch, {label}", r[variant]["teardown_mean_s"], "s")
    return rows


# --------------------------------------------------------------------------- 5. export and serving


def _post_sample_latencies(url: str, model: str, concurrency: int, requests_n: int,
                           num: int) -> dict[str, Any]:
    """Runs the load generator in a separate process (its own GIL) and returns its JSON."""
    cmd = [sys.executable, "-m", "bench.loadgen", "--url", url, "--model", model,
           "--concurrency", str(concurrency), "--requests", str(requests_n), "--num", str(num)]
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=600, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _export_for_serving(ctx: Context):
    """Exports an EVAE decoder; returns ``(model, export base, seconds)``."""
    from bench.load_test import untrained_export

    base = ctx.workdir / "serving" / "evae"
    if base.exists():
        shutil.rmtree(base)
    start = time.perf_counter()
    model = untrained_export(base / "1", LATENT_DIM)
    return model, base, time.perf_counter() - start


def _in_process_timers(model, sample_sig, num: int):
    """``(sample, decode)``: one call's seconds of the loaded ``sample`` signature (PNGs
    included) and of the Keras decoder, each on ``num`` images."""
    import tensorflow as tf

    z = tf.random.stateless_uniform([num, LATENT_DIM], seed=[5, 6], minval=-0.05, maxval=0.05)
    decoder_fn = tf.function(lambda z: model.decode(z))
    decoder_fn(z)
    seeds = iter(range(10**9))

    def sample() -> float:
        start = time.perf_counter()
        out = sample_sig(num_samples=tf.constant(num, tf.int32), seed=tf.constant(next(seeds), tf.int64))
        out["png_bytes"].numpy()
        return time.perf_counter() - start

    def decode() -> float:
        start = time.perf_counter()
        decoder_fn(z).numpy()
        return time.perf_counter() - start

    for _ in range(5):
        sample()
    return sample, decode


def _rest_c1_vs_in_process(ctx: Context, url: str, sample, decode, num: int) -> dict[str, list[float]]:
    """REST at concurrency 1 interleaved with the in-process calls (per-block medians)."""
    calls, requests_c1 = ctx.steps(30, 8), ctx.steps(60, 15)
    out: dict[str, list[float]] = {"c1_p50": [], "c1_all": [], "in_process": [], "decode": []}

    def rest_block() -> float:
        result = _post_sample_latencies(url, "evae", 1, requests_c1, num)
        out["c1_all"].extend(result["latencies_s"])
        out["c1_p50"].append(float(np.median(result["latencies_s"])))
        return out["c1_p50"][-1]

    def inproc_block() -> float:
        out["in_process"].append(float(np.median([sample() for _ in range(calls)])))
        out["decode"].append(float(np.median([decode() for _ in range(calls)])))
        return out["in_process"][-1]

    interleave({"in_process": inproc_block, "rest_c1": rest_block}, max(3, ctx.repeats // 2))
    return out


def _rest_c8(ctx: Context, url: str, num: int) -> tuple[list[dict[str, Any]], list[float]]:
    """Runs at concurrency 8 and the server's CPU seconds per request of each."""
    runs, server_cpu_s = [], []
    for _ in range(1 if ctx.quick else 2):
        cpu0 = time.process_time()  # the server runs in this process, the clients do not
        runs.append(_post_sample_latencies(url, "evae", 8, ctx.steps(400, 48), num))
        server_cpu_s.append((time.process_time() - cpu0) / runs[-1]["requests"])
    return runs, server_cpu_s


def _rest_breakdown(sample_sig, num: int, calls: int) -> dict[str, Any]:
    """Where the REST time goes: the server's JSON answer (TF Serving's format: every float of
    `images` and `z` as text, PNGs as base64) and the client's parsing of it."""
    import tensorflow as tf

    from serving import rest

    outputs = {k: v.numpy() for k, v in sample_sig(num_samples=tf.constant(num, tf.int32),
                                                   seed=tf.constant(1, tf.int64)).items()}
    body = rest.format_predict_response(outputs, rest.COLUMNAR)
    format_s = [_timed_py(lambda: rest.format_predict_response(outputs, rest.COLUMNAR)) for _ in range(calls)]
    parse_s = [_timed_py(lambda: json.loads(body)) for _ in range(calls)]
    return {
        "response_bytes": len(body.encode()),
        "server_json_format_ms": _ms(summary(format_s)),
        "client_json_parse_ms": _ms(summary(parse_s)),
        "note": "both run in Python under the GIL: at concurrency 8 they serialise",
    }


def _cpu_per_request(c8_runs: list[dict[str, Any]], server_cpu_s: list[float]) -> dict[str, Any]:
    client_cpu_s = [r["cpu_s"] / r["requests"] for r in c8_runs]
    cores = os.cpu_count() or 1
    cpu_per_request = float(np.median(server_cpu_s)) + float(np.median(client_cpu_s))
    return {
        "server_ms": _ms(summary(server_cpu_s)),
        "client_ms": _ms(summary(client_cpu_s)),
        "cores": cores,
        "throughput_bound_requests_per_s": cores / cpu_per_request,
        "p50_bound_ms": 8 * cpu_per_request / cores * 1000.0,
        "note": "CPU seconds per request of the server (TF, werkzeug, JSON) and of the load "
                "generator (requests, JSON parsing), which share this machine's cores: with "
                "8 requests in flight and every core busy, a request waits ~8 x CPU / cores",
    }


def _latency_block(runs: list[dict[str, Any]], num: int) -> dict[str, Any]:
    latencies = [x for run in runs for x in run["latencies_s"]]
    return {"latency_ms": {k: v * 1000 for k, v in percentiles(latencies).items()},
            "p50_ms_per_run": [float(np.median(r["latencies_s"])) * 1000 for r in runs],
            "p99_ms_per_run": [float(np.percentile(r["latencies_s"], 99)) * 1000 for r in runs],
            "requests_per_s": summary([r["requests"] / r["wall_s"] for r in runs]),
            "images_per_s": summary([num * r["requests"] / r["wall_s"] for r in runs]),
            "requests": len(latencies)}


def fig_serving(ctx: Context) -> dict[str, Any]:
    """Export, in-process decode, and REST ``sample`` latency / throughput of the local server."""
    import tensorflow as tf

    from serving.config import single_model_config
    from serving.server import ModelServer

    num = 16
    model, base, export_s = _export_for_serving(ctx)
    sample_sig = tf.saved_model.load(str(base / "1")).signatures["sample"]
    sample, decode = _in_process_timers(model, sample_sig, num)
    with ModelServer([single_model_config("evae", base)], port=0, poll_wait_seconds=0) as server:
        _post_sample_latencies(server.url, "evae", 1, 5, num)  # warm-up (and connection check)
        c1 = _rest_c1_vs_in_process(ctx, server.url, sample, decode, num)
        c8_runs, server_cpu_s = _rest_c8(ctx, server.url, num)
    c1_all = c1["c1_all"]
    return {
        "images_per_request": num, "export_s": export_s,
        "rest_breakdown": _rest_breakdown(sample_sig, num, ctx.steps(30, 8)),
        "in_process_decode_ms": _ms(summary(c1["decode"])),
        "in_process_sample_ms": _ms(summary(c1["in_process"])),
        "rest_c1": {"latency_ms": {k: v * 1000 for k, v in percentiles(c1_all).items()},
                    "p50_ms_per_block": _ms(summary(c1["c1_p50"])),
                    "requests_per_s": 1.0 / float(np.median(c1_all)), "requests": len(c1_all)},
        "rest_c8": _latency_block(c8_runs, num),
        "cpu_per_request_c8": _cpu_per_request(c8_runs, server_cpu_s),
        "rest_over_in_process": paired_ratio(c1["c1_p50"], c1["in_process"]),
        "method": "EVAE decoder exported with export.saved_model.export_decoder; in-process = the "
                  "loaded SavedModel's `sample` signature (16 images, PNG encoding included); "
                  "REST = serving.server.ModelServer in this process, load generated by "
                  "bench.loadgen in a separate process (requests, thread pool); overhead = "
                  "per-block REST p50 / in-process median, interleaved",
    }


def rows_serving(r: dict[str, Any]) -> Rows:
    rows = Rows()
    rows.add("export_decoder", r["export_s"], "s")
    rows.add("in-process decode (16, Keras decoder)", r["in_process_decode_ms"], "ms")
    rows.add("in-process `sample` signature (16 + PNG)", r["in_process_sample_ms"], "ms")
    for c in ("rest_c1", "rest_c8"):
        lat = r[c]["latency_ms"]
        rows.add(f"REST {c[-2:]} p50", lat["p50"], "ms")
        rows.add(f"REST {c[-2:]} p99", lat["p99"], "ms")
        rows.add(f"REST {c[-2:]} throughput", r[c]["requests_per_s"], "req/s")
    rows.add("REST c=8 images", r["rest_c8"]["images_per_s"], "img/s")
    rows.add("REST c=1 / in-process", r["rest_over_in_process"], "x")
    b = r.get("rest_breakdown")
    if b:
        rows.add("REST response size (16 images as JSON)", b["response_bytes"] / 1024, "KiB")
        rows.add("server: JSON answer formatting", b["server_json_format_ms"], "ms")
        rows.add("client: JSON answer parsing", b["client_json_parse_ms"], "ms")
    cpu = r.get("cpu_per_request_c8")
    if cpu:
        rows.add("c=8 server CPU per request", cpu["server_ms"], "ms")
        rows.add("c=8 load generator CPU per request", cpu["client_ms"], "ms")
        rows.add(f"c=8 p50 bound (8 x CPU / {cpu['cores']} cores)", cpu["p50_bound_ms"], "ms")
    return rows


# --------------------------------------------------------------------------- 6. full epoch


class EpochTimer:
    """A Keras callback recording the phases of every epoch of ``fit``."""

    def __new__(cls):
        import keras

        class _Timer(keras.callbacks.Callback):
            def __init__(self):
                super().__init__()
                self.epochs: list[dict[str, float]] = []
                self.batch_ends: list[float] = []
                self.train_begin = None

            def on_train_begin(self, logs=None):
                import gc

                self.train_begin = time.perf_counter()
                self.gc_spans: list[tuple[float, float]] = []
                self._gc_start = None

                def gc_callback(phase, info):
                    if phase == "start":
                        self._gc_start = time.perf_counter()
                    elif self._gc_start is not None:
                        self.gc_spans.append((self._gc_start, time.perf_counter()))

                gc.callbacks.append(gc_callback)
                self._gc_callback = gc_callback

            def on_train_end(self, logs=None):
                import gc

                if self._gc_callback in gc.callbacks:
                    gc.callbacks.remove(self._gc_callback)

            def gc_seconds(self, begin: float, end: float) -> float:
                """Python garbage collection time within [begin, end]."""
                return sum(max(0.0, min(b, end) - max(a, begin)) for a, b in self.gc_spans)

            def on_epoch_begin(self, epoch, logs=None):
                self.epochs.append({"begin": time.perf_counter()})
                self.batch_ends = []

            def on_train_batch_end(self, batch, logs=None):
                self.batch_ends.append(time.perf_counter())

            def on_test_begin(self, logs=None):
                if self.epochs:
                    self.epochs[-1]["test_begin"] = time.perf_counter()
                    self.epochs[-1]["train_batches"] = list(self.batch_ends)

            def on_test_end(self, logs=None):
                if self.epochs:
                    self.epochs[-1]["test_end"] = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                self.epochs[-1]["end"] = time.perf_counter()

        return _Timer()


class _CallbackTimes:
    """Times the library callbacks' epoch-end work by wrapping their classes' methods."""

    def __init__(self):
        import collections

        import keras

        from evae_tf import training

        self.classes = [training.EpochCheckpoint, training.Monitor, keras.callbacks.TensorBoard]
        self.times: dict[str, list[float]] = collections.defaultdict(list)
        self.saved: list[tuple[type, Any]] = []

    def __enter__(self):
        for cls in self.classes:
            original = cls.__dict__.get("on_epoch_end")
            if original is None:
                continue
            self.saved.append((cls, original))

            def timed(this, *args, _original=original, _name=cls.__name__, **kwargs):
                start = time.perf_counter()
                try:
                    return _original(this, *args, **kwargs)
                finally:
                    self.times[_name].append(time.perf_counter() - start)

            cls.on_epoch_end = timed
        return self

    def __exit__(self, *exc_info):
        for cls, original in self.saved:
            cls.on_epoch_end = original


def fig_epoch(ctx: Context) -> dict[str, Any]:
    """A real training run and the projected 50-epoch time, in a fresh process.

    ``python -m bench.epoch`` runs :func:`epoch_measurement` alone, as ``trainers.fit`` would
    run, so that nothing left by the other figures (models, servers, pipelines) shares the
    process.
    """
    _find_data(ctx)
    root = Path(__file__).resolve().parent.parent
    cmd = [sys.executable, "-m", "bench.epoch", "--repeats", str(ctx.repeats)] + (["--quick"] if ctx.quick else [])
    out = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=3600)
    if out.returncode != 0:
        raise RuntimeError(f"bench.epoch failed ({out.returncode}): {out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _epoch_phases(timer, callback_times) -> list[dict[str, Any]]:
    """The phases of every epoch ``timer`` recorded, with the callbacks' share of its end."""
    per_epoch = []
    for e in timer.epochs:
        batches = e["train_batches"]
        step_gaps = np.diff(batches) if len(batches) > 1 else np.array([])
        per_epoch.append({
            "epoch_s": e["end"] - e["begin"],
            "first_batch_s": (batches[0] - e["begin"]) if batches else None,
            "step_gaps_sum_s": float(step_gaps.sum()),
            "train_s": e["test_begin"] - e["begin"],
            "validation_s": e["test_end"] - e["test_begin"],
            "epoch_end_callbacks_s": e["end"] - e["test_end"],
            "python_gc_s": timer.gc_seconds(e["begin"], e["end"]),
            "python_gc_at_epoch_end_s": timer.gc_seconds(e["test_end"], e["end"]),
            "train_steps": len(batches),
            "fit_step_ms": summary(step_gaps * 1000.0) if step_gaps.size else None,
        })
    for i, e in enumerate(per_epoch):  # epoch-end time the library callbacks do not account for
        attributed = sum(v[i] for v in callback_times.times.values() if i < len(v))
        e["epoch_end_unattributed_s"] = e["epoch_end_callbacks_s"] - attributed
    return per_epoch


def _full_epoch_times(steady: list[dict[str, Any]], full: bool, epochs: int,
                      steps: int | None, val_steps: int | None) -> tuple[list[float], str]:
    """Seconds of a full epoch (600 steps + 100 validation batches), measured or projected."""
    n_train, n_val = 600, 100
    if full:
        return ([e["epoch_s"] for e in steady],
                f"measured: median of full epochs 2..{epochs} (600 steps + 100 validation batches)")
    times = [n_train * e["fit_step_ms"]["median"] / 1000.0
             + e["validation_s"] / max(1, val_steps) * n_val + e["epoch_end_callbacks_s"]
             for e in steady]
    return times, (f"projected: {steps} steps and {val_steps} validation batches of epoch 2 "
                   "scaled to 600 + 100")


def epoch_measurement(ctx: Context) -> dict[str, Any]:
    """A real ``evae_tf.training.train`` run on Fashion-MNIST, and the projected 50-epoch time."""
    import keras

    from evae_tf import training

    _find_data(ctx)
    full = not ctx.quick
    steps, val_steps, epochs = (None, None, 3) if full else (20, 5, 2)
    workdir = ctx.workdir / "epoch-run"
    if workdir.exists():
        shutil.rmtree(workdir)
    config = train_config("evae", epochs=epochs, steps_per_epoch=steps, validation_steps=val_steps,
                          workdir=str(workdir))
    timer = EpochTimer()
    start = time.perf_counter()
    with _CallbackTimes() as callback_times:
        result = training.train(config, verbose=0, callbacks=[timer])
    total_s = time.perf_counter() - start
    keras.mixed_precision.set_global_policy("float32")
    per_epoch = _epoch_phases(timer, callback_times)
    steady = per_epoch[1:]  # the first epoch also traces the step functions
    epoch_times, how = _full_epoch_times(steady, full, epochs, steps, val_steps)
    epoch_s = float(np.median(epoch_times))
    fit_steps = [e["fit_step_ms"]["median"] for e in steady if e["fit_step_ms"]]
    # The same model's bare compiled step right after the run: what fit adds per step
    # (callbacks, progress, the input pipeline's share of the CPU).
    stepper = Stepper(result.model)
    bare = summary([stepper.run(ctx.steps(10, 3)) * 1000.0 for _ in range(ctx.repeats)])
    startup_s = timer.train_begin - start
    first_extra_s = max(0.0, per_epoch[0]["epoch_s"] - epoch_s) if full else 0.0
    return {
        "status": result.status, "epochs": per_epoch, "startup_s": startup_s, "total_s": total_s,
        "full_epoch_s": epoch_s, "full_epoch_s_per_epoch": epoch_times, "full_epoch_how": how,
        "epoch_end_callback_ms": {name: _ms(summary(v)) for name, v in callback_times.times.items()},
        "bare_step_ms_after_run": bare,
        "fit_step_over_bare_step": (float(np.median(fit_steps)) / bare["median"]) if fit_steps else None,
        "projected_50_epochs_min": (startup_s + first_extra_s + 50 * epoch_s) / 60.0,
        "method": "evae_tf.training.train (fit with checkpoints, TensorBoard, Monitor, NaN guard), "
                  "float32 EVAE, d_z 64, batch 100; 50 epochs = startup + first-epoch extra "
                  "(tracing) + 50 x median steady epoch",
    }


def rows_epoch(r: dict[str, Any]) -> Rows:
    rows = Rows()
    for i, e in enumerate(r["epochs"]):
        rows.add(f"epoch {i + 1}: total", e["epoch_s"], "s")
        rows.add(f"epoch {i + 1}: training ({e['train_steps']} steps)", e["train_s"], "s")
        rows.add(f"epoch {i + 1}: validation", e["validation_s"], "s")
        rows.add(f"epoch {i + 1}: epoch-end callbacks", e["epoch_end_callbacks_s"], "s")
        if "epoch_end_unattributed_s" in e:
            rows.add(f"epoch {i + 1}: ... of which outside the library callbacks",
                     e["epoch_end_unattributed_s"], "s")
        if "python_gc_s" in e:
            rows.add(f"epoch {i + 1}: Python garbage collection (at epoch end)",
                     f"{num(e['python_gc_s'])} ({num(e['python_gc_at_epoch_end_s'])})", "s")
        if e["fit_step_ms"]:
            rows.add(f"epoch {i + 1}: step in fit", e["fit_step_ms"], "ms")
    for cb, t in r.get("epoch_end_callback_ms", {}).items():
        rows.add(f"epoch end: {cb}", t, "ms")
    rows.add("bare compiled step, same model, after the run", r["bare_step_ms_after_run"], "ms")
    rows.add("step in fit / bare step", r["fit_step_over_bare_step"], "x")
    rows.add("startup (data, model, callbacks)", r["startup_s"], "s")
    rows.add(f"full epoch ({r['full_epoch_how'].split(':')[0]})", summary(r["full_epoch_s_per_epoch"]), "s")
    rows.add("projected 50 epochs", r["projected_50_epochs_min"], "min")
    return rows


# --------------------------------------------------------------------------- 7. ablations


def fig_ablations(ctx: Context) -> dict[str, Any]:
    """The library's performance choices against Keras' own layers, interleaved in-process.

    * ``batchnorm``: ``networks.BatchNormalization`` (TF's fused kernel) vs Keras' layer;
    * ``first_deconv``: ``networks.Conv2DTranspose`` (a matmul for the 1×1 input) vs Keras';
    * ``both``: the library vs the network built from Keras' layers only.
    """
    import contextlib

    import keras

    from evae_tf import networks

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
    out: dict[str, Any] = {"step_ms": {k: _ms(summary(v)) for k, v in times.items()}}
    for label in variants:
        if label != "library":
            out[f"library_over_{label}"] = paired_ratio(times["library"], times[label])
    out["method"] = ("float32 EVAE step of the library's network vs the same network with Keras' "
                     "own layer(s) in place of networks.BatchNormalization / networks."
                     "Conv2DTranspose, interleaved; ratio = median of per-repeat ratios")
    return out


def rows_ablations(r: dict[str, Any]) -> Rows:
    rows = Rows()
    for label, t in r["step_ms"].items():
        rows.add(f"step, {label}", t, "ms")
    for key, ratio in r.items():
        if key.startswith("library_over_"):
            rows.add(key.replace("_", " "), ratio, "x")
    return rows


# --------------------------------------------------------------------------- 8. thread settings


def _probe(args: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, "-m", "bench.probe", *args], cwd=root, capture_output=True,
                         text=True, timeout=900, check=True, env={**os.environ, **(env or {})})
    return json.loads(out.stdout.strip().splitlines()[-1])


def fig_threads(ctx: Context) -> dict[str, Any]:
    """TensorFlow thread-pool settings, each in a fresh process (they must precede TF's start).

    Processes alternate (A B C, C B A, ...); ratios are per round against the default.
    """
    configs = {
        "default": [],
        "intra_op_1": ["--intra", "1"],
        "inter_op_1": ["--inter", "1"],
    }
    rounds = 1 if ctx.quick else max(3, ctx.repeats // 2)
    steps = ctx.steps(10, 2)
    per_round: dict[str, list[float]] = {k: [] for k in configs}
    seen: dict[str, Any] = {}
    for r in range(rounds):
        for name in (list(configs) if r % 2 == 0 else list(configs)[::-1]):
            result = _probe([*configs[name], "--steps", str(steps), "--repeats", "3" if ctx.quick else "5"])
            per_round[name].append(float(np.median(result["step_s"])))
            seen[name] = {"inter_op": result["inter_op"], "intra_op": result["intra_op"]}
    return {
        "configs": {name: {"flags": configs[name], "threads": seen[name],
                           "step_ms": _ms(summary(per_round[name])),
                           "over_default": paired_ratio(per_round[name], per_round["default"])}
                    for name in configs},
        "rounds": rounds,
        "method": "python -m bench.probe per configuration (float32 EVAE step, median of its "
                  "repeats), alternating processes; 0 = TensorFlow's choice (the core count)",
    }


def rows_threads(r: dict[str, Any]) -> Rows:
    rows = Rows()
    for cname, c in r["configs"].items():
        t = c["threads"]
        rows.add(f"{cname} (inter {t['inter_op']}, intra {t['intra_op']}) step", c["step_ms"], "ms")
        if cname != "default":
            rows.add(f"{cname} / default", c["over_default"], "x")
    return rows


# --------------------------------------------------------------------------- 9. op profile


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


def fig_profile(ctx: Context) -> dict[str, Any]:
    """Where a training step's time goes: TF profiler op times by category and by layer."""
    import re

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


def rows_profile(r: dict[str, Any]) -> Rows:
    rows = Rows()
    rows.add("wall time per step (under the profiler)", r["wall_ms_per_step"], "ms")
    rows.add("op time per step, summed over threads", r["op_ms_per_step"], "ms")
    for cat, c in r["categories"].items():
        rows.add(f"share of op time: {cat}", c["share"], "fraction")
    for layer, c in r["conv_layers"].items():
        rows.text(f"{layer}: share of conv time / of conv FLOPs", f"{c['time_share_of_convs']:.3f}", "",
                  f"FLOP share {c['flop_share_of_convs']:.3f}")
    return rows


@dataclasses.dataclass(frozen=True)
class Figure:
    """A figure: ``run(ctx)`` measures (a JSON-able dict), ``rows(result)`` formats it."""

    run: Callable[[Context], dict[str, Any]]
    rows: Callable[[dict[str, Any]], Rows]

    def __call__(self, ctx: Context) -> dict[str, Any]:
        return self.run(ctx)


FIGURES: dict[str, Figure] = {
    "train": Figure(fig_train, rows_train),
    "flops": Figure(fig_flops, rows_flops),
    "torch": Figure(fig_torch, rows_torch),
    "sampler": Figure(fig_sampler, rows_sampler),
    "pipeline": Figure(fig_pipeline, rows_pipeline),
    "teardown": Figure(fig_teardown, rows_teardown),
    "serving": Figure(fig_serving, rows_serving),
    "epoch": Figure(fig_epoch, rows_epoch),
    "ablations": Figure(fig_ablations, rows_ablations),
    "threads": Figure(fig_threads, rows_threads),
    "profile": Figure(fig_profile, rows_profile),
}
