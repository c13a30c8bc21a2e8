"""``epoch``: a real training run's epoch time, its phases, and the projected 50-epoch time.

The measurement (:func:`epoch_measurement`) runs in a process of its own
(``python -m bench.epoch``)."""

from __future__ import annotations

import collections
import gc
import json
import shutil
import subprocess
import sys
import time
from typing import Any

import keras
import numpy as np

from bench.harness import ROOT, Context, Stepper, find_data, ms, train_config
from bench.table import Rows, num
from bench.timing import summary


class EpochTimer(keras.callbacks.Callback):
    """A Keras callback recording the phases of every epoch of ``fit`` and the Python
    garbage collections during training."""

    def __init__(self):
        super().__init__()
        self.epochs: list[dict[str, Any]] = []
        self.batch_ends: list[float] = []
        self.train_begin: float | None = None
        self.gc_spans: list[tuple[float, float]] = []
        self._gc_start: float | None = None

    def _on_gc(self, phase, info):
        if phase == "start":
            self._gc_start = time.perf_counter()
        elif self._gc_start is not None:
            self.gc_spans.append((self._gc_start, time.perf_counter()))

    def on_train_begin(self, logs=None):
        self.train_begin = time.perf_counter()
        self.gc_spans, self._gc_start = [], None
        gc.callbacks.append(self._on_gc)

    def on_train_end(self, logs=None):
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)

    def gc_seconds(self, begin: float, end: float) -> float:
        """Python garbage collection time within [begin, end]."""
        return sum(max(0.0, min(b, end) - max(a, begin)) for a, b in self.gc_spans)

    def on_epoch_begin(self, epoch, logs=None):
        self.epochs.append({"begin": time.perf_counter()})
        self.batch_ends = []

    def on_train_batch_end(self, batch, logs=None):
        self.batch_ends.append(time.perf_counter())

    def on_test_begin(self, logs=None):
        if self.epochs:
            self.epochs[-1]["test_begin"] = time.perf_counter()
            self.epochs[-1]["train_batches"] = list(self.batch_ends)

    def on_test_end(self, logs=None):
        if self.epochs:
            self.epochs[-1]["test_end"] = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.epochs[-1]["end"] = time.perf_counter()


class _CallbackTimes:
    """Times the library callbacks' epoch-end work by wrapping their classes' methods."""

    def __init__(self):
        from evae_tf import training

        self.classes = [training.EpochCheckpoint, training.Monitor, keras.callbacks.TensorBoard]
        self.times: dict[str, list[float]] = collections.defaultdict(list)
        self.saved: list[tuple[type, Any]] = []

    def __enter__(self):
        for cls in self.classes:
            original = cls.__dict__.get("on_epoch_end")
            if original is None:
                continue
            self.saved.append((cls, original))

            def timed(this, *args, _original=original, _name=cls.__name__, **kwargs):
                start = time.perf_counter()
                try:
                    return _original(this, *args, **kwargs)
                finally:
                    self.times[_name].append(time.perf_counter() - start)

            cls.on_epoch_end = timed
        return self

    def __exit__(self, *exc_info):
        for cls, original in self.saved:
            cls.on_epoch_end = original


def measure(ctx: Context) -> dict[str, Any]:
    """A real training run and the projected 50-epoch time, in a fresh process.

    ``python -m bench.epoch`` runs :func:`epoch_measurement` alone, as ``trainers.fit`` would
    run, so that nothing left by the other figures (models, servers, pipelines) shares the
    process.
    """
    find_data(ctx)
    cmd = [sys.executable, "-m", "bench.epoch", "--repeats", str(ctx.repeats)] + (["--quick"] if ctx.quick else [])
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=3600)
    if out.returncode != 0:
        raise RuntimeError(f"bench.epoch failed ({out.returncode}): {out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _epoch_phases(timer, callback_times) -> list[dict[str, Any]]:
    """The phases of every epoch ``timer`` recorded, with the callbacks' share of its end."""
    per_epoch = []
    for e in timer.epochs:
        batches = e["train_batches"]
        step_gaps = np.diff(batches) if len(batches) > 1 else np.array([])
        per_epoch.append({
            "epoch_s": e["end"] - e["begin"],
            "first_batch_s": (batches[0] - e["begin"]) if batches else None,
            "step_gaps_sum_s": float(step_gaps.sum()),
            "train_s": e["test_begin"] - e["begin"],
            "validation_s": e["test_end"] - e["test_begin"],
            "epoch_end_callbacks_s": e["end"] - e["test_end"],
            "python_gc_s": timer.gc_seconds(e["begin"], e["end"]),
            "python_gc_at_epoch_end_s": timer.gc_seconds(e["test_end"], e["end"]),
            "train_steps": len(batches),
            "fit_step_ms": summary(step_gaps * 1000.0) if step_gaps.size else None,
        })
    for i, e in enumerate(per_epoch):  # epoch-end time the library callbacks do not account for
        attributed = sum(v[i] for v in callback_times.times.values() if i < len(v))
        e["epoch_end_unattributed_s"] = e["epoch_end_callbacks_s"] - attributed
    return per_epoch


def _full_epoch_times(steady: list[dict[str, Any]], full: bool, epochs: int,
                      steps: int | None, val_steps: int | None) -> tuple[list[float], str]:
    """Seconds of a full epoch (600 steps + 100 validation batches), measured or projected."""
    n_train, n_val = 600, 100
    if full:
        return ([e["epoch_s"] for e in steady],
                f"measured: median of full epochs 2..{epochs} (600 steps + 100 validation batches)")
    times = [n_train * e["fit_step_ms"]["median"] / 1000.0
             + e["validation_s"] / max(1, val_steps) * n_val + e["epoch_end_callbacks_s"]
             for e in steady]
    return times, (f"projected: {steps} steps and {val_steps} validation batches of epoch 2 "
                   "scaled to 600 + 100")


def epoch_measurement(ctx: Context) -> dict[str, Any]:
    """A real ``evae_tf.training.train`` run on Fashion-MNIST, and the projected 50-epoch time."""
    from evae_tf import training

    find_data(ctx)
    full = not ctx.quick
    steps, val_steps, epochs = (None, None, 3) if full else (20, 5, 2)
    workdir = ctx.workdir / "epoch-run"
    if workdir.exists():
        shutil.rmtree(workdir)
    config = train_config("evae", epochs=epochs, steps_per_epoch=steps, validation_steps=val_steps,
                          workdir=str(workdir))
    timer = EpochTimer()
    start = time.perf_counter()
    with _CallbackTimes() as callback_times:
        result = training.train(config, verbose=0, callbacks=[timer])
    total_s = time.perf_counter() - start
    keras.mixed_precision.set_global_policy("float32")
    per_epoch = _epoch_phases(timer, callback_times)
    steady = per_epoch[1:]  # the first epoch also traces the step functions
    epoch_times, how = _full_epoch_times(steady, full, epochs, steps, val_steps)
    epoch_s = float(np.median(epoch_times))
    fit_steps = [e["fit_step_ms"]["median"] for e in steady if e["fit_step_ms"]]
    # The same model's bare compiled step right after the run: what fit adds per step
    # (callbacks, progress, the input pipeline's share of the CPU).
    stepper = Stepper(result.model)
    bare = summary([stepper.run(ctx.steps(10, 3)) * 1000.0 for _ in range(ctx.repeats)])
    startup_s = timer.train_begin - start
    first_extra_s = max(0.0, per_epoch[0]["epoch_s"] - epoch_s) if full else 0.0
    return {
        "status": result.status, "epochs": per_epoch, "startup_s": startup_s, "total_s": total_s,
        "full_epoch_s": epoch_s, "full_epoch_s_per_epoch": epoch_times, "full_epoch_how": how,
        "epoch_end_callback_ms": {name: ms(summary(v)) for name, v in callback_times.times.items()},
        "bare_step_ms_after_run": bare,
        "fit_step_over_bare_step": (float(np.median(fit_steps)) / bare["median"]) if fit_steps else None,
        "projected_50_epochs_min": (startup_s + first_extra_s + 50 * epoch_s) / 60.0,
        "method": "evae_tf.training.train (fit with checkpoints, TensorBoard, Monitor, NaN guard), "
                  "float32 EVAE, d_z 64, batch 100; 50 epochs = startup + first-epoch extra "
                  "(tracing) + 50 x median steady epoch",
    }


def rows(r: dict[str, Any]) -> Rows:
    rows = Rows()
    for i, e in enumerate(r["epochs"]):
        rows.add(f"epoch {i + 1}: total", e["epoch_s"], "s")
        rows.add(f"epoch {i + 1}: training ({e['train_steps']} steps)", e["train_s"], "s")
        rows.add(f"epoch {i + 1}: validation", e["validation_s"], "s")
        rows.add(f"epoch {i + 1}: epoch-end callbacks", e["epoch_end_callbacks_s"], "s")
        if "epoch_end_unattributed_s" in e:
            rows.add(f"epoch {i + 1}: ... of which outside the library callbacks",
                     e["epoch_end_unattributed_s"], "s")
        if "python_gc_s" in e:
            rows.add(f"epoch {i + 1}: Python garbage collection (at epoch end)",
                     f"{num(e['python_gc_s'])} ({num(e['python_gc_at_epoch_end_s'])})", "s")
        if e["fit_step_ms"]:
            rows.add(f"epoch {i + 1}: step in fit", e["fit_step_ms"], "ms")
    for cb, t in r.get("epoch_end_callback_ms", {}).items():
        rows.add(f"epoch end: {cb}", t, "ms")
    rows.add("bare compiled step, same model, after the run", r["bare_step_ms_after_run"], "ms")
    rows.add("step in fit / bare step", r["fit_step_over_bare_step"], "x")
    rows.add("startup (data, model, callbacks)", r["startup_s"], "s")
    rows.add(f"full epoch ({r['full_epoch_how'].split(':')[0]})", summary(r["full_epoch_s_per_epoch"]), "s")
    rows.add("projected 50 epochs", r["projected_50_epochs_min"], "min")
    return rows
