"""Run the evae-tf benchmark suite: ``python -m bench.run`` (``make bench``).

    python -m bench.run                         # every figure, writes bench/results.json
    python -m bench.run --quick                 # a smoke run: a few seconds per figure
    python -m bench.run --only train sampler    # some figures
    python -m bench.run --repeats 9 --out /tmp/results.json

Figures (``--only`` names):

* ``train``    training throughput of EVAE and VAE (batch 100, the paper's Fashion-MNIST
               network, d_z 64) for float32 / mixed_float16 / mixed_bfloat16, with and without
               XLA; EVAE step ÷ VAE step;
* ``flops``    FLOPs of a training step (analytic, cross-checked with TF's op statistics),
               achieved GFLOP/s and its fraction of a matmul peak measured in the same run,
               and the same step's matrix products alone as plain GEMMs (the GEMM bound);
* ``sampler``  median-of-three vs inverse-cdf sampling, and the sampler's share of a step;
* ``pipeline`` the input pipeline's rate (real Fashion-MNIST files) vs the step's consumption;
* ``teardown`` what an epoch boundary costs: deleting a used training iterator with tf.data
               autotuning on (TF's default) vs off (the library's pipelines);
* ``serving``  export, in-process decode, REST ``sample`` latency (p50/p99) and throughput
               for 16 images at concurrency 1 and 8 against the local server;
* ``epoch``    a real training run's epoch time and the projected 50-epoch time;
* ``ablations`` the library's BatchNorm / first transposed conv vs Keras' layers (ratios);
* ``threads``  TensorFlow thread-pool settings, each in a fresh process (step ratios);
* ``profile``  where a step's time goes (TF profiler): op time by category and conv layer.

Each figure is a median over repeats with its spread (quartiles and range); comparisons are
ratios of measurements interleaved in one run. The table goes to stdout, the full results
(JSON, written atomically) to ``--out``. The exit status is 1 when a figure failed with an
error (a missed target is not an error).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

DEFAULT_OUT = Path(__file__).resolve().parent / "results.json"


# --------------------------------------------------------------------------- targets

# (figure, label, getter, operator, limit, unit) -- the targets for a 2-core machine.
TARGETS: list[tuple[str, str, Callable[[dict], float], str, float, str]] = [
    ("train", "EVAE step / VAE step (library default)",
     lambda r: r["default"]["evae_over_vae"]["median"], "<=", 1.05, "x"),
    ("sampler", "sampling share of a training step",
     lambda r: r["share_of_train_step"]["median"], "<=", 0.02, "fraction"),
    ("pipeline", "input pipeline rate / step consumption",
     lambda r: r["pipeline_over_consumption"]["median"], ">=", 20.0, "x"),
    ("flops", "training GFLOP/s / matmul peak",
     lambda r: r["fraction_of_matmul_peak"]["median"], ">=", 0.5, "fraction"),
    ("serving", "REST sample(16) c=8 p50",
     lambda r: r["rest_c8"]["latency_ms"]["p50"], "<=", 20.0, "ms"),
    ("serving", "REST sample(16) c=8 p99",
     lambda r: r["rest_c8"]["latency_ms"]["p99"], "<=", 50.0, "ms"),
    ("serving", "served (REST c=1) / in-process",
     lambda r: r["rest_over_in_process"]["median"], "<=", 1.5, "x"),
    ("epoch", "50-epoch Fashion-MNIST run",
     lambda r: r["projected_50_epochs_min"], "<=", 25.0, "min"),
]


def evaluate_targets(figures: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for figure, label, getter, op, limit, unit in TARGETS:
        result = figures.get(figure)
        row: dict[str, Any] = {"figure": figure, "target": label, "limit": f"{op} {limit:g}",
                               "unit": unit}
        if result is None or "error" in result or "skipped" in result:
            row.update(value=None, met=None)
        else:
            try:
                value = float(getter(result))
            except (KeyError, TypeError):
                value = None
            row["value"] = value
            row["met"] = None if value is None else (value <= limit if op == "<=" else value >= limit)
        out.append(row)
    return out


# --------------------------------------------------------------------------- table


def _num(x: float | None, digits: int = 3) -> str:
    if x is None:
        return "-"
    if x == 0:
        return "0"
    magnitude = abs(x)
    if magnitude >= 1000:
        return f"{x:,.0f}"
    if magnitude >= 100:
        return f"{x:.1f}"
    return f"{x:.{digits}g}"


def _spread(s: dict[str, Any] | None) -> str:
    if not isinstance(s, dict) or s.get("median") is None:
        return ""
    return f"IQR {_num(s['q1'])}–{_num(s['q3'])}, range {_num(s['min'])}–{_num(s['max'])}, n={s['n']}"


def summary_of(values):
    from bench.timing import summary

    return summary(values)


def figure_rows(name: str, r: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(metric, median, unit, spread) rows of one figure for the table."""
    rows: list[tuple[str, str, str, str]] = []

    def add(metric, s, unit=""):
        if isinstance(s, dict):
            rows.append((metric, _num(s.get("median")), unit, _spread(s)))
        else:
            rows.append((metric, _num(s) if isinstance(s, (int, float)) else str(s), unit, ""))

    if name == "train":
        for c in r["configs"]:
            add(f"{c['name']} step", c["step_ms"], "ms")
            add(f"{c['name']} throughput", c["images_per_s"], "img/s")
        for key, s in r["ratios"].items():
            add(key, s, "x")
    elif name == "flops":
        a = r["analytic"]
        add("forward FLOPs / image (analytic)", a["forward_per_image"] / 1e6, "MFLOP")
        add("train step FLOPs (analytic, exact)", a["train_step_exact"] / 1e9, "GFLOP")
        add("train step FLOPs (3 x forward)", a["train_step_rule_of_three"] / 1e9, "GFLOP")
        if "train_step" in r["profiler"]:
            add("train step FLOPs (TF op statistics)", r["profiler"]["train_step"]["total"] / 1e9, "GFLOP")
        add("train step", r["train_step_ms"], "ms")
        add("achieved training", r["train_gflops"], "GFLOP/s")
        add(f"matmul {r['matmul_n']}^2 float32 peak", r["matmul_gflops"], "GFLOP/s")
        add("achieved / matmul peak", r["fraction_of_matmul_peak"], "fraction")
        if "gemm_bound" in r:
            g = r["gemm_bound"]
            add(f"the step's {g['products']} matrix products alone", g["step_ms"], "ms")
            add("products alone / matmul peak (GEMM bound)", g["fraction_of_matmul_peak"], "fraction")
            add("train step / products alone", g["train_step_over_gemms"], "x")
    elif name == "sampler":
        for m in r["methods"].values():
            add(f"median-of-three {m['shape']}", m["median_of_three_ns_per_draw"], "ns/draw")
            add(f"inverse-cdf {m['shape']}", m["inverse_cdf_ns_per_draw"], "ns/draw")
            add(f"inverse-cdf / median-of-three {m['shape']}", m["inverse_over_median"], "x")
        add("EVAE posterior sample + grad [100, 64]", r["posterior_sample_us"], "us")
        add("train step", r["train_step_ms"], "ms")
        add("sampling share of a train step", r["share_of_train_step"], "fraction")
    elif name == "pipeline":
        add("input pipeline", r["pipeline_images_per_s"], "img/s")
        add("input pipeline CPU time / batch", r["pipeline_cpu_ms_per_batch"], "ms")
        add("training consumption", r["train_images_per_s"], "img/s")
        add("pipeline / consumption", r["pipeline_over_consumption"], "x")
    elif name == "teardown":
        for variant in ("autotune_off", "autotune_on"):
            label = variant.replace("_", " ")
            add(f"iterator teardown after an epoch, {label}", r[variant]["teardown_s"], "s")
            add(f"iterator teardown, mean per epoch, {label}", r[variant]["teardown_mean_s"], "s")
    elif name == "serving":
        add("export_decoder", r["export_s"], "s")
        add("in-process decode (16, Keras decoder)", r["in_process_decode_ms"], "ms")
        add("in-process `sample` signature (16 + PNG)", r["in_process_sample_ms"], "ms")
        for c in ("rest_c1", "rest_c8"):
            lat = r[c]["latency_ms"]
            add(f"REST {c[-2:]} p50", lat["p50"], "ms")
            add(f"REST {c[-2:]} p99", lat["p99"], "ms")
            add(f"REST {c[-2:]} throughput", r[c]["requests_per_s"], "req/s")
        add("REST c=8 images", r["rest_c8"]["images_per_s"], "img/s")
        add("REST c=1 / in-process", r["rest_over_in_process"], "x")
        b = r.get("rest_breakdown")
        if b:
            add("REST response size (16 images as JSON)", b["response_bytes"] / 1024, "KiB")
            add("server: JSON answer formatting", b["server_json_format_ms"], "ms")
            add("client: JSON answer parsing", b["client_json_parse_ms"], "ms")
        cpu = r.get("cpu_per_request_c8")
        if cpu:
            add("c=8 server CPU per request", cpu["server_ms"], "ms")
            add("c=8 load generator CPU per request", cpu["client_ms"], "ms")
            add(f"c=8 p50 bound (8 x CPU / {cpu['cores']} cores)", cpu["p50_bound_ms"], "ms")
    elif name == "ablations":
        for label, t in r["step_ms"].items():
            add(f"step, {label}", t, "ms")
        for key, ratio in r.items():
            if key.startswith("library_over_"):
                add(key.replace("_", " "), ratio, "x")
    elif name == "threads":
        for cname, c in r["configs"].items():
            t = c["threads"]
            add(f"{cname} (inter {t['inter_op']}, intra {t['intra_op']}) step", c["step_ms"], "ms")
            if cname != "default":
                add(f"{cname} / default", c["over_default"], "x")
    elif name == "profile":
        add("wall time per step (under the profiler)", r["wall_ms_per_step"], "ms")
        add("op time per step, summed over threads", r["op_ms_per_step"], "ms")
        for cat, c in r["categories"].items():
            add(f"share of op time: {cat}", c["share"], "fraction")
        for layer, c in r["conv_layers"].items():
            rows.append((f"{layer}: share of conv time / of conv FLOPs",
                         f"{c['time_share_of_convs']:.3f}", "", f"FLOP share {c['flop_share_of_convs']:.3f}"))
    elif name == "epoch":
        for i, e in enumerate(r["epochs"]):
            add(f"epoch {i + 1}: total", e["epoch_s"], "s")
            add(f"epoch {i + 1}: training ({e['train_steps']} steps)", e["train_s"], "s")
            add(f"epoch {i + 1}: validation", e["validation_s"], "s")
            add(f"epoch {i + 1}: epoch-end callbacks", e["epoch_end_callbacks_s"], "s")
            if "epoch_end_unattributed_s" in e:
                add(f"epoch {i + 1}: ... of which outside the library callbacks",
                    e["epoch_end_unattributed_s"], "s")
            if "python_gc_s" in e:
                add(f"epoch {i + 1}: Python garbage collection (at epoch end)",
                    f"{_num(e['python_gc_s'])} ({_num(e['python_gc_at_epoch_end_s'])})", "s")
            if e["fit_step_ms"]:
                add(f"epoch {i + 1}: step in fit", e["fit_step_ms"], "ms")
        for cb, t in r.get("epoch_end_callback_ms", {}).items():
            add(f"epoch end: {cb}", t, "ms")
        add("bare compiled step, same model, after the run", r["bare_step_ms_after_run"], "ms")
        add("step in fit / bare step", r["fit_step_over_bare_step"], "x")
        add("startup (data, model, callbacks)", r["startup_s"], "s")
        add(f"full epoch ({r['full_epoch_how'].split(':')[0]})", summary_of(r["full_epoch_s_per_epoch"]), "s")
        add("projected 50 epochs", r["projected_50_epochs_min"], "min")
    return rows


def format_table(results: dict[str, Any]) -> str:
    lines = []
    header = ("figure", "metric", "median", "unit", "spread")
    body: list[tuple[str, ...]] = []
    for name, r in results["figures"].items():
        if "skipped" in r:
            body.append((name, "skipped", "", "", r["skipped"]))
            continue
        if "error" in r:
            body.append((name, "ERROR", "", "", r["error"].strip().splitlines()[-1]))
            continue
        for metric, median, unit, spread in figure_rows(name, r):
            body.append((name, metric, median, unit, spread))
    widths = [max(len(str(row[i])) for row in [header, *body]) for i in range(4)]

    def fmt(row):
        return "  ".join(str(c).ljust(w) for c, w in zip(row[:4], widths, strict=True)) + "  " + row[4]

    lines.append(fmt(header))
    lines.append("-" * (sum(widths) + 8 + 40))
    lines.extend(fmt(row) for row in body)
    lines.append("")
    lines.append("Targets (this machine):")
    for t in results["targets"]:
        verdict = {True: "MET", False: "MISSED", None: "n/a"}[t["met"]]
        lines.append(f"  {verdict:7s} {t['target']}: {_num(t['value'])} {t['unit']} (target {t['limit']})")
    return "\n".join(lines)


# --------------------------------------------------------------------------- running


def _meta(args, figures: Sequence[str]) -> dict[str, Any]:
    import keras
    import tensorflow as tf

    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).resolve().parent, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = None
    cpu = None
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), None)
    except OSError:
        pass
    return {
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "quick": args.quick, "repeats": args.repeats, "figures": list(figures),
        "python": platform.python_version(), "tensorflow": tf.__version__, "keras": keras.__version__,
        "cpu": cpu, "cpu_count": os.cpu_count(), "platform": platform.platform(),
        "git_commit": commit,
        "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default (on)"),
        "threads": {"intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
                    "inter_op": tf.config.threading.get_inter_op_parallelism_threads()},
    }


def build_parser() -> argparse.ArgumentParser:
    from bench.figures import FIGURES

    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke run: a few seconds per figure")
    p.add_argument("--only", nargs="+", choices=list(FIGURES), metavar="NAME",
                   help=f"run only these figures ({', '.join(FIGURES)})")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results file (atomic write)")
    p.add_argument("--repeats", type=int, default=None,
                   help="repeats per measurement (default 7, --quick 3)")
    return p


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.repeats is None:
        args.repeats = 3 if args.quick else 7
    if args.repeats < 1:
        parser.error("--repeats must be positive")

    from bench import figures as figures_lib
    from bench.timing import load_average
    from evae_tf.config import write_json_atomic

    names = args.only or list(figures_lib.FIGURES)
    names = [n for n in figures_lib.FIGURES if n in names]  # canonical order

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    ctx = figures_lib.Context(quick=args.quick, repeats=args.repeats, log=log)
    results: dict[str, Any] = {"meta": _meta(args, names), "figures": {}, "targets": []}
    failed = False
    try:
        for name in names:
            log(f"[bench] {name} ...")
            before = load_average()
            start = time.perf_counter()
            try:
                result = figures_lib.FIGURES[name](ctx)
            except figures_lib.Skip as e:
                result = {"skipped": str(e)}
            except Exception:  # noqa: BLE001 - one failing figure must not lose the others
                result = {"error": traceback.format_exc()}
                failed = True
            result["seconds"] = time.perf_counter() - start
            result["load_average"] = {"before": before, "after": load_average()}
            results["figures"][name] = result
            log(f"[bench] {name} done in {result['seconds']:.1f} s")
    finally:
        import shutil

        shutil.rmtree(ctx.workdir, ignore_errors=True)
    results["targets"] = evaluate_targets(results["figures"])
    results["meta"]["finished"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(str(args.out), results)
    print(format_table(results))
    print(f"\nResults written to {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
