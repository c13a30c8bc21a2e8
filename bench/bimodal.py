"""The bimodal training throughput (issue 12): fresh processes per threading setting.

    python -m bench.bimodal --processes 10 --candidates default inter_op_1 --loop step
    python -m bench.bimodal --child default --loop fit        # one process, one JSON line

Every process builds the float32 EVAE as ``evae_tf.training`` does and times consecutive
chunks of ``--chunk-steps`` training steps, either with the compiled ``train_function`` on a
fixed batch (``--loop step``) or with Keras' ``fit`` on an in-memory ``tf.data`` pipeline
(``--loop fit``). For every chunk it records, besides img/s, where the CPU went: the
process's CPU time by thread (``/proc/self/task/*/stat``, grouped by thread name), and the
whole machine's busy time (``/proc/stat``), so that a chunk slowed by other users' processes
(``others_cores``: busy cores not used by this process) is told from one slowed inside the
process. Candidates (``bench.threading_candidates``) alternate process by process.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def thread_cpu() -> dict[str, tuple[str, float]]:
    """``{tid: (thread name, CPU seconds)}`` of this process's threads."""
    out = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue  # the thread ended
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        out[task.name] = (name, (int(fields[11]) + int(fields[12])) / TICK)
    return out


def machine_busy() -> tuple[float, float]:
    """``(busy, total)`` CPU seconds of the whole machine so far (``/proc/stat``)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    total = sum(fields[:8])
    return (total - idle) / TICK, total / TICK


class ChunkRecorder:
    """Samples the process's threads and the machine around each chunk of steps."""

    def __init__(self):
        self.chunks: list[dict[str, Any]] = []
        self._start = None

    def begin(self):
        self._start = (time.perf_counter(), thread_cpu(), machine_busy())

    def end(self, images: int):
        wall0, threads0, (busy0, total0) = self._start
        wall = time.perf_counter() - wall0
        threads1 = thread_cpu()
        busy1, total1 = machine_busy()
        by_name: dict[str, float] = {}
        per_thread = []
        labelled = []
        main_tid = str(os.getpid())
        for tid, (name, cpu) in threads1.items():
            delta = cpu - threads0.get(tid, (name, 0.0))[1]
            by_name[name] = by_name.get(name, 0.0) + delta
            per_thread.append(delta)
            labelled.append(("main" if tid == main_tid else f"{name}:{tid}", delta))
        process_cores = sum(per_thread) / wall
        machine_cores = (busy1 - busy0) / wall
        self.chunks.append({
            "images_per_s": images / wall, "wall_s": wall,
            "process_cores": process_cores,
            "busiest_thread_cores": max(per_thread) / wall if per_thread else 0.0,
            # throughput per CPU-second the process got: the efficiency, whatever the load
            "images_per_cpu_s": images / sum(per_thread) if sum(per_thread) else None,
            # > 0.9: the process's work ran on one thread (serialised), whatever the load
            "busiest_thread_share": max(per_thread) / sum(per_thread) if sum(per_thread) else None,
            "machine_cores": machine_cores,
            "others_cores": max(0.0, machine_cores - process_cores),
            "threads_cores": {k: round(v / wall, 3) for k, v in
                              sorted(by_name.items(), key=lambda kv: -kv[1]) if v > 0},
            "top_threads_cores": [(k, round(v / wall, 3)) for k, v in
                                  sorted(labelled, key=lambda kv: -kv[1])[:5] if v > 0],
            "load_average": [round(x, 2) for x in os.getloadavg()],
        })


def _fit_chunks(model, chunks: int, chunk_steps: int, recorder: ChunkRecorder):
    import keras
    import tensorflow as tf

    from bench.harness import BATCH, synthetic_batch

    images = tf.data.Dataset.from_tensor_slices(
        synthetic_batch().repeat(chunk_steps, axis=0)).batch(BATCH).repeat()

    class Chunks(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch > 0:  # epoch 0 traces the step
                recorder.begin()

        def on_epoch_end(self, epoch, logs=None):
            if epoch > 0:
                recorder.end(chunk_steps * BATCH)

    model.fit(images, epochs=chunks + 1, steps_per_epoch=chunk_steps, verbose=0, callbacks=[Chunks()])


def child(candidate: str, loop: str, chunks: int, chunk_steps: int, kind: str) -> dict[str, Any]:
    """One fresh process's measurement (``candidate``'s variables already in the environment)."""
    import tensorflow as tf

    from bench import machine, threading_candidates
    from bench.harness import BATCH, Stepper, build_model

    threads = threading_candidates.configure_tensorflow(candidate, tf)
    start = time.perf_counter()
    model = build_model(kind)
    recorder = ChunkRecorder()
    if loop == "step":
        stepper = Stepper(model)
        for _ in range(chunks):
            recorder.begin()
            stepper.run(chunk_steps)
            recorder.end(chunk_steps * BATCH)
    else:
        _fit_chunks(model, chunks, chunk_steps, recorder)
    return {"candidate": candidate, "loop": loop, "kind": kind, "threads": threads,
            "machine": machine.describe(tf), "setup_and_run_s": time.perf_counter() - start,
            "chunks": recorder.chunks}


def _run_child(candidate: str, loop: str, args) -> dict[str, Any]:
    from bench import threading_candidates

    env = {**os.environ, **threading_candidates.environment(candidate)}
    env.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    cmd = [sys.executable, "-m", "bench.bimodal", "--child", candidate, "--loop", loop,
           "--chunks", str(args.chunks), "--chunk-steps", str(args.chunk_steps), "--kind", args.kind]
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=900)
    if out.returncode != 0:
        return {"candidate": candidate, "loop": loop, "error": out.stderr[-2000:]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def process_median(result: dict[str, Any]) -> float:
    import numpy as np

    return float(np.median([c["images_per_s"] for c in result["chunks"]]))


def _per_cpu_s(chunk: dict[str, Any]) -> float | None:
    if chunk.get("images_per_cpu_s") is not None:
        return chunk["images_per_cpu_s"]
    cores = chunk.get("process_cores")  # records written before the field existed
    return chunk["images_per_s"] / cores if cores else None


def _key(result: dict[str, Any]) -> str:
    return f"{result['candidate']}@{result.get('loop', 'step')}"


def summarise(results: list[dict[str, Any]], contended_cores: float = 0.25) -> dict[str, Any]:
    """Per candidate: the spread of the process medians and of all chunks, and how many chunks
    ran while other processes used more than ``contended_cores`` of the machine."""
    from bench.timing import summary

    out: dict[str, Any] = {}
    for name in dict.fromkeys(_key(r) for r in results):
        runs = [r for r in results if _key(r) == name and "chunks" in r]
        chunks = [c for r in runs for c in r["chunks"]]
        quiet = [c for c in chunks if c["others_cores"] <= contended_cores]
        out[name] = {
            "processes": len(runs),
            "errors": sum(1 for r in results if _key(r) == name and "error" in r),
            "process_median_images_per_s": summary([process_median(r) for r in runs]),
            "chunk_images_per_s": summary([c["images_per_s"] for c in chunks]),
            "chunks": len(chunks),
            "chunks_contended": len(chunks) - len(quiet),
            "quiet_chunk_images_per_s": summary([c["images_per_s"] for c in quiet]),
            "process_cores": summary([c["process_cores"] for c in chunks]),
            "images_per_cpu_s": summary([x for x in map(_per_cpu_s, chunks) if x is not None]),
            "busiest_thread_share": summary([c["busiest_thread_share"] for c in chunks
                                             if c["busiest_thread_share"] is not None]),
            "others_cores": summary([c["others_cores"] for c in chunks]),
        }
    return out


def markdown(summary_: dict[str, Any]) -> str:
    """The summary as a Markdown table (min / median / max)."""

    def mmm(s: dict[str, Any], fmt: str = "{:.0f}") -> str:
        return " / ".join(fmt.format(s[k]) for k in ("min", "median", "max")) if s.get("n") else "-"

    lines = ["| setting | processes | process medians img/s | chunks img/s | img per CPU-second | "
             "cores the process got | others' cores | busiest thread's share | chunks contended |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, s in summary_.items():
        lines.append(
            f"| `{name}` | {s['processes']} | {mmm(s['process_median_images_per_s'])} | "
            f"{mmm(s['chunk_images_per_s'])} | {mmm(s['images_per_cpu_s'])} | "
            f"{mmm(s['process_cores'], '{:.2f}')} | {mmm(s['others_cores'], '{:.2f}')} | "
            f"{mmm(s['busiest_thread_share'], '{:.2f}')} | {s['chunks_contended']} of {s['chunks']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.bimodal", description=__doc__.split("\n\n")[0])
    p.add_argument("--child", metavar="CANDIDATE", help=argparse.SUPPRESS)
    p.add_argument("--candidates", nargs="+", default=["default"])
    p.add_argument("--processes", type=int, default=10, help="fresh processes per candidate")
    p.add_argument("--loop", choices=["step", "fit"], default="step", help=argparse.SUPPRESS)
    p.add_argument("--loops", nargs="+", choices=["step", "fit"], default=["step"],
                   help="training loops, each with every candidate")
    p.add_argument("--chunks", type=int, default=8)
    p.add_argument("--chunk-steps", type=int, default=10)
    p.add_argument("--kind", default="evae")
    p.add_argument("--out", type=Path, default=None, help="JSON file for every process's record")
    p.add_argument("--report", type=Path, metavar="JSON", help="print the table of an --out file")
    args = p.parse_args(argv)
    if args.report:
        data = json.loads(args.report.read_text())
        for name, run in data.get("runs", {"": data}).items():  # one --out file, or several runs
            print(f"{name}:\n" if name else "", markdown(summarise(run["results"])), sep="")
        return 0
    if args.child:
        print(json.dumps(child(args.child, args.loop, args.chunks, args.chunk_steps, args.kind)))
        return 0
    from bench.threading_candidates import CANDIDATES

    unknown = [c for c in args.candidates if c not in CANDIDATES]
    if unknown:
        p.error(f"unknown candidates {unknown}; known: {', '.join(CANDIDATES)}")
    results = []
    settings = [(name, loop) for loop in args.loops for name in args.candidates]
    for i in range(args.processes):
        for name, loop in (settings if i % 2 == 0 else settings[::-1]):
            r = _run_child(name, loop, args)
            results.append(r)
            rate = f"{process_median(r):.0f} img/s" if "chunks" in r else "ERROR"
            print(f"[bimodal] {i + 1}/{args.processes} {name}@{loop}: {rate} "
                  f"load {os.getloadavg()[0]:.2f}", file=sys.stderr, flush=True)
            if args.out:
                args.out.write_text(json.dumps({"args": vars(args) | {"out": str(args.out)},
                                                "results": results}, indent=1))
    summary_ = summarise(results)
    if args.out:
        args.out.write_text(json.dumps({"args": vars(args) | {"out": str(args.out)},
                                        "results": results, "summary": summary_}, indent=1))
    print(json.dumps(summary_, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
