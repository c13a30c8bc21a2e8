"""Reliability of ``python -m trainers.fit`` under faults (issue #7).

Real processes are killed (``kill -9``, SIGTERM) at chosen and at random points,
checkpoint files are corrupted or truncated, the disk fills up (a real tmpfs where
mounting works), and a checkpoint write fails half-way. After each fault the run
directory must hold a consistent, loadable checkpoint, and running the same command
again must resume after the last finished epoch, losing at most one epoch.

Faults at exact points of the checkpoint protocol come from a small harness run as
``python -c``: it wraps ``os.replace`` / ``Path.unlink`` (the renames and removals of
``EpochCheckpoint``) and the per-batch callback, and pauses at the chosen step until
the test kills it. Everything else is the real ``trainers.fit`` command line.

Also here: a table of bad flags for every command line (``trainers.fit``,
``export.saved_model``, ``serving.server``, ``serving.client``): exit status 2 and a
one-line message naming the flag and the value, never a traceback.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import keras
import numpy as np
import pytest
from idx_fixtures import write_mnist_dir

from evae_tf import cli, models
from evae_tf.config import TrainConfig
from evae_tf.runs import rundir
from trainers import fit

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--latent-dim", "4", "--batch-size", "16"]
STEPS_PER_EPOCH = 48 // 16  # write_mnist_dir(n_train=48) with --batch-size 16

# Runs trainers.fit with optional fault injection (see the module docstring).
# EVAE_FAULT = "batch:K" | "replace:K" | "unlink:K": pause before the K-th such step
# (counted from the start of this process), after writing a description to
# EVAE_FAULT_MARKER, until the test kills the process or creates EVAE_FAULT_MARKER +
# ".release"; replace/unlink steps count only inside EVAE_FAULT_DIR.
HARNESS = r"""
import os, pathlib, sys, time
fault = os.environ.get("EVAE_FAULT")
if fault:
    kind, k = fault.split(":")
    k = int(k)
    counts = {"batch": 0, "replace": 0, "unlink": 0}
    target = os.path.abspath(os.environ["EVAE_FAULT_DIR"])

    def step(name, what):
        counts[name] += 1
        if name == kind and counts[name] == k:
            marker = os.environ["EVAE_FAULT_MARKER"]
            with open(marker, "w") as f:
                f.write(what)
            for _ in range(6000):  # short sleeps: a signal handler runs between them
                if os.path.exists(marker + ".release"):
                    break
                time.sleep(0.1)

    real_replace, real_unlink = os.replace, pathlib.Path.unlink

    def replace(src, dst, *args, **kwargs):
        if os.path.dirname(os.path.abspath(dst)) == target:
            step("replace", "replace " + os.path.basename(dst))
        return real_replace(src, dst, *args, **kwargs)

    def unlink(self, missing_ok=False):
        if str(self.absolute().parent) == target and not self.name.startswith("."):
            step("unlink", "unlink " + self.name)
        return real_unlink(self, missing_ok=missing_ok)

    os.replace, pathlib.Path.unlink = replace, unlink

    from evae_tf import training
    batch_end = training.NonFiniteGuard.on_train_batch_end

    def on_train_batch_end(self, batch, logs=None):
        step("batch", f"batch {batch}")
        return batch_end(self, batch, logs)

    training.NonFiniteGuard.on_train_batch_end = on_train_batch_end
from trainers import fit
sys.exit(fit.main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("fashion-mnist")
    write_mnist_dir(directory, n_train=48, n_test=32)
    return str(directory)


@pytest.fixture(scope="module")
def probe_model():
    """A model of the tests' configuration, to check that checkpoint files load."""
    model = models.build("evae", (32, 32, 1), 4, seed=0)
    model.compile(optimizer=keras.optimizers.Adam())
    model.optimizer.build(model.trainable_variables)
    return model


def fit_args(data_dir, workdir, epochs, *extra) -> list[str]:
    return ["--dataset", "fashion_mnist", "--data-dir", data_dir, "--workdir", str(workdir),
            "--epochs", str(epochs), *TINY, *extra]


def spawn(data_dir, workdir, epochs, fault: str | None = None, verbose: str = "0"):
    """``trainers.fit`` in a new process (through the fault harness)."""
    workdir = Path(workdir)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    env.pop("EVAE_FAULT", None)
    marker = workdir.parent / f"fault-{uuid.uuid4().hex}"
    if fault:
        env.update(EVAE_FAULT=fault, EVAE_FAULT_DIR=str(workdir / "checkpoints"),
                   EVAE_FAULT_MARKER=str(marker))
    cmd = [sys.executable, "-c", HARNESS, *fit_args(data_dir, workdir, epochs, "--verbose", verbose)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    proc.marker = marker
    return proc


def wait_until(proc, predicate, what: str, timeout: float = 180):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"process exited ({proc.returncode}) before {what}:\n{out}\n{err}")
        time.sleep(0.02)
    proc.kill()
    raise AssertionError(f"timed out waiting for {what}")


def wait_for_fault(proc) -> str:
    # The harness creates the marker, then writes the description: wait for both.
    wait_until(proc, lambda: proc.marker.exists() and proc.marker.stat().st_size > 0,
               "the fault point")
    return proc.marker.read_text()


def kill_9(proc) -> tuple[str, str]:
    proc.send_signal(signal.SIGKILL)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    return out, err


def read_state(workdir) -> dict | None:
    path = Path(workdir) / "checkpoints" / "state.json"
    return json.loads(path.read_text()) if path.exists() else None


def state_epoch(workdir) -> int:
    state = read_state(workdir)
    return int(state["epoch"]) if state else 0


def assert_consistent(workdir, model) -> int:
    """state.json (if any) names a checkpoint that loads, and so does last.weights.h5.

    Returns the epoch a rerun resumes after (0 without state.json).
    """
    checkpoints = Path(workdir) / "checkpoints"
    state = read_state(workdir)
    if state is None:
        return 0
    assert set(state) >= {"epoch", "weights"}, state
    named = checkpoints / state["weights"]
    assert named.is_file(), f"state.json names {named.name}, which is missing"
    assert_loads(model, named)
    # Every visible weights file is complete (partial writes only ever exist as .tmp-*).
    for path in sorted(checkpoints.glob("*.weights.h5")):
        if path != named and not path.name.startswith("."):
            assert_loads(model, path)
    return int(state["epoch"])


def assert_loads(model, path: Path) -> None:
    """``path`` loads into ``model``, with finite weights."""
    model.load_weights(path)
    assert all(np.isfinite(w.numpy()).all() for w in model.weights), path.name


def finish(data_dir, workdir, epochs) -> tuple[str, str]:
    """Run the same command to completion; it must succeed."""
    proc = spawn(data_dir, workdir, epochs)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    return out, err


# --------------------------------------------------------------------------------------
# kill -9
# --------------------------------------------------------------------------------------


def test_kill_9_at_every_step_of_the_checkpoint_protocol_then_resume(data_dir, tmp_path,
                                                                     probe_model):
    """One run directory, killed again and again at each step of writing a checkpoint.

    Each rerun is the same command; it must resume after the last finished epoch and
    lose at most the epoch that was being saved when the process died.
    """
    workdir = tmp_path / "run"
    # (fault, epochs finished when the process dies: resumed + this many)
    kills = [
        ("batch:2", 0),    # first epoch, mid-training: no checkpoint yet
        ("replace:2", 1),  # epoch-0001 in place, last.weights.h5 not yet: nothing committed
        ("replace:4", 1),  # epoch file, last and best in place; state.json (the commit) not yet
        ("replace:5", 1),  # epoch 1 committed; epoch 2's file written under a temporary name
        ("unlink:1", 1),   # epoch 2 committed; the previous epoch file not yet removed
    ]
    for fault, finished in kills:
        resumed = state_epoch(workdir)
        proc = spawn(data_dir, workdir, 1000, fault=fault)
        what = wait_for_fault(proc)
        _, err = kill_9(proc)
        if resumed:
            assert f"Resuming {workdir} after epoch {resumed}" in err, err
        done = assert_consistent(workdir, probe_model)
        # Never goes backwards; loses at most the epoch being saved.
        assert resumed <= done and done >= resumed + finished - 1, (fault, what, resumed, done)
    assert state_epoch(workdir) == 2
    assert (workdir / "checkpoints" / "epoch-0001.weights.h5").exists()  # killed before unlink

    out, err = finish(data_dir, workdir, 3)
    assert "after epoch 2" in err and "epochs 2 -> 3 of 3" in out
    final = keras.models.load_model(workdir / "model.keras")
    # Optimizer state survived every kill: Adam counted every step of every kept epoch.
    assert int(final.optimizer.iterations.numpy()) == 3 * STEPS_PER_EPOCH
    names = {p.name for p in (workdir / "checkpoints").iterdir()}
    wanted = {"state.json", "epoch-0003.weights.h5", "last.weights.h5"}
    assert wanted <= names
    # What killed runs left (temporary files, epoch files not yet removed) is cleaned
    # up when the run resumes.
    assert names - wanted <= {"best.weights.h5"}, names


def test_state_json_is_written_last_so_best_and_last_always_exist(data_dir, tmp_path):
    """``state.json`` is the commit point: when it is renamed into place, the epoch file,
    ``last`` and ``best`` it names are already there, so no kill can leave ``best_epoch``
    naming weights that were never written."""
    workdir = tmp_path / "run"
    # Epoch 1 always improves on +inf: replace steps are its weights, last, best, state.json.
    proc = spawn(data_dir, workdir, 1000, fault="replace:4")
    assert wait_for_fault(proc) == "replace state.json"
    ckpt = workdir / "checkpoints"
    assert {"epoch-0001.weights.h5", "last.weights.h5", "best.weights.h5"} <= {p.name for p in ckpt.iterdir()}
    kill_9(proc)
    assert not (ckpt / "state.json").exists()  # epoch 1 was not committed: a rerun starts over


# A soak test (42 s): the kills at each step of the checkpoint protocol above cover the same
# guarantee deterministically in `make test`; this one runs in `make test-all`.
@pytest.mark.slow
def test_kill_9_at_random_times_never_loses_more_than_one_epoch(data_dir, tmp_path, probe_model):
    """Three kills at random moments (seeded), each after the run made some progress."""
    rng = random.Random(7)
    workdir = tmp_path / "run"
    for kill in range(3):
        resumed = state_epoch(workdir)
        proc = spawn(data_dir, workdir, 1000, verbose="2")
        if kill == 0:  # somewhere in the first epochs, possibly before any checkpoint
            wait_until(proc, lambda: (workdir / "logs").exists(), "training to start")
        else:
            wait_until(proc, lambda r=resumed: state_epoch(workdir) > r, "a new checkpoint")
        time.sleep(rng.uniform(0.0, 2.0))
        seen = state_epoch(workdir)
        out, _ = kill_9(proc)
        # --verbose 2 prints one line per finished epoch, after its checkpoint callback.
        finished = resumed + out.count("val_loss")
        done = assert_consistent(workdir, probe_model)
        assert done >= seen >= resumed, (kill, resumed, seen, done)
        assert done >= finished - 1, (kill, finished, done)
    done = state_epoch(workdir)
    out, err = finish(data_dir, workdir, done + 1)
    assert f"after epoch {done}" in err and f"epochs {done} -> {done + 1}" in out
    final = keras.models.load_model(workdir / "model.keras")
    assert int(final.optimizer.iterations.numpy()) == (done + 1) * STEPS_PER_EPOCH


# --------------------------------------------------------------------------------------
# SIGTERM (Ctrl-C is covered by tests/test_training.py)
# --------------------------------------------------------------------------------------


def test_sigterm_checkpoints_and_exits_130_then_resumes(data_dir, tmp_path, probe_model):
    workdir = tmp_path / "run"
    proc = spawn(data_dir, workdir, 1000)
    wait_until(proc, lambda: state_epoch(workdir) >= 1, "epoch 1")
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == cli.EXIT_INTERRUPTED, err
    assert "Interrupted: progress is saved up to epoch" in out and "Traceback" not in err
    done = assert_consistent(workdir, probe_model)
    assert done >= 1 and f"up to epoch {done};" in out
    assert not (workdir / "model.keras").exists()  # an interrupted run is not "final"
    out, err = finish(data_dir, workdir, done + 1)
    assert f"after epoch {done}" in err and f"epochs {done} -> {done + 1}" in out


def test_sigterm_while_writing_a_checkpoint_finishes_it_then_stops(data_dir, tmp_path,
                                                                    probe_model):
    """The first signal only asks to stop: the checkpoint being written is completed,
    training stops at the next batch, and the unfinished epoch is not saved."""
    workdir = tmp_path / "run"
    # Epoch 2's weights are in place, last.weights.h5 is being copied and state.json
    # (the commit) is still to come (epoch 1 made replace steps 1-4: its weights, last,
    # best and state.json).
    proc = spawn(data_dir, workdir, 1000, fault="replace:6")
    assert wait_for_fault(proc) == "replace last.weights.h5"
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    Path(f"{proc.marker}.release").touch()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == cli.EXIT_INTERRUPTED, err
    assert "SIGTERM received" in err and "Traceback" not in err
    assert "Interrupted: progress is saved up to epoch 2;" in out
    assert assert_consistent(workdir, probe_model) == 2
    assert not list((workdir / "checkpoints").glob(".tmp-*"))


def test_second_sigterm_aborts_the_checkpoint_write_and_keeps_the_previous_one(
        data_dir, tmp_path, probe_model):
    workdir = tmp_path / "run"
    proc = spawn(data_dir, workdir, 1000, fault="replace:6")
    assert wait_for_fault(proc) == "replace last.weights.h5"
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)  # the first one is handled (a flag) before the second arrives
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == cli.EXIT_INTERRUPTED, err
    assert "Interrupted: progress is saved up to epoch 1;" in out and "Traceback" not in err
    assert assert_consistent(workdir, probe_model) == 1
    assert not list((workdir / "checkpoints").glob(".tmp-*"))  # the temporary file is removed


# --------------------------------------------------------------------------------------
# Corrupt checkpoints
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def finished_run(data_dir, tmp_path_factory):
    """A 2-epoch run, copied by each test that breaks it."""
    workdir = tmp_path_factory.mktemp("runs") / "run"
    assert fit.main(fit_args(data_dir, workdir, 2, "--verbose", "0")) == 0
    (workdir / "model.keras").unlink()  # so a rerun with more epochs trains
    return workdir


def rerun_broken(data_dir, finished_run, tmp_path, capsys, breaks) -> tuple[int, str]:
    workdir = tmp_path / "run"
    shutil.copytree(finished_run, workdir)
    breaks(workdir / "checkpoints")
    capsys.readouterr()
    code = fit.main(fit_args(data_dir, workdir, 3, "--verbose", "0"))
    return code, capsys.readouterr().err


def _write(name, text):
    return lambda checkpoints: (checkpoints / name).write_text(text)


def _truncate(name, size):
    def breaks(checkpoints):
        with open(checkpoints / name, "r+b") as f:
            f.truncate(size if size >= 0 else (checkpoints / name).stat().st_size // 2)
    return breaks



CORRUPT = {
    "state_truncated_json": _write("state.json", '{"epoch": 2, "weights": "epo'),
    "state_empty": _write("state.json", ""),
    "state_not_an_object": _write("state.json", "[]"),
    "state_weights_not_a_string": _write("state.json", '{"epoch": 2, "weights": 5}'),
    "state_without_epoch": _write("state.json", '{"weights": "epoch-0002.weights.h5"}'),
    "state_escapes_the_directory": _write("state.json", '{"epoch": 2, "weights": "../config.json"}'),
    "state_names_missing_file": _write("state.json", '{"epoch": 2, "weights": "x.weights.h5"}'),
    "weights_truncated_half": _truncate("epoch-0002.weights.h5", -1),
    "weights_truncated_to_header": _truncate("epoch-0002.weights.h5", 100),
    "weights_empty": _truncate("epoch-0002.weights.h5", 0),
}


@pytest.mark.parametrize("case", [
    pytest.param(case) for case in CORRUPT
])
def test_corrupt_checkpoint_is_a_one_line_error(data_dir, finished_run, tmp_path, capsys, case):
    code, err = rerun_broken(data_dir, finished_run, tmp_path, capsys, CORRUPT[case])
    assert code == cli.EXIT_FAILURE
    lines = err.strip().splitlines()
    assert lines[-1].startswith("error: ") and "Traceback" not in err, err
    assert not any(line.startswith("error: ") for line in lines[:-1])


def test_corrupt_weights_error_names_the_file(data_dir, finished_run, tmp_path, capsys):
    code, err = rerun_broken(data_dir, finished_run, tmp_path, capsys,
                             _truncate("epoch-0002.weights.h5", -1))
    assert code == cli.EXIT_FAILURE and "epoch-0002.weights.h5" in err


# --------------------------------------------------------------------------------------
# Disk full, unwritable, a failing checkpoint write
# --------------------------------------------------------------------------------------


@pytest.fixture
def tmpfs(tmp_path):
    """Mount a tmpfs (root only); yields (mount point, size in bytes)."""
    mounts = []

    def mount(size_mib: int) -> Path:
        point = tmp_path / f"tmpfs-{len(mounts)}"
        point.mkdir()
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mib}m", "tmpfs",
                                 str(point)], capture_output=True, text=True)
        if result.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
        mounts.append(point)
        return point

    yield mount
    for point in mounts:
        subprocess.run(["umount", "-l", str(point)], capture_output=True)


def test_full_disk_is_refused_before_training(data_dir, tmp_path, tmpfs, capsys):
    disk = tmpfs(1)
    code = fit.main(fit_args(data_dir, disk / "run", 1, "--verbose", "0"))
    err = capsys.readouterr().err
    assert code == cli.EXIT_FAILURE
    assert err.startswith("error: Only 0 MiB free on the disk of workdir") or \
        err.startswith("error: Only 1 MiB free on the disk of workdir"), err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (disk / "run" / "logs").exists()  # nothing trained


def test_low_disk_is_refused_before_training(data_dir, tmp_path, capsys, monkeypatch):
    """Same check where no tmpfs can be mounted: the free space as the OS reports it."""
    real = shutil.disk_usage

    def tiny(path):
        usage = real(path)
        return type(usage)(usage.total, usage.total - (5 << 20), 5 << 20)

    monkeypatch.setattr(rundir.shutil, "disk_usage", tiny)
    code = fit.main(fit_args(data_dir, tmp_path / "run", 1, "--verbose", "0"))
    err = capsys.readouterr().err
    assert code == cli.EXIT_FAILURE
    assert err.startswith("error: Only 5 MiB free on the disk of workdir") and err.count("\n") == 1
    assert "at least 200 MiB are needed" in err


def test_read_only_workdir_is_refused_before_training(data_dir, tmp_path, capsys):
    workdir = tmp_path / "run"
    workdir.mkdir()
    if os.geteuid() == 0:  # root writes anywhere: use a read-only bind mount instead
        result = subprocess.run(["mount", "--bind", "-o", "ro", str(workdir), str(workdir)],
                                capture_output=True, text=True)
        if result.returncode != 0:
            pytest.skip(f"cannot make a read-only mount: {result.stderr.strip()}")
    else:
        workdir.chmod(0o555)
    try:
        code = fit.main(fit_args(data_dir, workdir, 1, "--verbose", "0"))
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", str(workdir)], capture_output=True)
        workdir.chmod(0o755)
    err = capsys.readouterr().err
    assert code == cli.EXIT_FAILURE
    assert err.startswith(f"error: Cannot write to workdir '{workdir}'") and err.count("\n") == 1
    assert os.listdir(workdir) == []


def fill_disk(disk: Path) -> Path:
    """Fill ``disk`` but for less than one checkpoint file (16 MiB for these models)."""
    filler = disk / "filler"
    for margin_mib in (2, 4, 8, 12):
        size = shutil.disk_usage(disk).free - (margin_mib << 20)
        if subprocess.run(["fallocate", "-l", str(size), str(filler)]).returncode == 0:
            return filler
        filler.unlink(missing_ok=True)
    raise AssertionError(f"cannot fill {disk}")


def test_disk_filling_up_during_training_keeps_the_last_checkpoint(data_dir, tmpfs, probe_model):
    """Another process fills the disk mid-run: the checkpoint being written fails, the
    previous one stays intact, and once space is freed the same command resumes."""
    disk = tmpfs(260)  # passes the 200 MiB check at start
    workdir = disk / "run"
    proc = spawn(data_dir, workdir, 1000)
    wait_until(proc, lambda: state_epoch(workdir) >= 1, "epoch 1")
    filler = fill_disk(disk)
    out, failure = proc.communicate(timeout=120)
    assert proc.returncode != 0, out
    assert "No space left on device" in failure
    done = assert_consistent(workdir, probe_model)
    assert done >= 1
    assert not list((workdir / "checkpoints").glob(".tmp-*"))
    filler.unlink()
    out, err = finish(data_dir, workdir, done + 1)
    assert f"after epoch {done}" in err and f"epochs {done} -> {done + 1}" in out
    # One error line, exit status 1, no traceback.
    errors = [line for line in failure.splitlines() if line.startswith("error: ")]
    assert proc.returncode == cli.EXIT_FAILURE and len(errors) == 1, failure
    assert "Traceback" not in failure


def test_checkpoint_write_failing_midway_keeps_the_previous_checkpoint(
        data_dir, tmp_path, capsys, monkeypatch, probe_model):
    """``save_weights`` writes half a file, then fails (I/O error) at epoch 2."""
    workdir = tmp_path / "run"
    real = keras.Model.save_weights
    calls = []

    def half_then_fail(self, filepath, *args, **kwargs):
        calls.append(str(filepath))
        if len(calls) < 2:
            return real(self, filepath, *args, **kwargs)
        real(self, filepath, *args, **kwargs)
        with open(filepath, "r+b") as f:
            f.truncate(os.path.getsize(filepath) // 2)
        raise OSError(5, "Input/output error", str(filepath))

    monkeypatch.setattr(keras.Model, "save_weights", half_then_fail)
    code = fit.main(fit_args(data_dir, workdir, 3, "--verbose", "0"))
    err = capsys.readouterr().err
    assert code == cli.EXIT_FAILURE
    assert err.startswith("error: Could not write ") and err.count("\n") == 1
    assert "epoch-0002.weights.h5: Input/output error" in err
    assert Path(calls[1]).name.startswith(".tmp-")  # written under a temporary name
    assert assert_consistent(workdir, probe_model) == 1
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == [
        "best.weights.h5", "epoch-0001.weights.h5", "last.weights.h5", "state.json"]
    monkeypatch.undo()
    assert fit.main(fit_args(data_dir, workdir, 3, "--verbose", "0")) == 0
    assert "epochs 1 -> 3 of 3" in capsys.readouterr().out


# --------------------------------------------------------------------------------------
# Export: a real process killed (or stopped) in the middle of an export
# --------------------------------------------------------------------------------------


def _spawn_export(workdir, base):
    cmd = [sys.executable, "-m", "export.saved_model", "--workdir", str(workdir),
           "--model-base-path", str(base), "--weights", "last"]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))


def test_killed_or_stopped_export_leaves_no_version_then_exports(finished_run, tmp_path):
    from serving.core import list_version_dirs

    base = tmp_path / "models" / "evae"

    def temporary_dirs():
        return [p for p in base.glob(".tmp-export-*")] if base.exists() else []

    # kill -9 while the SavedModel is being written into its temporary directory.
    proc = _spawn_export(finished_run, base)
    wait_until(proc, lambda: any(temporary_dirs()), "the export to start writing")
    time.sleep(random.Random(3).uniform(0.0, 0.2))
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL  # writing a SavedModel takes seconds
    assert [p.name for p in base.iterdir() if p.name.isdigit()] == []
    assert list_version_dirs(base) == {}  # what a watching server sees
    # SIGTERM: the temporary directory is removed and the message says so.
    proc = _spawn_export(finished_run, base)
    before = set(temporary_dirs())
    wait_until(proc, lambda: set(temporary_dirs()) - before, "the export to start writing")
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Interrupted; nothing was exported." in err and "Traceback" not in err
    assert set(temporary_dirs()) == before and list_version_dirs(base) == {}
    # The same command then exports version 1; the killed export's temporary directory
    # is litter (reported), ignored by servers as it is not an integer.
    proc = _spawn_export(finished_run, base)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert list(list_version_dirs(base)) == [1] and (base / "1" / "variables").is_dir()


# --------------------------------------------------------------------------------------
# Usage errors of every command line
# --------------------------------------------------------------------------------------

FIT = ["--dataset", "mnist"]
EXPORT = ["--workdir", "r", "--model-base-path", "m"]
SERVER = ["--model_base_path", "."]

BAD_FLAGS = [
    # trainers.fit
    ("trainers.fit", [], "the following arguments are required: --dataset"),
    ("trainers.fit", ["--dataset", "cifar"], "argument --dataset: invalid choice: 'cifar'"),
    ("trainers.fit", [*FIT, "--model", "gan"], "argument --model: invalid choice: 'gan'"),
    ("trainers.fit", [*FIT, "--latent-dim", "-4"],
     "argument --latent-dim: expected a positive int, received '-4'"),
    ("trainers.fit", [*FIT, "--latent-dim", "1.5"],
     "argument --latent-dim: expected a positive int, received '1.5'"),
    ("trainers.fit", [*FIT, "--support", "-1"],
     "argument --support: expected 'learned' or a positive number, received '-1'"),
    ("trainers.fit", [*FIT, "--epochs", "0"],
     "argument --epochs: expected a positive int, received '0'"),
    ("trainers.fit", [*FIT, "--epochs", "many"],
     "argument --epochs: expected a positive int, received 'many'"),
    ("trainers.fit", [*FIT, "--batch-size", "0"],
     "argument --batch-size: expected a positive int, received '0'"),
    ("trainers.fit", [*FIT, "--learning-rate", "0"],
     "argument --learning-rate: expected a positive float, received '0'"),
    ("trainers.fit", [*FIT, "--learning-rate", "fast"],
     "argument --learning-rate: expected a positive float, received 'fast'"),
    ("trainers.fit", [*FIT, "--steps-per-epoch", "-1"],
     "argument --steps-per-epoch: expected a positive int, received '-1'"),
    ("trainers.fit", [*FIT, "--validation-steps", "0"],
     "argument --validation-steps: expected a positive int, received '0'"),
    ("trainers.fit", [*FIT, "--precision", "float8"],
     "argument --precision: invalid choice: 'float8'"),
    ("trainers.fit", [*FIT, "--strategy", "tpu"], "argument --strategy: invalid choice: 'tpu'"),
    ("trainers.fit", [*FIT, "--cpu-replicas", "0"],
     "argument --cpu-replicas: expected a positive int, received '0'"),
    ("trainers.fit", [*FIT, "--seed", "x"], "argument --seed: invalid int value: 'x'"),
    ("trainers.fit", [*FIT, "--data-dir", "/no/such/dir"],
     "argument --data-dir: '/no/such/dir' is not a directory"),
    ("trainers.fit", [*FIT, "--step", "0"], "argument --step: expected a positive float, received '0'"),
    ("trainers.fit", [*FIT, "--spread-floor=-1e-3"],
     "argument --spread-floor: expected a positive float, received '-1e-3'"),
    ("trainers.fit", [*FIT, "--support-floor", "0"],
     "argument --support-floor: expected a positive float, received '0'"),
    ("trainers.fit", [*FIT, "--kernel-n", "0"],
     "argument --kernel-n: expected a positive int, received '0'"),
    ("trainers.fit", [*FIT, "--verbose", "3"], "argument --verbose: invalid choice: 3"),
    ("trainers.fit", [*FIT, "--epoch", "3", "--colour", "red"],
     "unrecognized arguments: --colour red"),
    # export.saved_model
    ("export.saved_model", [], "the following arguments are required: --workdir, --model-base-path"),
    ("export.saved_model", ["--workdir", "r"],
     "the following arguments are required: --model-base-path"),
    ("export.saved_model", [*EXPORT, "--version", "0"],
     "argument --version: expected a positive integer, received '0'"),
    ("export.saved_model", [*EXPORT, "--version", "v2"],
     "argument --version: expected a positive integer, received 'v2'"),
    ("export.saved_model", [*EXPORT, "--weights", "worst"],
     "argument --weights: invalid choice: 'worst'"),
    # serving.server
    ("serving.server", [], "one of --model_base_path or --model_config_file is required"),
    ("serving.server", ["--model_base_path", "/no/such/dir"],
     "--model_base_path '/no/such/dir' does not exist"),
    ("serving.server", ["--model_config_file", "/no/such.config"],
     "--model_config_file '/no/such.config' does not exist"),
    ("serving.server", [*SERVER, "--model_name", ""], "--model_name must not be empty"),
    ("serving.server", [*SERVER, "--rest_api_port", "-1"],
     "argument --rest_api_port: expected an integer in 0..65535, received '-1'"),
    ("serving.server", [*SERVER, "--rest_api_port", "http"],
     "argument --rest_api_port: expected an integer in 0..65535, received 'http'"),
    ("serving.server", [*SERVER, "--rest_api_host", ""], "--rest_api_host must not be empty"),
    ("serving.server", [*SERVER, "--rest_api_num_threads", "0"],
     "argument --rest_api_num_threads: expected a positive int, received '0'"),
    ("serving.server", [*SERVER, "--rest_api_timeout_in_ms", "1.5"],
     "argument --rest_api_timeout_in_ms: invalid int value: '1.5'"),
    ("serving.server", [*SERVER, "--file_system_poll_wait_seconds", "-1"],
     "argument --file_system_poll_wait_seconds: expected a finite number >= 0, received '-1'"),
    ("serving.server", [*SERVER, "--file_system_poll_wait_seconds", "nan"],
     "argument --file_system_poll_wait_seconds: expected a finite number >= 0, received 'nan'"),
    ("serving.server", [*SERVER, "--max_request_bytes", "0"],
     "argument --max_request_bytes: expected a positive int, received '0'"),
    ("serving.server", [*SERVER, "--max_batch_size", "0"],
     "argument --max_batch_size: expected a positive int, received '0'"),
    ("serving.server", [*SERVER, "--port", "x"],
     "argument --port: expected an integer in 0..65535, received 'x'"),
    ("serving.server", [*SERVER, "--enable_batching"], "unrecognized arguments: --enable_batching"),
    # serving.client
    ("serving.client", ["--url", "localhost:8501"],
     "url must start with http:// or https://. Received: url='localhost:8501'"),
    ("serving.client", ["--model", ""], "model must be a non-empty name. Received: model=''"),
    ("serving.client", ["--version", "-1"], "version must be >= 0. Received: version=-1"),
    ("serving.client", ["--num", "0"], "argument --num: expected a positive int, received '0'"),
    ("serving.client", ["--num", "sixteen"],
     "argument --num: expected a positive int, received 'sixteen'"),
    ("serving.client", ["--num", "4", "--latent", "z.npy"],
     "argument --latent: not allowed with argument --num"),
    ("serving.client", ["--seed", "1.5"], "argument --seed: invalid int value: '1.5'"),
    ("serving.client", ["--ncols", "0"], "argument --ncols: expected a positive int, received '0'"),
    ("serving.client", ["--timeout", "0"],
     "argument --timeout: expected a positive float, received '0'"),
    ("serving.client", ["--timeout", "inf"],
     "argument --timeout: expected a positive float, received 'inf'"),
    ("serving.client", ["--timeout", "soon"],
     "argument --timeout: expected a positive float, received 'soon'"),
]


def _main_of(program: str):
    if program == "trainers.fit":
        return fit.main
    if program == "export.saved_model":
        from export.saved_model import main
    elif program == "serving.server":
        from serving.server import main
    else:
        from serving.client import main
    return main


@pytest.mark.parametrize("program, argv, message", BAD_FLAGS,
                         ids=[f"{p}:{' '.join(a) or 'none'}" for p, a, _ in BAD_FLAGS])
def test_bad_flag_exits_2_with_one_line(program, argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        _main_of(program)(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"python -m {program}: error: "), err
    assert message in last and "Traceback" not in err


@pytest.mark.parametrize("argv", [
    [*FIT, "--learning-rate", "nan"],
    [*FIT, "--learning-rate", "inf"],
    [*FIT, "--step", "nan"],
    [*FIT, "--spread-floor", "inf"],
    [*FIT, "--workdir", ""],
])
def test_non_finite_numbers_and_an_empty_workdir_are_usage_errors(argv, capsys):
    with pytest.raises(SystemExit) as info:
        fit.build_parser().parse_args(argv)
    assert info.value.code == 2


@pytest.mark.parametrize("program, argv", [
    ("trainers.fit", ["--dataset", "cifar"]),
    ("export.saved_model", ["--workdir", "r", "--model-base-path", "m", "--version", "0"]),
    ("serving.server", ["--model_base_path", ".", "--rest_api_port", "70000"]),
    ("serving.client", ["--timeout", "-1"]),
])
def test_usage_errors_exit_2_from_a_real_process(program, argv):
    proc = subprocess.run([sys.executable, "-m", program, *argv], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith(f"python -m {program}: error: ")
    assert "Traceback" not in proc.stderr


def test_config_mismatch_on_resume_is_one_line(data_dir, finished_run, tmp_path, capsys):
    workdir = tmp_path / "run"
    shutil.copytree(finished_run, workdir)
    code = fit.main(fit_args(data_dir, workdir, 3, "--verbose", "0", "--learning-rate", "0.01"))
    err = capsys.readouterr().err
    assert code == cli.EXIT_FAILURE and err.count("\n") == 1
    assert "learning_rate: 0.0001 -> 0.01" in err
    assert TrainConfig.load(str(workdir / "config.json")).learning_rate == 1e-4
    assert read_state(workdir)["epoch"] == 2
