"""``train``: training throughput of EVAE and VAE for float32 / mixed precision, with and
without XLA, and EVAE step ÷ VAE step."""

from __future__ import annotations

from typing import Any

from bench.harness import BATCH, LATENT_DIM, Context, Stepper, build_model, library_stepper, ms
from bench.table import Rows
from bench.timing import interleave, inverted, paired_ratio, summary


def measure(ctx: Context) -> dict[str, Any]:
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
                "step_ms": ms(step), "images_per_s": inverted(step, BATCH),
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


def rows(r: dict[str, Any]) -> Rows:
    rows = Rows()
    for c in r["configs"]:
        rows.add(f"{c['name']} step", c["step_ms"], "ms")
        rows.add(f"{c['name']} throughput", c["images_per_s"], "img/s")
    for key, s in r["ratios"].items():
        rows.add(key, s, "x")
    return rows
