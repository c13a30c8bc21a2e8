"""REST load generator for ``bench.fig_serving`` (run as a separate process).

    python -m bench.loadgen --url http://127.0.0.1:PORT --model evae --concurrency 8 \\
        --requests 400 --num 16

POSTs ``:predict`` requests for the ``sample`` signature (``num`` images each, a new seed
per request) from ``concurrency`` threads, each with its own ``requests.Session``, and
prints one JSON line: per-request latencies in seconds, the wall and CPU time (this
process: sending requests and parsing answers) and the failures.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import sys
import threading
import time

import requests


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.loadgen")
    p.add_argument("--url", required=True)
    p.add_argument("--model", default="evae")
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--requests", type=int, default=50)
    p.add_argument("--num", type=int, default=16)
    args = p.parse_args(argv)

    url = f"{args.url.rstrip('/')}/v1/models/{args.model}:predict"
    local = threading.local()

    def session() -> requests.Session:
        if not hasattr(local, "session"):
            local.session = requests.Session()
        return local.session

    def one(seed: int) -> float:
        body = json.dumps({"signature_name": "sample",
                           "inputs": {"num_samples": args.num, "seed": seed}})
        start = time.perf_counter()
        response = session().post(url, data=body, headers={"Content-Type": "application/json"},
                                  timeout=60)
        response.raise_for_status()
        answer = response.json()
        elapsed = time.perf_counter() - start
        if len(answer["outputs"]["png_bytes"]) != args.num:
            raise RuntimeError("wrong number of images")
        return elapsed

    latencies: list[float] = []
    failures: list[str] = []
    cpu_start = time.process_time()
    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(args.concurrency) as pool:
        futures = [pool.submit(one, seed) for seed in range(args.requests)]
        for future in futures:
            try:
                latencies.append(future.result())
            except Exception as e:  # noqa: BLE001 - reported
                failures.append(f"{type(e).__name__}: {e}")
    wall = time.perf_counter() - start
    cpu = time.process_time() - cpu_start
    print(json.dumps({"latencies_s": latencies, "wall_s": wall, "cpu_s": cpu, "requests": len(latencies),
                      "failures": failures[:5], "failed": len(failures)}))
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
