"""``torch``: the TF training step against the same network, loss and optimizer in PyTorch
(``bench.torch_ref``), interleaved; skipped without torch."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from bench import flops as flops_lib
from bench.harness import BATCH, Context, Skip, library_stepper, matmul_block
from bench.table import Rows
from bench.timing import interleave, inverted, paired_ratio, summary


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
        "matmul": matmul_block(2048, 2 if ctx.quick else 5),
    }


def measure(ctx: Context) -> dict[str, Any]:
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


def rows(r: dict[str, Any]) -> Rows:
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
