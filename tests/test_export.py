"""Tests of ``export.saved_model``: TF Serving SavedModels of trained decoders.

Tiny models (32x32x1, latent_dim 4) trained for a couple of steps on random images,
saved as fake run directories laid out like ``trainers.fit``'s (one test also runs
``trainers.fit`` itself), exported, reloaded with ``tf.saved_model.load`` and served
with ``serving.server``.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from idx_fixtures import write_mnist_dir
from PIL import Image

from evae_tf import models, samplers
from evae_tf.config import ModelConfig, TrainConfig
from evae_tf.runs.rundir import RunDir
from export import saved_model as export_lib
from export.saved_model import ExportError, export_decoder, export_run, main, next_version

ROOT = Path(__file__).resolve().parents[1]
IMAGE_SHAPE = (32, 32, 1)
LATENT_DIM = 4
Z = np.random.default_rng(1).uniform(-1.5, 1.5, (6, LATENT_DIM)).astype(np.float32)
SIGNATURES = {
    "serving_default": (
        {"z": (tf.float32, [None, LATENT_DIM])},
        {"images": (tf.float32, [None, *IMAGE_SHAPE]), "png_bytes": (tf.string, [None])},
    ),
    "sample": (
        {"num_samples": (tf.int32, []), "seed": (tf.int64, [])},
        {
            "z": (tf.float32, [None, LATENT_DIM]),
            "images": (tf.float32, [None, *IMAGE_SHAPE]),
            "png_bytes": (tf.string, [None]),
        },
    ),
}
SIGNATURES["sample_prior"] = SIGNATURES["sample"]


# --- fixtures ------------------------------------------------------------------------------


def make_run(workdir: Path, kind: str, policy: str = "float32"):
    """A run directory like ``trainers.fit`` leaves; returns (workdir, model, best images)."""
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(policy)
    try:
        model = models.build(kind, IMAGE_SHAPE, LATENT_DIM, seed=0)
        model.compile(optimizer=keras.optimizers.Adam(1e-2))
        images = np.random.default_rng(0).uniform(0, 1, (16, *IMAGE_SHAPE)).astype(np.float32)
        checkpoints = workdir / "checkpoints"
        checkpoints.mkdir(parents=True)
        model.fit(images, epochs=1, batch_size=16, verbose=0)
        model.save_weights(checkpoints / "best.weights.h5")
        best_images = model.decode(Z).numpy()
        model.fit(images, epochs=1, batch_size=16, verbose=0)
        model.save_weights(checkpoints / "last.weights.h5")
        model.save(workdir / "model.keras")
        # The run's ex-post sampler (trainers.fit fits one to the training split's latents).
        z = model.sample_posterior(model.encode(images), seed=0).numpy()
        model.latent_sampler = samplers.fit_gaussian_mixture(z, n_components=2, seed=0)
        for weights in ("final", "best", "last"):
            model.latent_sampler.save(RunDir(workdir).sampler_file(weights))
    finally:
        keras.mixed_precision.set_global_policy(previous)
    config = TrainConfig(
        dataset="fashion_mnist",
        model=ModelConfig(kind=kind, image_shape=IMAGE_SHAPE, latent_dim=LATENT_DIM, seed=0),
        epochs=2, batch_size=16, learning_rate=1e-2, precision=policy, workdir=str(workdir),
    )
    config.save(str(workdir / "config.json"))
    (checkpoints / "state.json").write_text(json.dumps({"epoch": 2, "weights": "last.weights.h5"}))
    return workdir, model, best_images


@pytest.fixture(scope="module")
def evae_run(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("runs") / "evae", "evae")


@pytest.fixture(scope="module")
def evae_export(evae_run, tmp_path_factory):
    """The EVAE run exported as ``<base>/1`` with the final weights, and reloaded."""
    workdir, model, _ = evae_run
    base = tmp_path_factory.mktemp("models") / "evae"
    path = export_run(workdir, base)
    return path, tf.saved_model.load(str(path)), model


@pytest.fixture(scope="module")
def vae_export(tmp_path_factory):
    workdir, model, _ = make_run(tmp_path_factory.mktemp("runs") / "vae", "vae")
    path = export_run(workdir, tmp_path_factory.mktemp("models") / "vae")
    return path, tf.saved_model.load(str(path)), model


@pytest.fixture(params=["evae", "vae"])
def exported(request):
    return request.getfixturevalue(f"{request.param}_export")


def serve(loaded, z):
    return {k: v.numpy() for k, v in loaded.signatures["serving_default"](z=tf.constant(z)).items()}


def sample(loaded, num_samples: int, seed: int, signature: str = "sample"):
    outputs = loaded.signatures[signature](
        num_samples=tf.constant(num_samples, tf.int32), seed=tf.constant(seed, tf.int64)
    )
    return {k: v.numpy() for k, v in outputs.items()}


def png_images(png_bytes) -> np.ndarray:
    """[N, H, W, C] in [0, 1] from PNG files (PIL drops the channel axis of grayscale)."""
    pixels = []
    for data in png_bytes:
        image = Image.open(io.BytesIO(data))
        assert image.format == "PNG" and image.size == (IMAGE_SHAPE[1], IMAGE_SHAPE[0])
        pixels.append(np.asarray(image).reshape(IMAGE_SHAPE))
    return np.stack(pixels).astype(np.float32) / 255.0


def cli(*argv: str) -> int:
    return main([str(a) for a in argv])


def entries(path: Path) -> list[str]:
    return sorted(os.listdir(path)) if path.exists() else []


# --- signatures ----------------------------------------------------------------------------


def test_signatures_are_exactly_the_serving_contract(exported):
    _, loaded, _ = exported
    assert set(loaded.signatures) == set(SIGNATURES)
    for name, (inputs, outputs) in SIGNATURES.items():
        function = loaded.signatures[name]
        args, kwargs = function.structured_input_signature
        assert args == ()
        assert {k: (s.dtype, s.shape.as_list()) for k, s in kwargs.items()} == inputs
        assert {k: s.name for k, s in kwargs.items()} == {k: k for k in inputs}
        got = {k: (t.dtype, t.shape.as_list()) for k, t in function.structured_outputs.items()}
        assert got == outputs


def test_saved_model_cli_lists_the_signatures(evae_export):
    path, _, _ = evae_export
    cli_path = ROOT / ".venv" / "bin" / "saved_model_cli"
    if not cli_path.exists():
        pytest.skip("saved_model_cli is not installed in .venv")
    result = subprocess.run(
        [str(cli_path), "show", "--all", "--dir", str(path)],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert result.returncode == 0, result.stderr
    for text in ("signature_def['serving_default']", "signature_def['sample']",
                 "signature_def['sample_prior']",
                 "inputs['z']", "inputs['num_samples']", "inputs['seed']",
                 "outputs['images']", "outputs['png_bytes']", "outputs['z']",
                 "tensorflow/serving/predict"):
        assert text in result.stdout


# --- decoding ------------------------------------------------------------------------------


def test_served_decode_equals_the_keras_decoder(exported):
    _, loaded, model = exported
    outputs = serve(loaded, Z)
    expected = model.decode(Z).numpy()
    assert outputs["images"].dtype == np.float32
    assert outputs["images"].shape == (len(Z), *IMAGE_SHAPE)
    np.testing.assert_allclose(outputs["images"], expected, atol=1e-5)
    assert 0.0 <= outputs["images"].min() and outputs["images"].max() <= 1.0
    pngs = png_images(outputs["png_bytes"])
    assert outputs["png_bytes"].shape == (len(Z),)
    np.testing.assert_allclose(pngs, outputs["images"], atol=0.5 / 255 + 1e-6)


def test_sample_is_deterministic_per_seed_and_matches_model_generate(exported):
    _, loaded, model = exported
    first, again, other = sample(loaded, 8, 3), sample(loaded, 8, 3), sample(loaded, 8, 4)
    for key in ("z", "images", "png_bytes"):
        np.testing.assert_array_equal(first[key], again[key])
    assert not np.allclose(first["z"], other["z"])
    assert not np.allclose(first["images"], other["images"])
    assert first["z"].shape == (8, LATENT_DIM) and first["images"].shape == (8, *IMAGE_SHAPE)
    # The same draws as the run's ex-post sampler in this process, decoded the same way.
    np.testing.assert_allclose(first["z"], model.latent_sampler.sample(8, seed=3).numpy(), atol=1e-6)
    np.testing.assert_allclose(first["images"], model.generate(8, seed=3).numpy(), atol=1e-5)
    np.testing.assert_allclose(png_images(first["png_bytes"]), first["images"], atol=0.5 / 255 + 1e-6)
    # sample_prior: the Keras model's own prior sampler.
    prior = sample(loaded, 8, 3, "sample_prior")
    np.testing.assert_allclose(prior["z"], model.sample_prior(8, seed=3).numpy(), atol=1e-6)
    np.testing.assert_allclose(prior["images"], model.generate(8, seed=3, sampler="prior").numpy(), atol=1e-5)
    assert not np.allclose(prior["z"], first["z"])


def test_evae_prior_is_uniform_on_the_learned_support(evae_export):
    _, loaded, model = evae_export
    half = 0.5 * model.prior_support().numpy()
    assert not np.allclose(half, 0.5)  # training moved B_prior away from its initial 1
    z = sample(loaded, 1024, 0, "sample_prior")["z"]
    assert np.all(np.abs(z) <= half + 1e-6)
    # Fills the box: near both ends of every dimension, uniform mean and variance.
    np.testing.assert_allclose(z.max(axis=0), half, rtol=0.02)
    np.testing.assert_allclose(z.min(axis=0), -half, rtol=0.02)
    np.testing.assert_allclose(z.std(axis=0), 2 * half / np.sqrt(12), rtol=0.1)


def test_vae_prior_is_standard_normal(vae_export):
    _, loaded, _ = vae_export
    z = sample(loaded, 1024, 0, "sample_prior")["z"]  # 4096 draws
    assert z.shape == (1024, LATENT_DIM)
    assert abs(z.mean()) < 4 / np.sqrt(z.size)
    assert abs(z.std() - 1.0) < 4 / np.sqrt(2 * z.size)
    assert np.abs(z).max() > 2.5  # unbounded, unlike the EVAE's box


@pytest.mark.parametrize("num_samples", [0, -1, 1025])
def test_num_samples_out_of_range_is_invalid_argument(evae_export, num_samples):
    _, loaded, _ = evae_export
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"num_samples must be in \[1, 1024\]"):
        sample(loaded, num_samples, 0)
    assert sample(loaded, 1, 0)["images"].shape == (1, *IMAGE_SHAPE)


# --- precision -----------------------------------------------------------------------------


def saved_model_dtypes(path: Path) -> str:
    """The graph, functions and signatures of a SavedModel as text, without the op
    definitions (whose allowed-type lists name DT_HALF whatever the graph uses)."""
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((path / "saved_model.pb").read_bytes())
    (meta_graph,) = proto.meta_graphs
    meta_graph.ClearField("meta_info_def")
    return str(meta_graph)


@pytest.fixture(scope="module")
def mixed_run(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("runs") / "mixed", "evae", policy="mixed_float16")


@pytest.mark.parametrize("weights", ["final", "last"])
def test_mixed_float16_model_exports_float32(mixed_run, tmp_path, weights):
    workdir, model, _ = mixed_run
    assert model.decoder.get_layer("fc").compute_dtype == "float16"
    path = export_run(workdir, tmp_path / "evae", weights=weights)
    assert "DT_HALF" not in saved_model_dtypes(path)
    loaded = tf.saved_model.load(str(path))
    assert all(v.dtype == tf.float32 for v in loaded.variables)
    outputs = serve(loaded, Z)
    assert outputs["images"].dtype == np.float32
    np.testing.assert_allclose(outputs["images"], model.decode(Z).numpy(), atol=1e-3)
    assert keras.mixed_precision.global_policy().name == "float32"  # left as it was


def test_float32_export_has_no_float16(evae_export):
    path, _, _ = evae_export
    assert "DT_HALF" not in saved_model_dtypes(path)


# --- metadata ------------------------------------------------------------------------------


def test_metadata_describes_the_model(evae_export, evae_run):
    path, loaded, model = evae_export
    workdir = evae_run[0]
    meta = json.loads((path / "assets.extra" / "evae_model.json").read_text())
    assert meta["kind"] == "evae"
    assert meta["latent_dim"] == LATENT_DIM
    assert meta["image_shape"] == list(IMAGE_SHAPE)
    assert meta["prior"] == model.prior_spec()
    assert meta["prior"]["distribution"] == "uniform"
    assert meta["training_config"] == json.loads((workdir / "config.json").read_text())
    assert meta["source_workdir"] == str(workdir)
    assert meta["weights"] == "final"
    assert meta["exported_at"].endswith("+00:00")
    assert meta["evae_tf_version"] not in ("", None)
    assert meta["dtype"] == "float32"
    assert meta["max_samples"] == 1024
    # What each sample signature draws from, and how the ex-post sampler was fitted.
    assert meta["samplers"]["sample"] == model.latent_sampler.spec()
    assert meta["samplers"]["sample"]["kind"] == "gaussian_mixture"
    assert meta["samplers"]["sample"]["covariance_type"] == "full"
    assert meta["samplers"]["sample_prior"] == {"kind": "prior", **model.prior_spec()}
    # The recorded signatures are the ones in the SavedModel.
    for name, (inputs, outputs) in SIGNATURES.items():
        recorded = meta["signatures"][name]
        assert recorded["inputs"] == {k: {"dtype": d.name, "shape": s} for k, (d, s) in inputs.items()}
        assert recorded["outputs"] == {k: {"dtype": d.name, "shape": s} for k, (d, s) in outputs.items()}


def test_vae_metadata_prior_is_standard_normal(vae_export):
    path, _, _ = vae_export
    meta = json.loads((path / "assets.extra" / "evae_model.json").read_text())
    assert meta["kind"] == "vae"
    assert meta["prior"] == {"distribution": "normal", "loc": 0.0, "scale": 1.0}


# --- weights -------------------------------------------------------------------------------


@pytest.mark.parametrize("weights", ["best", "last"])
def test_checkpoint_weights(evae_run, tmp_path, weights):
    workdir, model, best_images = evae_run
    path = export_run(workdir, tmp_path / "evae", version=3, weights=weights)
    assert path == tmp_path / "evae" / "3"
    images = serve(tf.saved_model.load(str(path)), Z)["images"]
    expected = best_images if weights == "best" else model.decode(Z).numpy()
    np.testing.assert_allclose(images, expected, atol=1e-5)
    assert not np.allclose(best_images, model.decode(Z).numpy(), atol=1e-3)  # the two differ
    meta = json.loads((path / "assets.extra" / "evae_model.json").read_text())
    assert meta["weights"] == weights


# --- versions, atomicity -------------------------------------------------------------------


def test_next_version(tmp_path):
    assert next_version(tmp_path / "missing") == 1
    assert next_version(tmp_path) == 1
    for name in ("1", "3", "notaversion", ".tmp-export-1-ab", "7.bak"):
        (tmp_path / name).mkdir()
    (tmp_path / "9").write_text("a file, not a version")
    assert next_version(tmp_path) == 4


def test_cli_auto_increments_and_prints_how_to_serve(evae_run, tmp_path, capsys):
    workdir = evae_run[0]
    base = tmp_path / "models" / "evae"
    assert cli("--workdir", workdir, "--model-base-path", base) == 0
    out = capsys.readouterr().out
    assert f"{base / '1'}" in out
    assert f"python -m serving.server --model_name evae --model_base_path {base} --rest_api_port 8501" in out
    assert ("python -m serving.client --url http://localhost:8501 --model evae --num 16 --seed 0 "
            "--out samples.png") in out
    assert f"docker run -p 8501:8501 --mount type=bind,source={base},target=/models/evae" in out
    assert "-e MODEL_NAME=evae -t tensorflow/serving" in out
    assert cli("--workdir", workdir, "--model-base-path", base, "--version", "5") == 0
    assert cli("--workdir", workdir, "--model-base-path", base) == 0
    assert entries(base) == ["1", "5", "6"]
    assert (base / "6" / "saved_model.pb").is_file()


def test_refuses_to_overwrite_a_version(evae_run, tmp_path, capsys):
    workdir = evae_run[0]
    base = tmp_path / "evae"
    (base / "2").mkdir(parents=True)
    (base / "2" / "keep.txt").write_text("mine")
    assert cli("--workdir", workdir, "--model-base-path", base, "--version", "2") == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: version 2 already exists in ")
    assert "Traceback" not in err
    assert entries(base) == ["2"] and entries(base / "2") == ["keep.txt"]
    with pytest.raises(ExportError, match="already exists"):
        export_decoder(evae_run[1], base / "2")
    assert entries(base) == ["2"]


class Boom(Exception):
    pass


@pytest.mark.parametrize("error", [Boom, KeyboardInterrupt])
def test_failed_export_leaves_nothing_behind(evae_run, tmp_path, monkeypatch, error):
    """A failure after the SavedModel files are written, before the rename."""
    workdir = evae_run[0]
    base = tmp_path / "evae"
    (base / "1").mkdir(parents=True)
    written = []

    def fail(*args, **kwargs):
        written.extend(p for p in base.iterdir() if p.name.startswith(".tmp-export-"))
        assert (written[0] / "saved_model.pb").is_file()  # halfway: the model is written
        raise error("disk on fire")

    monkeypatch.setattr(export_lib, "model_metadata", fail)
    with pytest.raises(error, match="disk on fire"):
        export_run(workdir, base)
    assert written and not written[0].exists()
    assert entries(base) == ["1"]


def test_sigterm_during_an_export_removes_the_temporary_directory(evae_run, tmp_path, monkeypatch, capsys):
    base = tmp_path / "evae"

    def terminate(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(10)  # the handler interrupts this
        raise AssertionError("SIGTERM did not interrupt the export")

    monkeypatch.setattr(export_lib, "model_metadata", terminate)
    before = signal.getsignal(signal.SIGTERM)
    assert cli("--workdir", evae_run[0], "--model-base-path", base) == 130
    assert "Interrupted; nothing was exported." in capsys.readouterr().err
    assert entries(base) == []
    assert signal.getsignal(signal.SIGTERM) == before


def test_cli_reports_an_unexpected_failure_in_one_line(evae_run, tmp_path, monkeypatch, capsys):
    def fail(*args, **kwargs):
        raise RuntimeError("disk on fire\nsecond line")

    monkeypatch.setattr(export_lib, "build_archive", fail)
    base = tmp_path / "evae"
    assert cli("--workdir", evae_run[0], "--model-base-path", base) == 1
    err = capsys.readouterr().err
    assert err == "error: export failed: RuntimeError: disk on fire second line\n"
    assert entries(base) == []


# --- bad run directories -------------------------------------------------------------------


def _copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _write_zip(path: Path, files: dict[str, str]) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)


BAD_RUNS = {
    # name: (how to break a copy of the run, arguments, expected message after the path)
    "missing_dir": (lambda run: shutil.rmtree(run), (), "{run} does not exist"),
    "not_a_dir": (lambda run: (shutil.rmtree(run), run.write_text("x")), (), "{run} is not a directory"),
    "missing_config": (
        lambda run: (run / "config.json").unlink(), (),
        "{run} is not a run directory: config.json is missing",
    ),
    "corrupt_config": (
        lambda run: (run / "config.json").write_text("{not json"), (),
        "{run}/config.json is unreadable or corrupt: ",
    ),
    "wrong_config": (
        lambda run: (run / "config.json").write_text('{"dataset": "x", "epochs": -1}'), (),
        "{run}/config.json is unreadable or corrupt: `epochs` must be a positive integer",
    ),
    "missing_model": (
        lambda run: (run / "model.keras").unlink(), (),
        "{run} is not a finished run: model.keras is missing "
        "(rerun trainers.fit with the same --workdir to finish it; its checkpoints "
        "are --weights last and best where a command takes --weights)",
    ),
    "corrupt_model": (
        lambda run: (run / "model.keras").write_bytes(b"PK\x03\x04 truncated"), (),
        "{run}/model.keras is unreadable or corrupt: ",
    ),
    "not_a_keras_model": (
        lambda run: _write_zip(run / "model.keras", {"hello.txt": "not a model"}), (),
        "{run}/model.keras is unreadable or corrupt: ",
    ),
    "mismatched_config": (
        lambda run: TrainConfig(dataset="fashion_mnist", model=ModelConfig(latent_dim=8)).save(
            str(run / "config.json")), (),
        "{run}/model.keras holds a evae with image_shape=(32, 32, 1), latent_dim=4 but config.json "
        "describes a evae with image_shape=(32, 32, 1), latent_dim=8",
    ),
    "missing_best": (
        lambda run: (run / "checkpoints" / "best.weights.h5").unlink(), ("--weights", "best"),
        "{run} has no best weights: checkpoints/best.weights.h5 is missing",
    ),
    "corrupt_last": (
        lambda run: (run / "checkpoints" / "last.weights.h5").write_bytes(b"\x89HDF garbage"),
        ("--weights", "last"),
        "{run}/checkpoints/last.weights.h5 is unreadable or corrupt: ",
    ),
    "corrupt_sampler": (
        lambda run: (run / "expost_sampler.npz").write_bytes(b"PK\x03\x04 truncated"), (),
        "{run}/expost_sampler.npz is not a readable sampler file (",
    ),
    "sampler_without_data": (  # no sampler, and the run's data directory is gone
        lambda run: ((run / "expost_sampler.npz").unlink(), TrainConfig.from_dict(
            {**json.loads((run / "config.json").read_text()), "data_dir": str(run / "gone")}
        ).save(str(run / "config.json"))), (),
        "{run}: the training data to fit the ex-post sampler was not found (",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_RUNS))
def test_bad_run_directory_is_a_one_line_error(evae_run, tmp_path, capsys, case):
    breaks, extra, message = BAD_RUNS[case]
    run = _copy_run(evae_run[0], tmp_path / "run")
    breaks(run)
    base = tmp_path / "models" / "evae"
    assert cli("--workdir", run, "--model-base-path", base, *extra) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: " + message.format(run=run)), err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert entries(base) == []  # nothing written, not even a temporary directory


def test_a_corrupt_sampler_is_refused_with_how_to_refit_and_kept(evae_run, tmp_path, capsys):
    run = _copy_run(evae_run[0], tmp_path / "run")
    (run / "expost_sampler.npz").write_bytes(b"garbage")
    assert cli("--workdir", run, "--model-base-path", tmp_path / "m") == 1
    err = capsys.readouterr().err
    assert f"refit it with: python -m trainers.fit_sampler --workdir {run}" in err
    assert (run / "expost_sampler.npz").read_bytes() == b"garbage"  # never replaced silently


def test_a_run_without_a_sampler_gets_one_fitted_on_export(evae_run, tmp_path):
    run = _copy_run(evae_run[0], tmp_path / "run")
    (run / "expost_sampler.npz").unlink()
    write_mnist_dir(tmp_path / "data", n_train=40, n_test=10)
    config = json.loads((run / "config.json").read_text())
    TrainConfig.from_dict({**config, "data_dir": str(tmp_path / "data")}).save(str(run / "config.json"))
    path = export_run(run, tmp_path / "models")
    fitted = samplers.GaussianMixtureSampler.load(run / "expost_sampler.npz")  # kept in the run
    assert fitted.n_components == 10 and fitted.fit_info["n_examples"] == 40
    meta = json.loads((path / "assets.extra" / "evae_model.json").read_text())
    assert meta["samplers"]["sample"] == fitted.spec()
    loaded = tf.saved_model.load(str(path))
    np.testing.assert_allclose(sample(loaded, 4, 1)["z"], fitted.sample(4, seed=1).numpy(), atol=1e-6)


def test_export_decoder_refuses_a_model_without_a_sampler(tmp_path):
    model = models.build("vae", IMAGE_SHAPE, LATENT_DIM, seed=0)
    with pytest.raises(ExportError, match="no ex-post sampler"):
        export_decoder(model, tmp_path / "1")
    wrong = samplers.GaussianMixtureSampler([1.0], [[0.0, 0.0]], [np.eye(2)])
    with pytest.raises(ExportError, match="draws 2-dimensional latents; the model's latent_dim is 4"):
        export_decoder(model, tmp_path / "1", sampler=wrong)
    assert not (tmp_path / "1").exists()


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--workdir", "r"],
        ["--workdir", "r", "--model-base-path", "m", "--weights", "worst"],
        ["--workdir", "r", "--model-base-path", "m", "--version", "0"],
        ["--workdir", "r", "--model-base-path", "m", "--version", "two"],
    ],
)
def test_usage_errors_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert "usage:" in capsys.readouterr().err


def test_library_argument_errors(evae_run, tmp_path):
    workdir, model, _ = evae_run
    with pytest.raises(ExportError, match="unknown weights 'worst'"):
        export_run(workdir, tmp_path / "m", weights="worst")
    with pytest.raises(ExportError, match="version must be a positive integer"):
        export_run(workdir, tmp_path / "m", version=0)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ExportError, match="is not a directory"):
        export_run(workdir, tmp_path / "file")
    with pytest.raises(ExportError, match="expected an EVAE or VAE"):
        export_decoder(model.decoder, tmp_path / "m" / "1")
    assert not (tmp_path / "m").exists()


# --- end to end ----------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_export_then_serve_and_fetch_a_grid(evae_export, protocol):
    """The headline path: export, serve, ask ``sample`` (ex-post) and ``sample_prior``."""
    from evae_tf.images import grid
    from serving.client import ServingClient
    from serving.config import single_model_config
    from serving.server import ModelServer

    path, _, model = evae_export
    config = single_model_config("evae", path.parent)
    with ModelServer([config], port=0, grpc_port=0, poll_wait_seconds=0) as server:
        url = server.url if protocol == "rest" else f"grpc://{server.grpc_address}"
        with ServingClient(url, "evae") as client:
            status = client.status()["model_version_status"]
            assert [(s["version"], s["state"]) for s in status] == [("1", "AVAILABLE")]
            images = client.sample(16, seed=0)
            prior = client.sample(16, seed=0, signature_name="sample_prior")
            decoded = client.decode(Z)
    assert images.shape == (16, *IMAGE_SHAPE)
    np.testing.assert_allclose(images, model.generate(16, seed=0).numpy(), atol=1 / 255)  # ex-post
    np.testing.assert_allclose(prior, model.generate(16, seed=0, sampler="prior").numpy(), atol=1 / 255)
    np.testing.assert_allclose(decoded, model.decode(Z).numpy(), atol=1 / 255)
    assert grid(images).shape == (128, 128, 1)


def test_a_trainers_fit_run_exports(tmp_path, capsys):
    """The real run layout: ``trainers.fit`` for one epoch, then every ``--weights``."""
    from trainers import fit

    data_dir = tmp_path / "fashion-mnist"
    write_mnist_dir(data_dir, n_train=32, n_test=16)
    workdir = tmp_path / "run"
    code = fit.main(["--dataset", "fashion_mnist", "--data-dir", str(data_dir), "--workdir", str(workdir),
                     "--epochs", "1", "--batch-size", "16", "--latent-dim", "4", "--verbose", "0"])
    assert code == 0
    base = tmp_path / "models" / "evae"
    for weights in ("final", "best", "last"):
        assert cli("--workdir", workdir, "--model-base-path", base, "--weights", weights) == 0
    assert entries(base) == ["1", "2", "3"]
    images = [serve(tf.saved_model.load(str(base / v)), Z)["images"] for v in ("1", "2", "3")]
    np.testing.assert_allclose(images[1], images[0], atol=1e-6)  # one epoch: all the same weights
    np.testing.assert_allclose(images[2], images[0], atol=1e-6)
    meta = json.loads((base / "1" / "assets.extra" / "evae_model.json").read_text())
    assert meta["training_config"]["dataset"] == "fashion_mnist"
    assert meta["training_config"]["model"]["latent_dim"] == 4


def test_the_command_line_names_the_run_layout_without_loading_tensorflow():
    # The run directory's layout has one owner (evae_tf.runs.rundir); reading it must not load
    # TensorFlow, so that --help and usage errors stay fast.
    code = ("import sys; from export import saved_model; saved_model.build_parser().format_help(); "
            "from evae_tf.runs.rundir import MODEL_FILE; assert MODEL_FILE == 'model.keras'; "
            "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, 'loaded'")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parents[1], timeout=60)
    assert result.returncode == 0, result.stderr
