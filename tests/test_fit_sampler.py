"""The ex-post sampler of a run: fitted when ``trainers.fit`` ends (and by a resumed run),
refitted by ``python -m trainers.fit_sampler``, used by ``model.generate``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from idx_fixtures import write_mnist_dir
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from evae_tf import runs
from evae_tf.runs.rundir import RunDir, RunDirError
from evae_tf.samplers import GaussianMixtureSampler
from trainers import fit, fit_sampler

TINY = ["--latent-dim", "4", "--batch-size", "16", "--verbose", "0", "--sampler-components", "3"]
N_TRAIN = 48


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("fashion-mnist")
    write_mnist_dir(directory, n_train=N_TRAIN, n_test=32)
    return str(directory)


@pytest.fixture(scope="module")
def finished_run(data_dir, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("runs") / "evae"
    assert fit.main(["--dataset", "fashion_mnist", "--data-dir", data_dir, "--workdir", str(workdir),
                     "--epochs", "1", *TINY]) == 0
    return workdir


def test_training_ends_by_fitting_the_sampler_and_showing_its_samples(finished_run, capsys):
    sampler = GaussianMixtureSampler.load(RunDir(finished_run).sampler_file())
    assert sampler.n_components == 3 and sampler.latent_dim == 4
    info = sampler.fit_info
    assert info["n_examples"] == N_TRAIN and info["covariance_type"] == "full"
    assert info["dataset"] == "fashion_mnist" and info["weights"] == "final"
    acc = EventAccumulator(str(finished_run / "logs" / "images"), size_guidance={"tensors": 0})
    acc.Reload()
    assert {"expost_samples", "prior_samples_final", "sharpness/expost_samples"} <= set(acc.Tags()["tensors"])
    config = json.loads((finished_run / "config.json").read_text())
    assert config["sampler"] == {"components": 3, "covariance_type": "full"}


def test_the_sampler_is_the_one_fitted_to_the_final_model(finished_run):
    # Refitting the saved model with the same seed gives the same mixture: it was fitted
    # to the final weights' latents, not to an earlier state of the encoder.
    model, config = runs.load_model(finished_run)
    refit = runs.fit_sampler(finished_run, model, config, progress=False)
    saved = GaussianMixtureSampler.load(RunDir(finished_run).sampler_file())
    np.testing.assert_allclose(refit.means, saved.means, rtol=1e-5, atol=1e-6)


def test_a_finished_run_without_a_sampler_gets_one_on_rerun(data_dir, finished_run, tmp_path, capsys):
    import shutil

    workdir = tmp_path / "copy"
    shutil.copytree(finished_run, workdir)
    RunDir(workdir).sampler_file().unlink()
    assert fit.main(["--dataset", "fashion_mnist", "--data-dir", data_dir, "--workdir", str(workdir),
                     "--epochs", "1", *TINY]) == 0
    out = capsys.readouterr().out
    assert "already finished 1 epoch(s)" in out and "expost_sampler.npz" in out
    assert RunDir(workdir).sampler_file().exists()


def test_the_command_refits_with_other_options(finished_run, data_dir, capsys):
    before = RunDir(finished_run).sampler_file().read_bytes()
    assert fit_sampler.main(["--workdir", str(finished_run), "--components", "2",
                             "--covariance-type", "diag"]) == 0
    out = capsys.readouterr().out
    assert "2 components, diag covariance, fitted to 48 latents" in out
    assert "python -m export.saved_model --workdir" in out
    sampler = GaussianMixtureSampler.load(RunDir(finished_run).sampler_file())
    assert sampler.n_components == 2 and sampler.fit_info["covariance_type"] == "diag"
    assert RunDir(finished_run).sampler_file().read_bytes() != before
    model, _ = runs.load_model(finished_run)
    model.latent_sampler = sampler
    np.testing.assert_array_equal(model.generate(3, seed=1), model.decode(sampler.sample(3, seed=1)))


def test_best_weights_get_their_own_sampler_file(finished_run, capsys):
    assert fit_sampler.main(["--workdir", str(finished_run), "--weights", "best", "--components", "2"]) == 0
    assert (finished_run / "expost_sampler.best.npz").exists()
    assert "--weights best" in capsys.readouterr().out


def test_more_components_than_latents_is_one_line_and_keeps_the_sampler(finished_run, capsys):
    before = RunDir(finished_run).sampler_file().read_bytes()
    assert fit_sampler.main(["--workdir", str(finished_run), "--components", "49"]) == 1
    err = capsys.readouterr().err
    assert err == (f"error: cannot fit the ex-post sampler of {finished_run}: cannot fit 49 components "
                   "to 48 latents: use at most as many components as latents\n")
    assert RunDir(finished_run).sampler_file().read_bytes() == before


@pytest.mark.parametrize("argv, fragment", [
    (["--workdir", "nowhere"], "--workdir: 'nowhere' is not a directory"),
    (["--workdir", ".", "--components", "0"], "--components: expected a positive int, received '0'"),
    (["--workdir", ".", "--covariance-type", "round"], "--covariance-type: invalid choice: 'round'"),
    (["--workdir", ".", "--weights", "worst"], "--weights: invalid choice: 'worst'"),
])
def test_bad_flags_exit_2_with_one_line(argv, fragment, capsys):
    with pytest.raises(SystemExit) as info:
        fit_sampler.main(argv)
    assert info.value.code == 2
    assert fragment in capsys.readouterr().err


def test_not_a_run_is_one_line(tmp_path, capsys):
    assert fit_sampler.main(["--workdir", str(tmp_path)]) == 1
    assert capsys.readouterr().err == (f"error: {tmp_path} is not a run directory: config.json is missing "
                                       "(pass the --workdir that trainers.fit wrote)\n")


def test_a_damaged_sampler_file_says_how_to_refit(finished_run, tmp_path):
    import shutil

    workdir = tmp_path / "damaged"
    shutil.copytree(finished_run, workdir)
    RunDir(workdir).sampler_file().write_bytes(b"\x00" * 10)
    with pytest.raises(RunDirError, match=f"refit it with: python -m trainers.fit_sampler --workdir {workdir}$"):
        runs.load_sampler(workdir)
    with pytest.raises(RunDirError, match="refit it with"):
        runs.load_model(workdir)
    assert Path(RunDir(workdir).sampler_file()).read_bytes() == b"\x00" * 10
    # ... and the command it names does refit it.
    assert fit_sampler.main(["--workdir", str(workdir), "--components", "2"]) == 0
    assert runs.load_model(workdir)[0].latent_sampler.n_components == 2
