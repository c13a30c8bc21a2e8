"""Timing helpers: summaries (median and spread), interleaved repeats and paired ratios.

The machine is shared and its load drifts, so every comparison is measured in one
process by *interleaving* the candidates (A B, B A, A B, ...) and summarising the
per-repeat ratios; absolute figures are medians with their quartiles and range.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np


def summary(values: Sequence[float]) -> dict[str, Any]:
    """Median, quartiles, range and count of ``values`` (JSON-able)."""
    arr = np.asarray([float(v) for v in values], dtype=np.float64)
    if arr.size == 0:
        return {"median": None, "q1": None, "q3": None, "min": None, "max": None, "n": 0}
    q1, med, q3 = np.percentile(arr, [25, 50, 75])
    return {
        "median": float(med), "q1": float(q1), "q3": float(q3),
        "min": float(arr.min()), "max": float(arr.max()), "n": int(arr.size),
    }


def percentiles(values: Sequence[float], qs=(50, 90, 99)) -> dict[str, float]:
    arr = np.asarray(values, dtype=np.float64)
    return {f"p{q}": float(np.percentile(arr, q)) for q in qs}


def scaled(s: Mapping[str, Any], factor: float) -> dict[str, Any]:
    """A summary with its statistics multiplied by ``factor`` (> 0)."""
    out = dict(s)
    for key in ("median", "q1", "q3", "min", "max"):
        if out.get(key) is not None:
            out[key] = out[key] * factor
    return out


def inverted(s: Mapping[str, Any], numerator: float = 1.0) -> dict[str, Any]:
    """The summary of ``numerator / x`` (quartiles and range swap ends)."""
    out = dict(s)
    swap = {"median": "median", "q1": "q3", "q3": "q1", "min": "max", "max": "min"}
    for key, src in swap.items():
        value = s.get(src)
        out[key] = None if value in (None, 0) else numerator / value
    return out


def interleave(blocks: Mapping[str, Callable[[], float]], repeats: int,
               cpu: dict[str, list[float]] | None = None) -> dict[str, list[float]]:
    """Runs every block once per repeat, reversing the order every other repeat.

    Each block returns one measurement (e.g. seconds per step). Returns the
    measurements by block name, index ``i`` of every list from the same repeat.

    With ``cpu`` (a dict), also records the process's CPU seconds (all threads) per unit of
    each measurement: the block's measurement × its CPU time ÷ its wall time. Unlike wall
    time, CPU time hardly depends on how much of the machine other processes take, so the
    ratio of two blocks' CPU times still compares their efficiency on a loaded machine (it
    does not show parallel speed-up, and CPU burnt spin-waiting counts as work).
    """
    names = list(blocks)
    out: dict[str, list[float]] = {name: [] for name in names}
    if cpu is not None:
        cpu.update({name: [] for name in names})
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            wall0, cpu0 = time.perf_counter(), time.process_time()
            value = float(blocks[name]())
            wall, used = time.perf_counter() - wall0, time.process_time() - cpu0
            out[name].append(value)
            if cpu is not None:
                cpu[name].append(value * used / wall if wall > 0 else float("nan"))
    return out


def paired_ratio(numerators: Sequence[float], denominators: Sequence[float]) -> dict[str, Any]:
    """Summary of the per-repeat ratios ``numerators[i] / denominators[i]``."""
    return summary([a / b for a, b in zip(numerators, denominators, strict=True)])


def per_call(fn: Callable[[], Any], calls: int, sync: Callable[[Any], Any] | None = None) -> float:
    """Seconds per call of ``fn`` over ``calls`` calls (``sync`` applied to the last result)."""
    start = time.perf_counter()
    result = None
    for _ in range(calls):
        result = fn()
    if sync is not None:
        sync(result)
    return (time.perf_counter() - start) / calls


def load_average() -> list[float] | None:
    try:
        import os

        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None
