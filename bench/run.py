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
* ``torch``    the same network, loss and optimizer in PyTorch (``bench.torch_ref``, optional
               extra ``bench``), interleaved with the TF step: TF / PyTorch throughput, EVAE ÷
               VAE in both, each one's fraction of the matmul peak; skipped without torch;
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

Every report names the machine (``bench.machine``: CPU, cores, ISA flags, oneDNN state, TF
version, load average) and the load average around each figure. oneDNN is on unless
``TF_ENABLE_ONEDNN_OPTS`` was set by the user.

Each figure is a median over repeats with its spread (quartiles and range); comparisons are
ratios of measurements interleaved in one run. The table goes to stdout, the full results
(JSON, written atomically) to ``--out``. The exit status is 1 when a figure failed with an
error (a missed target is not an error).
"""

from __future__ import annotations

# oneDNN is on unless the user chose: the bench package's __init__ calls
# evae_tf.runtime.configure() before anything imports TensorFlow.
import argparse
import datetime
import os
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.table import num
from evae_tf.cli import positive

DEFAULT_OUT = Path(__file__).resolve().parent / "results.json"


# --------------------------------------------------------------------------- targets

# (figure, label, getter, operator, limit, unit) -- the targets for a 2-core machine.
TARGETS: list[tuple[str, str, Callable[[dict], float], str, float, str]] = [
    ("train", "EVAE step / VAE step (library default)",
     lambda r: r["default"]["evae_over_vae"]["median"], "<=", 1.05, "x"),
    # against PyTorch's better thread setting in each repeat: on a loaded machine its default
    # OpenMP threads can be many times slower, which would flatter TF
    ("torch", "TF / PyTorch throughput, EVAE, worst repeat",
     lambda r: r["tf_over_torch_best_threads"]["min"], ">=", 1.25, "x"),
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


def loaded(result: dict[str, Any] | None, cores: int | None = None) -> bool:
    """Whether other work shared the machine during a figure: a 1-minute load average above
    the core count before or after it (the figure itself keeps at most the cores busy)."""
    load = (result or {}).get("load_average") or {}
    cores = cores or os.cpu_count() or 1
    return any(v and v[0] > cores for v in (load.get("before"), load.get("after")))


def evaluate_targets(figures: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Each target's value and verdict; ``loaded``: measured while other work used the machine,
    so the verdict (of a ratio, and more so of an absolute time) is not one for this CPU."""
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
            row["loaded"] = loaded(result)
        out.append(row)
    return out


# --------------------------------------------------------------------------- table


def figure_rows(name: str, r: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(metric, median, unit, spread) rows of one figure: the figure formats its own result."""
    from bench.figures import FIGURES

    return list(FIGURES[name].rows(r))


def _machine_lines(results: dict[str, Any]) -> list[str]:
    from bench.machine import one_line

    record = results.get("meta", {}).get("machine")
    return [f"Measured on: {one_line(record)}", ""] if record else []


def _load_row(name: str, r: dict[str, Any]) -> tuple[str, ...] | None:
    load = r.get("load_average")
    if not load or not load.get("before") or not load.get("after"):
        return None
    return (name, "load average (1 min) before / after", f"{load['before'][0]:.2f} / {load['after'][0]:.2f}",
            "", "the machine's other work: compare ratios, not absolute times, under load")


def _body(results: dict[str, Any]) -> list[tuple[str, ...]]:
    body: list[tuple[str, ...]] = []
    for name, r in results["figures"].items():
        if "skipped" in r:
            body.append((name, "skipped", "", "", r["skipped"]))
            continue
        if "error" in r:
            body.append((name, "ERROR", "", "", r["error"].strip().splitlines()[-1]))
            continue
        body.extend((name, *row) for row in figure_rows(name, r))
        load = _load_row(name, r)
        if load:
            body.append(load)
    return body


def format_table(results: dict[str, Any]) -> str:
    header = ("figure", "metric", "median", "unit", "spread")
    body = _body(results)
    widths = [max(len(str(row[i])) for row in [header, *body]) for i in range(4)]

    def fmt(row):
        return "  ".join(str(c).ljust(w) for c, w in zip(row[:4], widths, strict=True)) + "  " + row[4]

    lines = _machine_lines(results)
    lines.append(fmt(header))
    lines.append("-" * (sum(widths) + 8 + 40))
    lines.extend(fmt(row) for row in body)
    lines.append("")
    lines.append("Targets (this machine):")
    for t in results["targets"]:
        verdict = {True: "MET", False: "MISSED", None: "n/a"}[t["met"]]
        caveat = " [measured under load: not a verdict for this CPU]" if t.get("loaded") else ""
        lines.append(f"  {verdict:7s} {t['target']}: {num(t['value'])} {t['unit']} (target {t['limit']}){caveat}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- running


def _meta(args, figures: Sequence[str]) -> dict[str, Any]:
    import keras
    import tensorflow as tf

    from bench import machine

    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).resolve().parent, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "quick": args.quick, "repeats": args.repeats, "figures": list(figures),
        "machine": machine.describe(tf), "keras": keras.__version__, "git_commit": commit,
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
    p.add_argument("--repeats", type=positive(int), default=None,
                   help="repeats per measurement (default 7, --quick 3)")
    return p


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = build_parser().parse_args(argv)
    if args.repeats is None:
        args.repeats = 3 if args.quick else 7

    from bench import figures as figures_lib
    from bench.timing import load_average
    from evae_tf.files import write_json_atomic

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
