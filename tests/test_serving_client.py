"""Tests of ``serving.client``: the library, the PNG and file helpers it uses, and the
command line.

They run over REST and over gRPC (the ``endpoint`` fixture), against ``serving.server``
started in-process with the fixture models of ``tests/serving_fixtures.py``, or, with
``TF_SERVING_URL`` / ``TF_SERVING_GRPC`` set, against that server (which must serve the
same fixture models; see ``tests/test_serving_server.py``).
"""

from __future__ import annotations

import gc
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import orjson
import pytest
from PIL import Image
from serving_fixtures import EVAE, VAE
from werkzeug.serving import make_server
from werkzeug.wrappers import Response

import serving.client
from evae_tf.files import write_bytes_atomic
from evae_tf.images import encode_png, grid
from serving.client import ServingClient, ServingError, from_json_value, images_from_outputs, loads

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def client(endpoint):
    with ServingClient(endpoint, "evae") as client:
        yield client


@pytest.fixture
def refused_url():
    """A URL on which nothing listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# --------------------------------------------------------------------------------------
# Library
# --------------------------------------------------------------------------------------


def test_status_and_metadata(client):
    versions = [s["version"] for s in client.status()["model_version_status"]]
    assert versions == ["2", "1"]
    metadata = client.metadata()
    assert metadata["model_spec"]["version"] == "2"
    assert "sample" in metadata["metadata"]["signature_def"]["signature_def"]


def test_sample_gives_images_in_unit_range(client):
    images = client.sample(5, seed=0)
    assert images.shape == (5, *EVAE.image_shape)
    assert images.dtype == np.float32
    assert 0.0 <= images.min() and images.max() <= 1.0
    np.testing.assert_array_equal(client.sample(5, seed=0), images)
    assert not np.array_equal(client.sample(5, seed=1), images)


def test_sample_images_match_the_float_output(client):
    outputs = client.sample_outputs(4, seed=2)
    np.testing.assert_allclose(
        client.sample(4, seed=2), np.asarray(outputs["images"], np.float32), atol=1 / 255
    )


def test_decode_matches_sampled_latents(client):
    outputs = client.sample_outputs(3, seed=5)
    decoded = client.decode(np.asarray(outputs["z"]))
    assert decoded.shape == (3, *EVAE.image_shape)
    np.testing.assert_array_equal(decoded, client.sample(3, seed=5))


def test_version_pinning(endpoint, client):
    with ServingClient(endpoint, "evae", version=1) as pinned:
        assert [s["version"] for s in pinned.status()["model_version_status"]] == ["1"]
        assert not np.array_equal(pinned.sample(2, 0), client.sample(2, 0))


def test_rgb_model(endpoint):
    with ServingClient(endpoint, "vae") as client:
        assert client.sample(2, 0).shape == (2, *VAE.image_shape)


def test_server_errors_carry_status_and_message(endpoint, client):
    with ServingClient(endpoint, "nope") as missing, pytest.raises(ServingError) as info:
        missing.sample(2, 0)
    assert info.value.code == "NOT_FOUND"
    assert info.value.status == (404 if client.protocol == "rest" else "NOT_FOUND")
    assert info.value.message == "Servable not found for request: Latest(nope)"
    prefix = "HTTP 404" if client.protocol == "rest" else "gRPC NOT_FOUND"
    assert str(info.value) == f"{prefix}: Servable not found for request: Latest(nope)"
    with pytest.raises(ServingError) as info:
        client.sample(0, 0)
    assert info.value.code == "INVALID_ARGUMENT"
    assert "num_samples must be in [1, 1024]" in info.value.message
    with pytest.raises(ServingError) as info:
        client.decode(np.zeros((2, 3)))  # latent_dim is 4
    assert info.value.code == "INVALID_ARGUMENT"
    with pytest.raises(ServingError) as info:
        client.sample(2, 0, signature_name="nope")
    assert info.value.message == 'Serving signature name: "nope" not found in signature def'


def test_protocols_give_the_same_samples(base_url, grpc_address):
    with ServingClient(base_url, "evae") as rest, ServingClient(
        f"grpc://{grpc_address}", "evae"
    ) as grpc:
        over_rest, over_grpc = rest.sample_outputs(3, 7), grpc.sample_outputs(3, 7)
        # REST's JSON numbers read back as float32 are the exact tensors gRPC sends
        np.testing.assert_array_equal(np.float32(over_rest["images"]), over_grpc["images"])
        np.testing.assert_array_equal(np.float32(over_rest["z"]), over_grpc["z"])
        assert over_rest["png_bytes"] == over_grpc["png_bytes"]
        assert rest.status() == grpc.status()
        assert rest.metadata() == grpc.metadata()


def test_sample_picks_the_signature(client):
    """``sample_prior`` (the paper's prior) beside ``sample`` (the ex-post sampler)."""
    signatures = client.metadata()["metadata"]["signature_def"]["signature_def"]
    assert {"sample", "sample_prior"} <= set(signatures)
    prior = client.sample_outputs(4, 3, signature_name="sample_prior")
    expost = client.sample_outputs(4, 3)
    assert np.asarray(prior["images"]).shape == (4, *EVAE.image_shape)
    # The fixture's sample draws 1 + 2 eps from the same eps as sample_prior's.
    np.testing.assert_allclose(np.asarray(expost["z"]), 1.0 + 2.0 * np.asarray(prior["z"]), rtol=1e-6)
    np.testing.assert_array_equal(
        client.sample(4, 3, signature_name="sample_prior"), client.sample(4, 3, "sample_prior")
    )


def test_unreachable_server(refused_url):
    with pytest.raises(ServingError) as info:
        ServingClient(refused_url, "evae").status()
    assert info.value.status is None
    assert info.value.message == f"cannot reach {refused_url}: connection refused"


def test_unreachable_grpc_server(refused_url):
    address = refused_url.removeprefix("http://")
    with pytest.raises(ServingError) as info:
        ServingClient(f"grpc://{address}", "evae", timeout=5).status()
    assert info.value.status is None
    assert info.value.message.startswith(f"cannot reach grpc://{address}: ")
    assert "\n" not in info.value.message


def test_constructor_checks_arguments():
    with pytest.raises(ValueError, match="url must start with http:// or https://. Received: url=.*For gRPC: grpc://"):
        ServingClient("localhost:8501", "evae")
    with pytest.raises(ValueError, match="model must be a non-empty name"):
        ServingClient("http://localhost:8501", "")


# --------------------------------------------------------------------------------------
# Grid, PNGs and files (``evae_tf.images``, ``evae_tf.files``, ``images_from_outputs``)
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "n, ncols, grid_shape",
    [(16, None, (4, 4)), (5, None, (2, 3)), (3, None, (2, 2)), (1, None, (1, 1)), (6, 6, (1, 6))],
)
def test_grid_layout(n, ncols, grid_shape):
    images = np.random.default_rng(0).random((n, 3, 2, 1)).astype(np.float32)
    tiled = grid(images, ncols)
    rows, cols = grid_shape
    assert tiled.shape == (rows * 3, cols * 2, 1)
    for index in range(n):
        row, col = divmod(index, cols)
        np.testing.assert_array_equal(
            tiled[row * 3 : row * 3 + 3, col * 2 : col * 2 + 2], images[index]
        )
    assert tiled[rows * 3 - 3 :, (n - (rows - 1) * cols) * 2 :].sum() == 0  # empty cells


def test_grid_padding_and_errors():
    tiled = grid(np.ones((4, 2, 2, 3)), padding=1)
    assert tiled.shape == (5, 5, 3)
    assert tiled[2].sum() == 0 and tiled[:, 2].sum() == 0
    with pytest.raises(ValueError, match="non-empty"):
        grid(np.ones((0, 2, 2, 1)))
    with pytest.raises(ValueError, match="ncols must be >= 1"):
        grid(np.ones((2, 2, 2, 1)), ncols=0)


def test_png_round_trip_through_images_from_outputs():
    rgb = np.random.default_rng(1).integers(0, 256, (4, 5, 3), dtype=np.uint8)
    gray = np.linspace(0, 1, 20, dtype=np.float32).reshape(4, 5, 1)
    [decoded_rgb] = images_from_outputs({"png_bytes": [encode_png(rgb)]})
    np.testing.assert_array_equal(np.round(decoded_rgb * 255), rgb)
    decoded_gray = images_from_outputs({"png_bytes": [encode_png(gray)] * 2})
    assert decoded_gray.shape == (2, 4, 5, 1) and decoded_gray.dtype == np.float32
    np.testing.assert_array_equal(np.round(decoded_gray[1] * 255), np.round(gray * 255))


def test_images_from_outputs_falls_back_and_reports_bad_outputs():
    images = np.zeros((2, 3, 3, 1), np.float32)
    np.testing.assert_array_equal(images_from_outputs({"images": images.tolist()}), images)
    with pytest.raises(ServingError, match="png_bytes are not PNG images") as info:
        images_from_outputs({"png_bytes": [b"not a png"]})
    assert info.value.status == 200
    with pytest.raises(ServingError, match="no 'png_bytes' or 'images'"):
        images_from_outputs({"z": []})


@pytest.mark.parametrize("enabled", [True, False])
def test_loads_parses_without_collections_and_restores_the_collector(enabled, monkeypatch):
    """A 16-image answer (~17k lists) is parsed with no cyclic collection; the collector is
    left as it was, after good JSON, TF Serving's NaN tokens and non-JSON alike."""
    body = (b'{"outputs": {"images": '
            + str(np.full((16, 32, 32, 1), 0.5).tolist()).encode() + b"}}")
    parsing = []

    def spied_loads(content):  # orjson's parse, marked, to tell collections inside it
        parsing.append(True)
        try:
            return orjson.loads(content)
        finally:
            parsing.pop()

    monkeypatch.setattr(serving.client, "orjson", SimpleNamespace(
        loads=spied_loads, JSONDecodeError=orjson.JSONDecodeError))
    collections = []  # for each collection: did it run inside the parse?
    gc.callbacks.append(lambda phase, info: collections.append(bool(parsing)))
    (gc.enable if enabled else gc.disable)()
    try:
        doc = loads(body)
        assert gc.isenabled() == enabled
        assert np.asarray(doc["outputs"]["images"]).shape == (16, 32, 32, 1)
        assert np.isnan(loads(b'{"x": NaN}')["x"]) and gc.isenabled() == enabled
        assert loads(b"<html>") is None and gc.isenabled() == enabled
        gc.collect()
    finally:
        gc.callbacks.pop()
        gc.enable()
    assert collections and True not in collections  # the callback saw collections, none inside


def test_from_json_value_decodes_b64_and_leaves_numeric_tensors_alone():
    images = [[[0.5], [0.25]], [[1.0], [0.0]]]
    assert from_json_value(images) is images  # a numeric tensor: not walked, not copied
    rows = [{"png_bytes": {"b64": "UE5H"}, "z": [1.0, 2.0]}, {"png_bytes": {"b64": "AA=="}, "z": [3.0, 4.0]}]
    assert from_json_value(rows) == [{"png_bytes": b"PNG", "z": [1.0, 2.0]}, {"png_bytes": b"\0", "z": [3.0, 4.0]}]
    columns = {"png_bytes": [{"b64": "UE5H"}], "empty": [], "name": "x"}
    assert from_json_value(columns) == {"png_bytes": [b"PNG"], "empty": [], "name": "x"}


def test_write_bytes_atomic_replaces_and_leaves_no_temp_files(tmp_path):
    target = tmp_path / "sub" / "file.png"
    write_bytes_atomic(target, b"one")
    write_bytes_atomic(target, b"two")
    assert target.read_bytes() == b"two"
    assert os.listdir(target.parent) == ["file.png"]


# --------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------


def run_client(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "serving.client", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


def last_line(result: subprocess.CompletedProcess) -> str:
    """The CLI's message: over gRPC, TensorFlow (the protos' package) logs lines first."""
    return result.stderr.strip().splitlines()[-1]


def test_cli_writes_grid_and_individual_pngs(endpoint, tmp_path):
    out = tmp_path / "grid.png"
    result = run_client(
        "--url", endpoint, "--model", "evae", "--num", "6", "--seed", "0",
        "--out", str(out), "--individual-dir", str(tmp_path / "each"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    height, width, _ = EVAE.image_shape
    with Image.open(out) as png:
        assert png.size == (3 * width, 2 * height)  # 6 images: 2 rows of 3
        assert png.mode == "L"
        pixels = np.asarray(png)
    files = sorted((tmp_path / "each").iterdir())
    assert [f.name for f in files] == [f"{i:04d}.png" for i in range(6)]
    with ServingClient(endpoint, "evae") as client:
        images = client.sample(6, seed=0)
    [fifth] = images_from_outputs({"png_bytes": [files[4].read_bytes()]})
    np.testing.assert_array_equal(fifth, images[4])
    fifth_pixels = np.round(fifth[..., 0] * 255)
    np.testing.assert_array_equal(pixels[height:, width : 2 * width], fifth_pixels)
    assert sorted(os.listdir(tmp_path)) == ["each", "grid.png"]  # no temp files left


def test_cli_rgb_model_and_pinned_version(endpoint, tmp_path):
    out = tmp_path / "vae.png"
    result = run_client(
        "--url", endpoint, "--model", "vae", "--version", "1", "--num", "4", "--out", str(out)
    )
    assert result.returncode == 0, result.stderr
    height, width, _ = VAE.image_shape
    with Image.open(out) as png:
        assert (png.size, png.mode) == ((2 * width, 2 * height), "RGB")


def test_cli_decodes_given_latents(endpoint, tmp_path):
    z = np.random.default_rng(0).normal(size=(3, EVAE.latent_dim)).astype(np.float32)
    np.save(tmp_path / "z.npy", z)
    out = tmp_path / "decoded.png"
    result = run_client("--url", endpoint, "--latent", str(tmp_path / "z.npy"), "--out", str(out))
    assert result.returncode == 0, result.stderr
    with ServingClient(endpoint, "evae") as client:
        expected = grid(client.decode(z))
    with Image.open(out) as png:
        np.testing.assert_array_equal(np.asarray(png), np.round(expected[..., 0] * 255))


def test_cli_grpc_flag_and_signature(grpc_address, tmp_path):
    out = tmp_path / "grid.png"
    result = run_client("--grpc", grpc_address, "--num", "4", "--seed", "3", "--out", str(out))
    assert result.returncode == 0, result.stderr
    with ServingClient(f"grpc://{grpc_address}", "evae") as client:
        expected = grid(client.sample(4, seed=3))
    with Image.open(out) as png:
        np.testing.assert_array_equal(np.asarray(png), np.round(expected[..., 0] * 255))
    result = run_client("--grpc", grpc_address, "--signature", "nope", "--out", str(out))
    assert result.returncode == 1
    assert last_line(result) == 'error: Serving signature name: "nope" not found in signature def'


def test_cli_unreachable_server(refused_url, tmp_path):
    out = tmp_path / "grid.png"
    result = run_client("--url", refused_url, "--out", str(out))
    assert result.returncode == 1
    assert result.stderr.strip() == f"error: cannot reach {refused_url}: connection refused"
    assert not out.exists()


def test_cli_unknown_model(endpoint, tmp_path):
    result = run_client("--url", endpoint, "--model", "nope", "--out", str(tmp_path / "g.png"))
    assert result.returncode == 1
    assert last_line(result) == "error: Servable not found for request: Latest(nope)"
    assert "Traceback" not in result.stderr


def test_cli_bad_response(tmp_path):
    def app(environ, start_response):
        return Response("<html>not TF Serving</html>", content_type="text/html")(
            environ, start_response
        )

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        result = run_client("--url", url, "--out", str(tmp_path / "g.png"))
    finally:
        server.shutdown()
        thread.join()
    assert result.returncode == 1
    assert result.stderr.startswith(
        f"error: bad response from {url}/v1/models/evae:predict: not JSON"
    )
    assert "Traceback" not in result.stderr


def test_cli_argument_errors(tmp_path):
    result = run_client("--num", "4", "--latent", str(tmp_path / "z.npy"))
    assert result.returncode == 2
    assert "error: argument --latent: not allowed with argument --num" in result.stderr
    result = run_client("--latent", str(tmp_path / "missing.npy"))
    assert result.returncode == 1
    assert result.stderr.startswith("error: cannot read --latent")
