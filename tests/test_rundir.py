"""The run directory's one owner (evae_tf.runs.rundir): layout, state.json, checkpoint protocol."""

from __future__ import annotations

import json
import os

import pytest

from evae_tf.config import TrainConfig
from evae_tf.runs import rundir
from evae_tf.runs.rundir import CheckpointWriter, RunDir, RunDirError


def test_the_layout_keeps_the_file_names_of_existing_runs(tmp_path):
    run = RunDir(tmp_path / "run")
    assert os.fspath(run) == str(tmp_path / "run") and str(run) == os.fspath(run)
    names = {p.relative_to(run.path).as_posix() for p in (
        run.config_file, run.model_file, run.metrics_file, run.state_file, run.log_dir,
        run.weights_file("final"), run.weights_file("best"), run.weights_file("last"))}
    assert names == {"config.json", "model.keras", "metrics.json", "checkpoints/state.json", "logs",
                     "checkpoints/best.weights.h5", "checkpoints/last.weights.h5"}
    with pytest.raises(RunDirError, match="unknown weights 'worst'; expected one of: final, best, last"):
        run.weights_file("worst")


def _commit(writer: CheckpointWriter, epoch: int, val_loss: float) -> None:
    writer.commit(epoch, {"loss": 1.0, "val_loss": val_loss},
                  lambda tmp: tmp.write_bytes(f"weights of epoch {epoch + 1}".encode()))


def test_commits_name_the_last_epoch_keep_the_best_and_remove_the_previous(tmp_path):
    run = RunDir(tmp_path)
    run.checkpoint_dir.mkdir()
    writer = CheckpointWriter(run.checkpoint_dir)
    for epoch, val in enumerate([3.0, 2.0, 2.5]):
        _commit(writer, epoch, val)
    state = run.read_state()
    assert (state["epoch"], state["weights"], state["best_epoch"], state["best_val_loss"]) == (
        3, "epoch-0003.weights.h5", 2, 2.0)
    assert state["weights_path"].read_bytes() == b"weights of epoch 3"
    assert run.weights_file("last").read_bytes() == b"weights of epoch 3"
    assert run.weights_file("best").read_bytes() == b"weights of epoch 2"
    assert sorted(p.name for p in run.checkpoint_dir.iterdir()) == [
        "best.weights.h5", "epoch-0003.weights.h5", "last.weights.h5", "state.json"]
    assert run.epochs_done() == 3
    resumed = CheckpointWriter(run.checkpoint_dir, state)  # a resumed run keeps the best so far
    _commit(resumed, 3, 2.2)
    assert run.weights_file("best").read_bytes() == b"weights of epoch 2"


@pytest.mark.parametrize("content, message", [
    ("{not json", "is unreadable"),
    (json.dumps({"epoch": -1, "weights": "epoch-0001.weights.h5"}), "is malformed"),
    (json.dumps({"epoch": True, "weights": "epoch-0001.weights.h5"}), "is malformed"),
    (json.dumps({"epoch": 1, "weights": "../outside.h5"}), "is malformed"),
    (json.dumps({"epoch": 1, "weights": "epoch-0001.weights.h5"}), "is missing"),
])
def test_a_bad_state_is_one_line_naming_the_file(tmp_path, content, message):
    run = RunDir(tmp_path)
    run.checkpoint_dir.mkdir()
    run.state_file.write_text(content)
    with pytest.raises(RunDirError, match=message) as e:
        run.read_state()
    assert "state.json" in str(e.value) and "\n" not in str(e.value)
    assert run.epochs_done() is None


def test_a_new_run_has_no_state_and_leftovers_are_removed(tmp_path):
    run = RunDir(tmp_path)
    run.checkpoint_dir.mkdir()
    assert run.read_state() is None and run.epochs_done() is None
    for name in (".tmp-1-2-epoch-0002.weights.h5", "epoch-0001.weights.h5", "last.weights.h5"):
        (run.checkpoint_dir / name).write_bytes(b"x")
    rundir.remove_leftovers(run.checkpoint_dir, None)
    assert [p.name for p in run.checkpoint_dir.iterdir()] == ["last.weights.h5"]


def test_prepare_writes_the_config_and_refuses_another_one(tmp_path):
    config = TrainConfig(dataset="mnist", workdir=str(tmp_path / "run"))
    assert rundir.prepare_workdir(config) == tmp_path / "run"
    assert RunDir(tmp_path / "run").read_config() == config
    with pytest.raises(RunDirError, match=r"different configuration \(batch_size: 100 -> 50\)"):
        rundir.prepare_workdir(TrainConfig(dataset="mnist", batch_size=50, workdir=str(tmp_path / "run")))
    rundir.prepare_workdir(TrainConfig(dataset="mnist", epochs=60, workdir=str(tmp_path / "run")))


def test_an_unreadable_config_is_one_line(tmp_path):
    run = RunDir(tmp_path)
    run.config_file.write_text('{"dataset": "mnist", "epochs": 0}')
    with pytest.raises(RunDirError, match="config.json is unreadable or corrupt: `epochs` must be"):
        run.read_config()
