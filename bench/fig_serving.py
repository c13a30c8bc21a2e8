"""``serving``: export, in-process decode, and REST ``sample`` latency (p50/p99) and
throughput for 16 images at concurrency 1 and 8 against the local server."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from typing import Any

import numpy as np

from bench.harness import LATENT_DIM, ROOT, Context, ms, timed_py
from bench.table import Rows
from bench.timing import interleave, paired_ratio, percentiles, summary


def _post_sample_latencies(url: str, model: str, concurrency: int, requests_n: int,
                           num: int) -> dict[str, Any]:
    """Runs the load generator in a separate process (its own GIL) and returns its JSON."""
    cmd = [sys.executable, "-m", "bench.loadgen", "--url", url, "--model", model,
           "--concurrency", str(concurrency), "--requests", str(requests_n), "--num", str(num)]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, check=True)
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
    format_s = [timed_py(lambda: rest.format_predict_response(outputs, rest.COLUMNAR)) for _ in range(calls)]
    parse_s = [timed_py(lambda: json.loads(body)) for _ in range(calls)]
    return {
        "response_bytes": len(body.encode()),
        "server_json_format_ms": ms(summary(format_s)),
        "client_json_parse_ms": ms(summary(parse_s)),
        "note": "both run in Python under the GIL: at concurrency 8 they serialise",
    }


def _cpu_per_request(c8_runs: list[dict[str, Any]], server_cpu_s: list[float]) -> dict[str, Any]:
    client_cpu_s = [r["cpu_s"] / r["requests"] for r in c8_runs]
    cores = os.cpu_count() or 1
    cpu_per_request = float(np.median(server_cpu_s)) + float(np.median(client_cpu_s))
    return {
        "server_ms": ms(summary(server_cpu_s)),
        "client_ms": ms(summary(client_cpu_s)),
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


def measure(ctx: Context) -> dict[str, Any]:
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
        "in_process_decode_ms": ms(summary(c1["decode"])),
        "in_process_sample_ms": ms(summary(c1["in_process"])),
        "rest_c1": {"latency_ms": {k: v * 1000 for k, v in percentiles(c1_all).items()},
                    "p50_ms_per_block": ms(summary(c1["c1_p50"])),
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


def rows(r: dict[str, Any]) -> Rows:
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
