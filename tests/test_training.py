"""The main job: ``python -m trainers.fit`` and ``evae_tf.training`` on tiny IDX data."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest
from idx_fixtures import write_mnist_dir
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from evae_tf import cli, models, training
from evae_tf.config import ModelConfig, TrainConfig
from evae_tf.training import trainer
from trainers import fit

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--latent-dim", "4", "--batch-size", "16", "--verbose", "0"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("fashion-mnist")
    write_mnist_dir(directory, n_train=48, n_test=32)
    return str(directory)


def run_fit(data_dir, workdir, *extra):
    return fit.main(["--dataset", "fashion_mnist", "--data-dir", data_dir, "--workdir", str(workdir),
                     *TINY, *extra])


def state(workdir) -> dict:
    return json.loads((Path(workdir) / "checkpoints" / "state.json").read_text())


def tags(logdir: Path) -> set[str]:
    acc = EventAccumulator(str(logdir), size_guidance={"tensors": 0})
    acc.Reload()
    return set(acc.Tags()["tensors"])


def test_fit_leaves_a_complete_run_directory(data_dir, tmp_path, capsys):
    workdir = tmp_path / "run"
    assert run_fit(data_dir, workdir, "--epochs", "2") == 0
    out = capsys.readouterr().out
    assert "Training finished: epochs 0 -> 2 of 2" in out
    assert f"tensorboard --logdir {tmp_path}" in out and "python -m export.saved_model" in out

    assert state(workdir)["epoch"] == 2
    ckpt = workdir / "checkpoints"
    assert {p.name for p in ckpt.iterdir()} == {"state.json", "epoch-0002.weights.h5",
                                               "last.weights.h5", "best.weights.h5"}
    # config.json is enough to rebuild the model and load its weights.
    config = TrainConfig.load(str(workdir / "config.json"))
    assert config.model.latent_dim == 4 and config.batch_size == 16 and config.learning_rate == 1e-4
    rebuilt = models.build(**config.model.build_kwargs())
    rebuilt.compile(optimizer=keras.optimizers.Adam())
    rebuilt.optimizer.build(rebuilt.trainable_variables)
    rebuilt.load_weights(ckpt / "last.weights.h5")
    final = keras.models.load_model(workdir / "model.keras")
    x = np.random.default_rng(0).uniform(size=(4, 32, 32, 1)).astype(np.float32)
    np.testing.assert_array_equal(rebuilt.reconstruct(x).numpy(), final.reconstruct(x).numpy())

    logs = workdir / "logs"
    for split in ("train", "validation"):
        assert {"epoch_loss", "epoch_reconstruction", "epoch_kernel"} <= tags(logs / split)
    assert "epoch_learning_rate" in tags(logs / "train")
    assert {"holdout_vs_reconstruction", "prior_samples", "sharpness/reconstruction",
            "posterior/mu", "posterior/r", "posterior/B", "_hparams_/session_start_info"} <= tags(logs / "images")


def test_vae_logs_kl(data_dir, tmp_path):
    workdir = tmp_path / "vae"
    assert run_fit(data_dir, workdir, "--model", "vae", "--epochs", "1") == 0
    assert {"epoch_kl", "epoch_reconstruction"} <= tags(workdir / "logs" / "validation")
    assert "posterior/log_var" in tags(workdir / "logs" / "images")


def test_rerun_resumes_after_the_last_finished_epoch(data_dir, tmp_path, capsys, caplog):
    workdir = tmp_path / "run"
    assert run_fit(data_dir, workdir, "--epochs", "1") == 0
    first = state(workdir)
    caplog.set_level("INFO")
    assert run_fit(data_dir, workdir, "--epochs", "2") == 0
    assert "Resuming" in caplog.text and "after epoch 1" in caplog.text
    assert "epochs 1 -> 2 of 2" in capsys.readouterr().out
    assert state(workdir)["epoch"] == 2 and first["epoch"] == 1
    assert not (workdir / "checkpoints" / "epoch-0001.weights.h5").exists()
    # A finished run is not trained again.
    assert run_fit(data_dir, workdir, "--epochs", "2") == 0
    assert "already finished 2 epoch(s)" in capsys.readouterr().out


def test_a_workdir_with_another_config_is_refused(data_dir, tmp_path, capsys):
    workdir = tmp_path / "run"
    assert run_fit(data_dir, workdir, "--epochs", "1") == 0
    assert run_fit(data_dir, workdir, "--epochs", "1", "--model", "vae") == cli.EXIT_FAILURE
    err = capsys.readouterr().err
    assert "holds a run with a different configuration (model:" in err and err.count("\n") == 1


def test_unwritable_workdir_fails_before_training(data_dir, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert run_fit(data_dir, blocker / "run", "--epochs", "1") == cli.EXIT_FAILURE
    err = capsys.readouterr().err
    # One line naming the workdir and the reason; nothing was created under the blocker.
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"error: Cannot write to workdir {str(blocker / 'run')!r}: ")
    assert "Not a directory" in err or "File exists" in err
    assert blocker.is_file() and blocker.read_text() == ""


@pytest.mark.parametrize("flags, expected", [
    (["--dataset", "svhn"], "argument --dataset: invalid choice: 'svhn'"),
    (["--dataset", "mnist", "--latent-dim", "0"], "argument --latent-dim: expected a positive int, received '0'"),
    (["--dataset", "mnist", "--batch-size", "-5"], "argument --batch-size: expected a positive int, received '-5'"),
    (["--dataset", "mnist", "--support", "wide"], "argument --support: expected 'learned' or a positive number"),
    (["--dataset", "mnist", "--support", "0"], "argument --support: expected 'learned' or a positive number"),
    (["--dataset", "mnist", "--data-dir", "/nonexistent"], "argument --data-dir: '/nonexistent' is not a directory"),
    (["--dataset", "mnist", "--precision", "fp8"], "argument --precision: invalid choice: 'fp8'"),
])
def test_bad_flags_exit_2_with_one_line(flags, expected):
    proc = subprocess.run([sys.executable, "-m", "trainers.fit", *flags], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert expected in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("python -m trainers.fit: error:")


def test_missing_data_is_one_clear_error(tmp_path, capsys, monkeypatch):
    from evae_tf.data import network

    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setattr(network, "reachable", lambda *a, **k: False)
    code = fit.main(["--dataset", "fashion_mnist", "--data-dir", str(empty), "--workdir",
                     str(tmp_path / "run"), *TINY])
    err = capsys.readouterr().err
    assert code == cli.EXIT_FAILURE and "Traceback" not in err
    # One error line that names the dataset, where it was looked for, and what to do.
    assert err.startswith("error: ") and err.count("\n") == 1
    assert "fashion_mnist" in err and str(empty) in err and "--data-dir" in err
    assert not (tmp_path / "run" / "checkpoints" / "state.json").exists()


class PoisonWeights(keras.callbacks.Callback):
    """Sets a decoder kernel to NaN at the given epoch, as a diverging run would."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            kernel = self.model.decoder.get_layer("fc").kernel
            kernel.assign(np.full(kernel.shape, np.nan, np.float32))


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(data_dir, tmp_path):
    config = TrainConfig(dataset="fashion_mnist", model=ModelConfig(latent_dim=4), epochs=3,
                         batch_size=16, data_dir=data_dir, workdir=str(tmp_path / "run"))
    with pytest.raises(training.NonFiniteLossError,
                       match=r"non-finite reconstruction at epoch 2, step 1\. "
                             r"The last good checkpoint \(epoch 1\)"):
        training.train(config, verbose=0, callbacks=[PoisonWeights(epoch=1)])
    assert state(tmp_path / "run")["epoch"] == 1
    good = models.build(**config.model.build_kwargs())
    good.compile(optimizer=keras.optimizers.Adam())
    good.optimizer.build(good.trainable_variables)
    good.load_weights(tmp_path / "run" / "checkpoints" / "last.weights.h5")
    assert all(np.isfinite(w.numpy()).all() for w in good.weights)
    assert not (tmp_path / "run" / "model.keras").exists()


@pytest.mark.parametrize("precision", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_runs_write_float32_losses(data_dir, tmp_path, precision):
    config = TrainConfig(dataset="fashion_mnist", model=ModelConfig(latent_dim=4), epochs=1,
                         batch_size=16, data_dir=data_dir, workdir=str(tmp_path / "run"),
                         precision=precision)
    before = config.to_dict()
    result = training.train(config, verbose=0)
    assert result.status == "completed"
    assert all(np.isfinite(v).all() for v in result.history.values())
    assert result.model.decoder.get_layer("deconv0").compute_dtype == precision.split("_")[1]
    # train() works on a copy: the caller's config and config.json are what was given
    # (model.seed None: the run's seed), and the model was seeded with the run's seed.
    assert config.to_dict() == before and config.model.seed is None
    assert TrainConfig.load(str(tmp_path / "run" / "config.json")).to_dict() == before
    assert result.model.seed == config.seed


def _spawn_fit(data_dir, workdir, epochs, *extra):
    cmd = [sys.executable, "-m", "trainers.fit", "--dataset", "fashion_mnist", "--data-dir", data_dir,
           "--workdir", str(workdir), "--epochs", str(epochs), *TINY, *extra]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_epoch(proc, workdir, epoch, timeout=120):
    path = Path(workdir) / "checkpoints" / "state.json"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and state(workdir)["epoch"] >= epoch:
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError(f"no epoch {epoch} checkpoint within {timeout}s")


def test_kill_9_then_rerun_resumes_with_optimizer_state(data_dir, tmp_path):
    workdir = tmp_path / "run"
    proc = _spawn_fit(data_dir, workdir, 1000)
    _wait_for_epoch(proc, workdir, 2)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    done = state(workdir)["epoch"]
    assert done >= 2
    rerun = _spawn_fit(data_dir, workdir, done + 1)
    out, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    assert f"after epoch {done}" in err and f"epochs {done} -> {done + 1}" in out
    final = keras.models.load_model(workdir / "model.keras")
    steps_per_epoch = 48 // 16
    assert int(final.optimizer.iterations.numpy()) == (done + 1) * steps_per_epoch


def test_sigint_saves_and_exits_cleanly(data_dir, tmp_path):
    workdir = tmp_path / "run"
    proc = _spawn_fit(data_dir, workdir, 1000)
    _wait_for_epoch(proc, workdir, 1)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == cli.EXIT_INTERRUPTED
    assert "Interrupted: progress is saved up to epoch" in out and "Traceback" not in err
    assert state(workdir)["epoch"] >= 1


def test_run_files_get_ordinary_permissions(data_dir, tmp_path):
    workdir = tmp_path / "run"
    assert run_fit(data_dir, workdir, "--epochs", "1") == 0
    umask = os.umask(0)
    os.umask(umask)
    for name in ("config.json", "checkpoints/state.json"):
        assert (workdir / name).stat().st_mode & 0o777 == 0o666 & ~umask, name


def test_a_stop_mid_epoch_does_not_checkpoint_the_unfinished_epoch(data_dir, tmp_path, monkeypatch):
    class StopsInTheSecondEpoch(training.GracefulStop):
        """Requests the stop as the SIGINT handler would, at epoch 2, batch 2."""

        def on_epoch_begin(self, epoch, logs=None):
            super().on_epoch_begin(epoch, logs)
            self.epoch = epoch

        def on_train_batch_begin(self, batch, logs=None):
            if self.epoch == 1 and batch == 1:
                self.request()

    monkeypatch.setattr(trainer, "GracefulStop", StopsInTheSecondEpoch)
    config = TrainConfig(dataset="fashion_mnist", model=ModelConfig(latent_dim=4), epochs=5,
                         batch_size=16, data_dir=data_dir, workdir=str(tmp_path / "run"))
    result = training.train(config, verbose=0)
    assert result.status == "interrupted" and result.epochs_done == 1
    assert state(tmp_path / "run")["epoch"] == 1  # epoch 2 was cut short: not saved
    assert result.model_path is None and not (tmp_path / "run" / "model.keras").exists()
