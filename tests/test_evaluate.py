"""``python -m trainers.evaluate`` and ``evae_tf.evaluation`` on a tiny trained run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from idx_fixtures import write_mnist_dir
from test_metrics import fake_inception_graph_def

from evae_tf import data, evaluation, runs, training
from evae_tf.cli import EXIT_FAILURE
from evae_tf.config import ModelConfig, TrainConfig
from evae_tf.data import network
from trainers import evaluate

ROOT = Path(__file__).resolve().parents[1]
N_TEST = 40


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("fashion-mnist")
    write_mnist_dir(directory, n_train=48, n_test=N_TEST)
    return directory


@pytest.fixture(scope="module")
def run(data_dir, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("runs") / "evae"
    config = TrainConfig(dataset="fashion_mnist", model=ModelConfig(latent_dim=4), epochs=1,
                         batch_size=16, steps_per_epoch=2, data_dir=str(data_dir), workdir=str(workdir))
    training.train(config, verbose=0)
    return workdir


@pytest.fixture
def offline(monkeypatch, tmp_path):
    monkeypatch.setattr(network, "reachable", lambda *a, **k: False)
    monkeypatch.delenv(evaluation.ENV_FID_WEIGHTS, raising=False)
    monkeypatch.setenv(evaluation.ENV_CACHE_DIR, str(tmp_path / "cache"))
    return tmp_path / "cache"


def read_metrics(workdir) -> dict:
    return json.loads((Path(workdir) / "metrics.json").read_text())


def test_evaluate_writes_metrics_json_with_a_named_domain_fid(run, offline, capsys):
    assert evaluate.main(["--workdir", str(run), "--fid", "domain"]) == 0
    out = capsys.readouterr().out
    result = read_metrics(run)
    assert set(result) >= {"holdout", "sharpness", "fid", "num_images", "support", "epochs",
                           "evaluation_seconds", "dataset", "model", "latent_dim"}
    assert result["num_images"] == N_TEST and result["epochs"] == 1 and result["batch_size"] == 16
    assert set(result["holdout"]) == {"loss", "reconstruction", "penalty", "penalty_name"}
    assert result["holdout"]["penalty_name"] == "kernel"
    assert result["holdout"]["loss"] == pytest.approx(
        result["holdout"]["reconstruction"] + result["holdout"]["penalty"], rel=1e-5)
    for key in ("reconstruction", "prior_samples", "expost_samples"):
        entry = result["fid"][key]
        assert entry["network"] == "domain" and entry["num_images"] == N_TEST
        assert np.isfinite(entry["fid"]) and "fewer than 10,000" in entry["warning"]
    assert "labels" in result["fid"]["description"]
    assert result["support"]["mode"] == "learned" and result["support"]["prior"]["min"] > 0

    # Sharpness: means over the whole hold-out set, of deterministic reconstructions.
    data_dir = TrainConfig.load(str(run / "config.json")).data_dir
    images = data.load_arrays("fashion_mnist", "holdout", data_dir=data_dir)
    model, _ = runs.load_model(run)
    assert result["sharpness"]["holdout"] == pytest.approx(float(evaluation.sharpness(images)), rel=1e-5)
    assert result["sharpness"]["reconstruction"] == pytest.approx(
        float(evaluation.sharpness(model.reconstruct(images))), rel=1e-4)

    # Each sampler is named, measured and shown: the prior and the run's ex-post mixture.
    assert result["samplers"]["prior_samples"]["kind"] == "prior"
    assert result["samplers"]["expost_samples"]["kind"] == "gaussian_mixture"
    assert result["samplers"]["expost_samples"]["n_examples"] == 48
    assert result["sharpness"]["expost_samples"] > 0
    assert result["sharpness"]["expost_samples"] != result["sharpness"]["prior_samples"]
    # ... each the mean sharpness of its samples: batch i of n hold-out images draws n
    # samples, seeded from (sample seed, i), the same seeds for both samplers.
    assert model.latent_sampler.spec() == result["samplers"]["expost_samples"]  # kept in the run
    seeds = [evaluation.evaluate._sample_seed(result["sample_seed"], i) for i in range(3)]
    for key, sampler in (("prior_samples", "prior"), ("expost_samples", model.latent_sampler)):
        samples = [model.generate(n, seed=seed, sampler=sampler)
                   for seed, n in zip(seeds, (16, 16, N_TEST - 32), strict=True)]
        expected = np.mean(np.concatenate([evaluation.sharpness_per_image(x) for x in samples]))
        assert result["sharpness"][key] == pytest.approx(float(expected), rel=1e-4)
    for key in ("holdout", "reconstruction", "prior_samples", "expost_samples"):
        from PIL import Image

        with Image.open(result["grids"][key]) as grid_image:  # 8 columns, 1-pixel gaps
            assert grid_image.format == "PNG" and grid_image.size[0] == 8 * 32 + 7
    assert "ex-post samples" in out and "image grids" in out
    assert f"on {N_TEST} hold-out images" in out
    fids = {key: f"{result['fid'][key]['fid']:.2f}"
            for key in ("reconstruction", "prior_samples", "expost_samples")}
    assert (f"FID [domain] : reconstructions {fids['reconstruction']}, prior samples "
            f"{fids['prior_samples']}, ex-post samples {fids['expost_samples']}") in out
    assert "warning       : FID from 40 images per side" in out and "metrics.json" in out


def test_without_inception_weights_fid_is_skipped_and_the_rest_still_runs(run, offline, capsys):
    assert evaluate.main(["--workdir", str(run), "--num-images", "20", "--batch-size", "8"]) == 0
    out = capsys.readouterr().out
    result = read_metrics(run)
    assert result["num_images"] == 20 and result["fid_requested"] == "inception2015"
    with pytest.raises(evaluation.FIDUnavailableError) as unavailable:  # the loader's own reason
        evaluation.fid_network("inception2015")
    for key in ("reconstruction", "prior_samples", "expost_samples"):
        assert result["fid"][key] == {"fid": None, "network": "inception2015",
                                      "skipped": str(unavailable.value)}
    assert np.isfinite(result["holdout"]["loss"]) and result["sharpness"]["holdout"] > 0
    assert f"FID           : skipped: {unavailable.value}\n" in out


def test_fid_none_and_the_inception_graph_path(run, offline, tmp_path, capsys):
    result = evaluation.evaluate_run(run, fid="none", write=False)
    assert result["fid"]["reconstruction"] == {"fid": None, "network": "none",
                                               "skipped": "disabled (--fid none)"}
    graph_def, _ = fake_inception_graph_def()
    graph = tmp_path / "classify_image_graph_def.pb"
    graph.write_bytes(graph_def.SerializeToString())
    assert evaluate.main(["--workdir", str(run), "--fid-weights", str(graph), "--num-images", "16"]) == 0
    entry = read_metrics(run)["fid"]["reconstruction"]
    assert entry["network"] == "inception2015" and entry["num_images"] == 16 and np.isfinite(entry["fid"])
    assert f"FID [inception2015] : reconstructions {entry['fid']:.2f}, prior samples" in capsys.readouterr().out


def test_errors_are_one_line_without_traceback(tmp_path, run, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert evaluate.main(["--workdir", str(empty)]) == EXIT_FAILURE
    err = capsys.readouterr().err
    assert err == (f"error: {empty} is not a run directory: config.json is missing "
                   "(pass the --workdir that trainers.fit wrote)\n")

    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "config.json").write_text((run / "config.json").read_text())
    assert evaluate.main(["--workdir", str(unfinished)]) == EXIT_FAILURE
    err = capsys.readouterr().err
    assert err == (f"error: {unfinished} is not a finished run: model.keras is missing "
                   "(rerun trainers.fit with the same --workdir to finish it; its checkpoints "
                   "are --weights last and best where a command takes --weights)\n")
    assert not (unfinished / "metrics.json").exists()


@pytest.mark.parametrize("flags, expected", [
    (["--workdir", "/nonexistent"], "argument --workdir: '/nonexistent' is not a directory"),
    (["--workdir", ".", "--fid", "fid9"], "argument --fid: invalid choice: 'fid9' (choose from "
                                          "'inception2015', 'keras_inception', 'domain', 'none')"),
    (["--workdir", ".", "--fid-weights", "/nonexistent.pb"], "argument --fid-weights: '/nonexistent.pb' does not exist"),
    (["--workdir", ".", "--num-images", "0"], "argument --num-images: expected a positive int, received '0'"),
])
def test_bad_flags_exit_2_with_one_line(flags, expected, capsys):
    with pytest.raises(SystemExit) as exit_info:
        evaluate.main(flags)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err.strip().splitlines()[-1] == f"python -m trainers.evaluate: error: {expected}"


def test_the_module_runs_as_a_program():
    proc = subprocess.run([sys.executable, "-m", "trainers.evaluate", "--workdir", "/nonexistent"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "is not a directory" in proc.stderr and "Traceback" not in proc.stderr


def test_cli_choices_match_the_library():
    for name in (*evaluation.FID_NETWORKS, "none"):  # every network the library builds, and none
        assert evaluate.build_parser().parse_args(["--workdir", ".", "--fid", name]).fid == name
