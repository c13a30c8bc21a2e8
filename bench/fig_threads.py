"""``threads``: TensorFlow thread-pool settings, each in a fresh process (``bench.probe``),
as step-time ratios against the default."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import numpy as np

from bench.harness import ROOT, Context, ms
from bench.table import Rows
from bench.timing import paired_ratio, summary


def _probe(args: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-m", "bench.probe", *args], cwd=ROOT, capture_output=True,
                         text=True, timeout=900, check=True, env={**os.environ, **(env or {})})
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(ctx: Context) -> dict[str, Any]:
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
                           "step_ms": ms(summary(per_round[name])),
                           "over_default": paired_ratio(per_round[name], per_round["default"])}
                    for name in configs},
        "rounds": rounds,
        "method": "python -m bench.probe per configuration (float32 EVAE step, median of its "
                  "repeats), alternating processes; 0 = TensorFlow's choice (the core count)",
    }


def rows(r: dict[str, Any]) -> Rows:
    rows = Rows()
    for cname, c in r["configs"].items():
        t = c["threads"]
        rows.add(f"{cname} (inter {t['inter_op']}, intra {t['intra_op']}) step", c["step_ms"], "ms")
        if cname != "default":
            rows.add(f"{cname} / default", c["over_default"], "x")
    return rows
