"""Load test of the local model server: concurrent clients asking for samples.

    python -m bench.load_test [--protocol rest|grpc] [--duration 60] [--concurrency 8]
                              [--num 16] [--model-dir DIR] [--warmup 10] [--out FILE]

Without ``--model-dir`` a freshly built (untrained) EVAE decoder for 32x32x1 images,
``latent_dim`` 64, is exported with ``export.saved_model.export_decoder`` into a
temporary base path; the weights do not change the cost of serving it. The server
(``python -m serving.server``) runs in its own process on 127.0.0.1, so its resident
memory can be measured (psutil). ``--concurrency`` client threads, each with its own
HTTP session (REST: ``requests``, answers parsed by ``serving.client.loads``, as the client does)
or gRPC channel (``serving.client``), send the ``sample`` signature request
(``num_samples=--num``, a new seed each time) back to back: first for ``--warmup``
seconds (not counted), then for
``--duration`` seconds.

Reports the number of requests, errors (any non-200 answer or failed request),
throughput, latency percentiles (p50/p90/p99/max, client side), and the server's RSS
after the warm-up, at the end, its peak, and the growth in percent; writes them as JSON
to ``--out`` (default ``runs/load_test.json``). Exits 1 if there was any error or the
RSS grew by 10 % or more, 0 otherwise.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

from bench.machine import describe, load_average, one_line
from evae_tf.cli import positive
from serving.client import loads

ROOT = Path(__file__).resolve().parents[1]
MAX_GROWTH_PCT = 10.0
MODEL_NAME = "evae"


def untrained_export(version_dir: str | os.PathLike, latent_dim: int = 64, seed: int = 0):
    """Exports an untrained EVAE decoder (32x32x1) with a 10-component ex-post mixture.

    The weights and the mixture's parameters do not change the cost of serving it; the
    mixture has the default number of components, so ``sample`` costs what a real one does.
    Returns the built model.
    """
    import numpy as np

    from evae_tf import models
    from evae_tf.samplers import GaussianMixtureSampler
    from export.saved_model import export_decoder

    model = models.build("evae", (32, 32, 1), latent_dim, seed=seed)
    rng = np.random.default_rng(seed)
    components = 10
    sampler = GaussianMixtureSampler(np.full(components, 1 / components),
                                     rng.normal(size=(components, latent_dim)),
                                     np.broadcast_to(np.eye(latent_dim), (components, latent_dim, latent_dim)))
    export_decoder(model, version_dir, sampler=sampler)
    return model


def export_fresh_decoder(base_path: Path) -> Path:
    """``untrained_export`` as version 1 under ``base_path``, by a child process.

    A client process that has run TensorFlow keeps its thread pools, and the load test
    then measured a third of the server's throughput (23 vs 69-75 requests/s on 2 cores,
    the same model either way).
    """
    code = "import sys; from bench.load_test import untrained_export; untrained_export(sys.argv[1])"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    subprocess.run([sys.executable, "-c", code, str(base_path / "1")], cwd=ROOT, env=env,
                   check=True, stdout=subprocess.DEVNULL)
    return base_path / "1"


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """``python -m serving.server`` in a subprocess, its log in a file."""

    def __init__(self, model_dir: Path, log_path: Path, threads: int | None,
                 grpc: bool = False, extra_args: list[str] = (), root: Path = ROOT):
        self.grpc_port = _free_port() if grpc else 0
        cmd = [sys.executable, "-m", "serving.server", f"--model_name={MODEL_NAME}",
               f"--model_base_path={model_dir}", "--rest_api_port=0",
               f"--port={self.grpc_port}", "--file_system_poll_wait_seconds=0"]
        if threads:
            cmd.append(f"--rest_api_num_threads={threads}")
        cmd.extend(extra_args)
        self.log_path = log_path
        self._log = open(log_path, "w")  # noqa: SIM115 (closed in stop())
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
        self.process = subprocess.Popen(cmd, cwd=root, stdout=self._log, stderr=self._log,
                                        env=env)
        self.url = self._wait_for_port()

    def _wait_for_port(self, timeout: float = 180) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log_path.read_text(errors="replace")
            match = re.search(r"Exporting HTTP/REST API at:([0-9.]+):(\d+)", text)
            if match:
                if self.grpc_port:
                    return f"grpc://{match.group(1)}:{self.grpc_port}"
                return f"http://{match.group(1)}:{match.group(2)}"
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited ({self.process.returncode}):\n{text[-2000:]}")
            time.sleep(0.1)
        raise RuntimeError(f"the server did not start within {timeout:.0f}s")

    def rss_bytes(self) -> int:
        import psutil

        return psutil.Process(self.process.pid).memory_info().rss

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


class Clients:
    """``concurrency`` threads sending sample requests until told to stop."""

    def __init__(self, url: str, concurrency: int, num: int, timeout: float):
        self.url = url if url.startswith("grpc://") else f"{url}/v1/models/{MODEL_NAME}:predict"
        self.num, self.timeout = num, timeout
        self.counting = False
        self.latencies: list[float] = []
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True)
                         for i in range(concurrency)]

    def start(self) -> None:
        if self.url.startswith("grpc://"):  # the protos' imports (TensorFlow), not timed
            import tensorflow  # noqa: F401
            from tensorflow_serving.apis import predict_pb2  # noqa: F401
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(self.timeout + 10)

    def _record(self, counting: bool, start: float, error: str | None) -> None:
        elapsed = time.perf_counter() - start
        if counting and self.counting:  # ignore requests straddling warm-up's end
            with self._lock:
                if error:
                    self.errors.append(error)
                else:
                    self.latencies.append(elapsed)

    def _run_grpc(self, index: int) -> None:
        from serving.client import ServingClient, ServingError

        seed = index * 1_000_000
        with ServingClient(self.url, MODEL_NAME, timeout=self.timeout) as client:
            while not self._stop.is_set():
                seed += 1
                counting, start, error = self.counting, time.perf_counter(), None
                try:
                    if len(client.sample_outputs(self.num, seed)["png_bytes"]) != self.num:
                        error = "wrong number of samples in the answer"
                except ServingError as e:
                    error = str(e)
                self._record(counting, start, error)

    def _run(self, index: int) -> None:
        if self.url.startswith("grpc://"):
            return self._run_grpc(index)
        seed = index * 1_000_000
        with requests.Session() as session:
            while not self._stop.is_set():
                seed += 1
                body = {"signature_name": "sample", "inputs": {"num_samples": self.num, "seed": seed}}
                counting = self.counting
                start = time.perf_counter()
                error = None
                try:
                    response = session.post(self.url, json=body, timeout=self.timeout)
                    if response.status_code != 200:
                        error = f"HTTP {response.status_code}: {response.text[:200]}"
                    elif len(loads(response.content)["outputs"]["png_bytes"]) != self.num:
                        error = "wrong number of samples in the answer"
                except (requests.RequestException, ValueError, KeyError, TypeError) as e:
                    error = f"{type(e).__name__}: {e}"
                self._record(counting, start, error)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 100])."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def run(args) -> dict:
    work = Path(tempfile.mkdtemp(prefix="evae-load-test-"))
    try:
        if args.model_dir:
            model_dir, exported = Path(args.model_dir).resolve(), False
        else:
            print("Exporting a fresh EVAE decoder (32x32x1, latent_dim 64) ...", flush=True)
            model_dir, exported = work / MODEL_NAME, True
            export_fresh_decoder(model_dir)
        server = Server(model_dir, work / "server.log", args.server_threads,
                        grpc=args.protocol == "grpc", extra_args=args.server_arg,
                        root=Path(args.server_root).resolve())
        try:
            return measure(args, server, exported)
        finally:
            server.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)


def measure(args, server: Server, exported: bool) -> dict:
    machine = describe()  # the server turns oneDNN on unless TF_ENABLE_ONEDNN_OPTS is set
    clients = Clients(server.url, args.concurrency, args.num, args.timeout)
    print(f"Warming up for {args.warmup:g}s with {args.concurrency} clients ...", flush=True)
    clients.start()
    time.sleep(args.warmup)
    rss_start = server.rss_bytes()
    samples = [rss_start]
    clients.counting = True
    begin = time.perf_counter()
    print(f"Measuring for {args.duration:g}s ...", flush=True)
    while (elapsed := time.perf_counter() - begin) < args.duration:
        time.sleep(min(1.0, args.duration - elapsed))
        samples.append(server.rss_bytes())
    clients.counting = False
    wall = time.perf_counter() - begin
    rss_end = server.rss_bytes()
    clients.stop()
    latencies = [1000 * s for s in clients.latencies]
    count = len(latencies) + len(clients.errors)
    mib = 1 << 20
    machine["load_average_after"] = load_average()
    return {
        "machine": machine,
        "config": {
            "protocol": args.protocol,
            "duration_s": float(args.duration),
            "warmup_s": float(args.warmup),
            "concurrency": args.concurrency,
            "num_samples": args.num,
            "model": "fresh EVAE 32x32x1 d=64" if exported else str(args.model_dir),
            "server_threads": args.server_threads,
            "server_args": args.server_arg,
            "server_root": None if Path(args.server_root).resolve() == ROOT else args.server_root,
            "cpus": os.cpu_count(),
        },
        "requests": count,
        "errors": len(clients.errors),
        "error_examples": sorted(set(clients.errors))[:5],
        "throughput_rps": count / wall,
        "images_per_s": len(latencies) * args.num / wall,
        "latency_ms": {
            "p50": percentile(latencies, 50),
            "p90": percentile(latencies, 90),
            "p99": percentile(latencies, 99),
            "max": max(latencies, default=math.nan),
            "mean": sum(latencies) / len(latencies) if latencies else math.nan,
        },
        "server_rss_mib": {
            "start": rss_start / mib,
            "end": rss_end / mib,
            "peak": max(samples + [rss_end]) / mib,
            "growth_pct": 100 * (rss_end - rss_start) / rss_start,
        },
    }


def report(figures: dict) -> str:
    lat, rss = figures["latency_ms"], figures["server_rss_mib"]
    config = figures["config"]
    return "\n".join([
        f"load test ({config.get('protocol', 'rest')}): {config['concurrency']} clients x {config['duration_s']:g}s, "
        f"num_samples={config['num_samples']}, model: {config['model']}"
        + (f", server flags: {' '.join(config['server_args'])}" if config.get("server_args") else ""),
        *([f"  machine    : {one_line(figures['machine'])} -> "
           f"{'/'.join(map(str, figures['machine'].get('load_average_after') or []))}"]
          if "machine" in figures else []),
        f"  requests   : {figures['requests']} ({figures['throughput_rps']:.1f}/s, "
        f"{figures['images_per_s']:.0f} images/s)",
        f"  errors     : {figures['errors']}",
        f"  latency ms : p50 {lat['p50']:.1f}  p90 {lat['p90']:.1f}  p99 {lat['p99']:.1f}  "
        f"max {lat['max']:.1f}",
        f"  server RSS : {rss['start']:.0f} MiB after warm-up -> {rss['end']:.0f} MiB at the end "
        f"(peak {rss['peak']:.0f} MiB, growth {rss['growth_pct']:+.1f} %)",
    ])


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.load_test", description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--protocol", choices=["rest", "grpc"], default="rest",
                   help="REST (JSON) or gRPC (TensorProto) clients")
    p.add_argument("--duration", type=positive(float), default=60.0, help="measured seconds")
    p.add_argument("--warmup", type=positive(float), default=10.0,
                   help="seconds of load before measuring (RSS 'start' is taken after it)")
    p.add_argument("--concurrency", type=positive(int), default=8, help="client threads")
    p.add_argument("--num", type=positive(int), default=16, help="num_samples per request")
    p.add_argument("--model-dir", default=None,
                   help="a TF Serving base path with a sample signature (default: export a fresh "
                        "EVAE decoder)")
    p.add_argument("--server-threads", type=positive(int), default=None,
                   help="--rest_api_num_threads of the server (default: its own)")
    p.add_argument("--server-arg", action="append", default=[], metavar="FLAG",
                   help="another serving.server flag, e.g. "
                        "--server-arg=--tensorflow_intra_op_parallelism=1 (repeatable)")
    p.add_argument("--server-root", default=str(ROOT),
                   help="checkout whose serving.server is run (e.g. an older commit's worktree)")
    p.add_argument("--timeout", type=positive(float), default=60.0, help="seconds per request")
    p.add_argument("--out", default=str(ROOT / "runs" / "load_test.json"), help="JSON results")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.model_dir and not Path(args.model_dir).is_dir():
        parser.error(f"--model-dir {args.model_dir!r} is not a directory")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        figures = run(args)
    except (RuntimeError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(figures, indent=2) + "\n")
    print(report(figures))
    print(f"  written to : {out}")
    failed = figures["errors"] > 0 or figures["server_rss_mib"]["growth_pct"] >= MAX_GROWTH_PCT
    if figures["errors"]:
        print(f"FAIL: {figures['errors']} failed requests, e.g. {figures['error_examples'][0]}",
              file=sys.stderr)
    if figures["server_rss_mib"]["growth_pct"] >= MAX_GROWTH_PCT:
        print(f"FAIL: server memory grew by {figures['server_rss_mib']['growth_pct']:.1f} % "
              f"(limit {MAX_GROWTH_PCT:g} %)", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
