"""TF Serving REST contract tests, and tests of ``serving.server`` itself.

The contract tests (docs/serving.md) run against a base URL:

* by default, ``serving.server`` started in-process on a free port, serving the
  fixture models of ``tests/serving_fixtures.py`` through their ``models.config``;
* with ``TF_SERVING_URL`` set (e.g. ``http://localhost:8501``), against that server
  instead, which must serve the same fixture models (``evae`` versions 1 and 2, all
  versions loaded, and ``vae``)::

      python tests/serving_fixtures.py /tmp/tfs_models
      docker run --rm -p 8501:8501 -v /tmp/tfs_models:/models -t tensorflow/serving \\
          --model_config_file=/models/models.config
      TF_SERVING_URL=http://localhost:8501 pytest tests/test_serving_server.py

  Tests of this server's own machinery (flags, config parsing, polling, limits,
  timeouts) are skipped then.
"""

from __future__ import annotations

import base64
import concurrent.futures
import io
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import requests
import tensorflow as tf
from PIL import Image
from serving_fixtures import EVAE, TF_SERVING_URL, VAE, fixture_models_dir

from serving import rest
from serving.config import (
    ModelConfigError,
    parse_model_config,
    read_model_config_file,
    select_versions,
    single_model_config,
)
from serving.core import Servable, Signature
from serving.server import ModelServer

REPO = Path(__file__).resolve().parents[1]
local_only = pytest.mark.skipif(
    TF_SERVING_URL is not None, reason="tests serving.server itself, not the contract"
)
Z = [[0.5, -1.0, 0.25, 2.0], [0.0, 0.1, -0.3, 1.5]]


def get(base_url: str, path: str) -> requests.Response:
    return requests.get(base_url + path, timeout=30)


def post(base_url: str, path: str, body) -> requests.Response:
    data = body if isinstance(body, str | bytes) else json.dumps(body)
    return requests.post(base_url + path, data=data, timeout=30)


def assert_error(response: requests.Response, status: int, message: str | None = None) -> str:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    if message is not None:
        assert body["error"] == message
    return body["error"]


def sample(base_url: str, num: int, seed: int, model: str = "evae", version: int | None = None):
    path = f"/v1/models/{model}" + (f"/versions/{version}" if version else "") + ":predict"
    body = {"signature_name": "sample", "inputs": {"num_samples": num, "seed": seed}}
    response = post(base_url, path, body)
    assert response.status_code == 200, response.text
    return response.json()["outputs"]


def png_to_array(b64: str) -> np.ndarray:
    with Image.open(io.BytesIO(base64.b64decode(b64))) as image:
        pixels = np.asarray(image)
    return pixels[..., None] if pixels.ndim == 2 else pixels


# --------------------------------------------------------------------------------------
# Status and metadata
# --------------------------------------------------------------------------------------


def test_status_lists_versions_highest_first(base_url):
    response = get(base_url, "/v1/models/evae")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    ok = {"error_code": "OK", "error_message": ""}
    assert response.json() == {
        "model_version_status": [
            {"version": "2", "state": "AVAILABLE", "status": ok},
            {"version": "1", "state": "AVAILABLE", "status": ok},
        ]
    }


def test_status_of_one_version(base_url):
    response = get(base_url, "/v1/models/evae/versions/1")
    assert response.status_code == 200
    [entry] = response.json()["model_version_status"]
    assert entry["version"] == "1" and entry["state"] == "AVAILABLE"


def test_status_of_second_model(base_url):
    response = get(base_url, "/v1/models/vae")
    assert response.status_code == 200
    assert [s["version"] for s in response.json()["model_version_status"]] == ["1"]


@pytest.mark.parametrize(
    "path, status, message",
    [
        ("/v1/models/nope", 404, "Could not find any versions of model nope"),
        ("/v1/models/evae/versions/7", 404, "Could not find version 7 of model evae"),
        ("/v1/models", 400, "Missing model name in request."),
        ("/v1/foo", 400, "Malformed request: GET /v1/foo"),
        ("/v1/models/evae:predict", 400, "Malformed request: GET /v1/models/evae:predict"),
        ("/v1/models/evae/versions/x", 400, "Malformed request: GET /v1/models/evae/versions/x"),
        (
            "/v1/models/evae/versions/99999999999999999999",
            400,
            "Failed to convert version: 99999999999999999999 to numeric.",
        ),
        ("/v1/models/nope/metadata", 404, "Servable not found for request: Latest(nope)"),
        (
            "/v1/models/evae/versions/7/metadata",
            404,
            "Servable not found for request: Specific(evae, 7)",
        ),
        (
            "/v1/models/..%2F..%2Fetc",
            404,
            "Could not find any versions of model ../../etc",
        ),
    ],
)
def test_get_errors(base_url, path, status, message):
    assert_error(get(base_url, path), status, message)


def _dims(*sizes):
    return {"dim": [{"size": str(s), "name": ""} for s in sizes], "unknown_rank": False}


def test_metadata_lists_signatures(base_url):
    response = get(base_url, "/v1/models/evae/metadata")
    assert response.status_code == 200
    body = response.json()
    assert body["model_spec"] == {"name": "evae", "signature_name": "", "version": "2"}
    signatures = body["metadata"]["signature_def"]["signature_def"]
    default = signatures["serving_default"]
    assert default["method_name"] == "tensorflow/serving/predict"
    z = default["inputs"]["z"]
    assert (z["dtype"], z["tensor_shape"]) == ("DT_FLOAT", _dims(-1, EVAE.latent_dim))
    height, width, channels = EVAE.image_shape
    outputs = default["outputs"]
    assert outputs["images"]["dtype"] == "DT_FLOAT"
    assert outputs["images"]["tensor_shape"] == _dims(-1, height, width, channels)
    assert outputs["png_bytes"]["dtype"] == "DT_STRING"
    assert outputs["png_bytes"]["tensor_shape"] == _dims(-1)
    assert all("name" in info for info in [z, *outputs.values()])
    sample_inputs = signatures["sample"]["inputs"]
    assert sample_inputs["num_samples"]["dtype"] == "DT_INT32"
    assert sample_inputs["seed"]["dtype"] == "DT_INT64"
    assert sample_inputs["seed"]["tensor_shape"] == _dims()
    assert set(signatures["sample"]["outputs"]) == {"z", "images", "png_bytes"}


def test_metadata_of_pinned_version(base_url):
    body = get(base_url, "/v1/models/evae/versions/1/metadata").json()
    assert body["model_spec"]["version"] == "1"


# --------------------------------------------------------------------------------------
# Predict
# --------------------------------------------------------------------------------------


def test_predict_row_format_gives_one_object_per_instance(base_url):
    response = post(base_url, "/v1/models/evae:predict", {"instances": Z})
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert len(predictions) == len(Z)
    for row in predictions:
        assert set(row) == {"images", "png_bytes"}
        assert np.asarray(row["images"]).shape == EVAE.image_shape
        assert set(row["png_bytes"]) == {"b64"}


def test_predict_columnar_format_gives_whole_tensors(base_url):
    response = post(base_url, "/v1/models/evae:predict", {"inputs": Z})
    assert response.status_code == 200, response.text
    outputs = response.json()["outputs"]
    assert set(outputs) == {"images", "png_bytes"}
    assert np.asarray(outputs["images"]).shape == (len(Z), *EVAE.image_shape)
    assert [set(p) for p in outputs["png_bytes"]] == [{"b64"}] * len(Z)
    named = post(base_url, "/v1/models/evae:predict", {"inputs": {"z": Z, "extra": 1}}).json()
    assert named["outputs"]["images"] == outputs["images"]


def test_row_and_columnar_agree(base_url):
    rows = post(base_url, "/v1/models/evae:predict", {"instances": Z}).json()["predictions"]
    columns = post(base_url, "/v1/models/evae:predict", {"inputs": Z}).json()["outputs"]
    np.testing.assert_array_equal([r["images"] for r in rows], columns["images"])


def test_explicit_default_signature_name(base_url):
    for name in ("serving_default", ""):
        body = {"signature_name": name, "instances": Z}
        assert post(base_url, "/v1/models/evae:predict", body).status_code == 200


def test_sample_signature_with_scalar_inputs(base_url):
    outputs = sample(base_url, 5, seed=3)
    assert set(outputs) == {"z", "images", "png_bytes"}
    assert np.asarray(outputs["z"]).shape == (5, EVAE.latent_dim)
    images = np.asarray(outputs["images"])
    assert images.shape == (5, *EVAE.image_shape)
    assert images.min() >= 0.0 and images.max() <= 1.0


def test_sampling_is_deterministic_per_seed(base_url):
    first, again, other = sample(base_url, 4, 7), sample(base_url, 4, 7), sample(base_url, 4, 8)
    assert first == again
    assert first["z"] != other["z"]


def test_png_bytes_decode_to_the_images(base_url):
    outputs = sample(base_url, 6, seed=1)
    pixels = np.stack([png_to_array(p["b64"]) for p in outputs["png_bytes"]])
    assert pixels.dtype == np.uint8
    images = np.asarray(outputs["images"], dtype=np.float32)
    np.testing.assert_allclose(pixels / 255.0, images, atol=1 / 255)


def test_png_of_rgb_model(base_url):
    outputs = sample(base_url, 2, seed=0, model="vae")
    assert png_to_array(outputs["png_bytes"][0]["b64"]).shape == VAE.image_shape


def test_floats_round_trip_to_the_float32_outputs(base_url):
    """Clients parse numbers: each parsed value is exactly the served float32 value."""
    columnar = post(base_url, "/v1/models/evae:predict", {"inputs": Z}).json()["outputs"]
    images = np.asarray(columnar["images"], dtype=np.float64)
    assert images.shape == (2, *EVAE.image_shape)
    # float32's shortest round-trip text: reading it back as float32 and printing it
    # again gives the same number (a double-precision rendering would not).
    reprinted = [float(str(v)) for v in images.astype(np.float32).reshape(-1)]
    assert reprinted == images.reshape(-1).tolist()
    assert ((images > 0) & (images < 1)).all()


def test_nan_input_gives_nan_tokens(base_url):
    response = post(base_url, "/v1/models/evae:predict", '{"instances": [[NaN, 0, 0, 0]]}')
    assert response.status_code == 200, response.text
    images = np.asarray(response.json()["predictions"][0]["images"], dtype=np.float64)
    assert np.isnan(images).all()


def test_versions_latest_answers_and_pinning_works(base_url):
    latest, v2, v1 = (sample(base_url, 3, 0, version=v) for v in (None, 2, 1))
    assert latest == v2
    assert latest["z"] == v1["z"]  # same sampler, same seed
    assert latest["images"] != v1["images"]  # different decoder weights


# --------------------------------------------------------------------------------------
# Predict errors
# --------------------------------------------------------------------------------------

PREDICT = "/v1/models/evae:predict"


# TF Serving's messages quote JSON values as rapidjson prints them; this server quotes
# them compactly. The parts around the values are the same, and those are checked.
@pytest.mark.parametrize(
    "body, fragment",
    [
        (
            {"instances": [1], "inputs": 2},
            "expecting only one of 'inputs' or 'instances' keys to exist",
        ),
        ({"signature_name": "serving_default"}, "Missing 'inputs' or 'instances' key"),
        (
            {"signature_name": "nope", "instances": Z},
            'Serving signature name: "nope" not found in signature def',
        ),
        ({"instances": []}, "No values in 'instances' array"),
        ({"instances": 3}, "Excepting 'instances' to be an list/array"),
        ([1], "Is not object"),
        (
            {"signature_name": "sample", "inputs": {"num_samples": 1.5, "seed": 0}},
            "JSON Value: 1.5 Type: Number is not of expected type: int32",
        ),
        (
            {"signature_name": "sample", "inputs": {"num_samples": 2, "seed": "0"}},
            'JSON Value: "0" Type: String is not of expected type: int64',
        ),
        (
            {"signature_name": "sample", "inputs": {"num_samples": 2}},
            "Missing named input: seed in 'inputs' object.",
        ),
        (
            {"signature_name": "sample", "inputs": 2},
            "inputs is a plain value/list, but expecting an object as multiple input tensors "
            "required as per tensorinfo_map",
        ),
        ({"inputs": {"x": Z}}, "Missing named input: z in 'inputs' object."),
        (
            {"inputs": [[1, 2, 3, 4], [1, 2, 3]]},
            "Encountered list at unexpected size: 3 at level: 1 expected size: 4",
        ),
        (
            {"inputs": [[1, 2, 3, 4], 5]},
            "JSON Value: 5 found at incorrect level: 2 in the JSON DOM. Expected at level: 2",
        ),
        (
            {"inputs": [[None, 2, 3, 4]]},
            "JSON Value: null Type: Null is not of expected type: float",
        ),
        (
            {"inputs": [[{"b64": "AAAA"}, 2, 3, 4]]},
            "Type: Object is not of expected type: float",
        ),
        (
            {"inputs": [[16777217, 0, 0, 0]]},
            "Cannot convert JSON value: 16777217 to float without loss of precision.",
        ),
    ],
)
def test_predict_errors(base_url, body, fragment):
    error = assert_error(post(base_url, PREDICT, body), 400)
    assert fragment in error


def test_signature_name_must_be_a_string(base_url):
    error = assert_error(post(base_url, PREDICT, {"signature_name": 1, "instances": Z}), 400)
    assert error.endswith("'signature_name' key must be a string value.")


def test_instances_errors_name_the_element(base_url):
    error = assert_error(post(base_url, PREDICT, {"instances": [{"x": [1, 2, 3, 4]}]}), 400)
    assert error.startswith("Failed to process element: 0 ")
    assert "x" in error
    error = assert_error(post(base_url, PREDICT, {"instances": [[1, 2, 3, 4], [1, 2, 3]]}), 400)
    assert error.startswith("Failed to process element: 1 ")


@pytest.mark.parametrize(
    "body",
    [
        {"instances": [[1.0, 2.0, 3.0]]},  # latent_dim is 4
        {"inputs": [1.0, 2.0, 3.0, 4.0]},  # rank 1, needs [batch, 4]
    ],
)
def test_wrong_shape_is_a_bad_request(base_url, body):
    assert_error(post(base_url, PREDICT, body), 400)


@pytest.mark.parametrize(
    "path, body, status, message",
    [
        (
            "/v1/models/nope:predict",
            {"instances": Z},
            404,
            "Servable not found for request: Latest(nope)",
        ),
        (
            "/v1/models/evae/versions/7:predict",
            {"instances": Z},
            404,
            "Servable not found for request: Specific(evae, 7)",
        ),
        (
            "/v1/models/evae/labels/nope:predict",
            {"instances": Z},
            400,
            "Unrecognized servable version label: nope",
        ),
        ("/v1/foo", {"instances": Z}, 400, "Malformed request: POST /v1/foo"),
        ("/v1/models/evae/metadata", {}, 400, "Malformed request: POST /v1/models/evae/metadata"),
        (PREDICT, "", 400, "JSON Parse error: The document is empty"),
        (PREDICT, "instances = [1, 2]", 400, None),
        # The body is parsed before the model is looked up.
        ("/v1/models/nope:predict", "{bad json", 400, None),
    ],
)
def test_predict_request_errors(base_url, path, body, status, message):
    error = assert_error(post(base_url, path, body), status, message)
    if message is None:
        assert error.startswith("JSON Parse error: ")


@pytest.mark.parametrize("num_samples", [0, -3, 1025])
def test_num_samples_out_of_range_is_a_bad_request(base_url, num_samples):
    body = {"signature_name": "sample", "inputs": {"num_samples": num_samples, "seed": 0}}
    error = assert_error(post(base_url, PREDICT, body), 400)
    assert "num_samples must be in [1, 1024]" in error
    assert "Graph execution error" not in error and "Detected at node" not in error  # TF's Python decorations
    assert len(sample(base_url, 1, 0)["png_bytes"]) == 1  # still serving


def test_concurrent_requests(base_url):
    expected = [sample(base_url, 2, seed) for seed in (0, 1)]  # one at a time
    assert expected[0]["z"] != expected[1]["z"]
    for outputs in expected:
        assert np.asarray(outputs["images"]).shape == (2, *EVAE.image_shape)
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        futures = [pool.submit(sample, base_url, 2, index % 2) for index in range(8)]
        answers = [future.result(timeout=60) for future in futures]  # re-raises a thread's failure
    for index, answer in enumerate(answers):
        assert answer == expected[index % 2], f"request {index} (seed {index % 2})"


# The encoding itself (serving.rest)
# --------------------------------------------------------------------------------------


def test_format_writes_numbers_that_parse_back_exactly():
    rng = np.random.default_rng(7)
    floats = rng.standard_normal((3, 5, 2)).astype(np.float32)
    doubles = rng.standard_normal(4)
    ints = np.arange(6, dtype=np.int64).reshape(3, 2) - 3
    body = rest.format_predict_response({"f": floats, "d": doubles, "i": ints}, rest.COLUMNAR)
    outputs = json.loads(body)["outputs"]
    np.testing.assert_array_equal(np.asarray(outputs["f"], np.float32), floats)
    np.testing.assert_array_equal(np.asarray(outputs["d"]), doubles)
    assert outputs["i"] == ints.tolist()
    rows = json.loads(rest.format_predict_response({"f": floats, "i": ints}, rest.ROW))
    np.testing.assert_array_equal(np.float32([p["f"] for p in rows["predictions"]]), floats)
    assert [p["i"] for p in rows["predictions"]] == ints.tolist()
    single = json.loads(rest.format_predict_response({"f": floats}, rest.ROW))
    np.testing.assert_array_equal(np.float32(single["predictions"]), floats)


def test_format_strings_bools_and_non_finite():
    pngs = np.array([b"\x00\xff", b"hi"], object)
    body = rest.format_predict_response({"png_bytes": pngs, "text": pngs}, rest.COLUMNAR)
    assert json.loads(body) == {
        "outputs": {"png_bytes": [{"b64": "AP8="}, {"b64": "aGk="}], "text": ["\x00\ufffd", "hi"]}
    }
    body = rest.format_predict_response({"b": np.array([True, False])}, rest.COLUMNAR)
    assert json.loads(body) == {"outputs": [True, False]}
    body = rest.format_predict_response({"x": np.array([math.nan, -math.inf], np.float32)}, "row")
    assert body == b'{"predictions": [NaN, -Infinity]}'
    with pytest.raises(rest.ServingError, match="no common batch size"):
        rest.format_predict_response({"x": np.zeros(2), "y": np.zeros(3)}, rest.ROW)


def test_json_to_tensor_dtypes_and_ranges():
    assert rest.json_to_tensor([[1, 2]], tf.uint8).dtype == np.uint8
    strings = rest.json_to_tensor(["a", {"b64": "AP8="}], tf.string)
    assert strings.tolist() == [b"a", b"\x00\xff"]
    assert rest.json_to_tensor([[]], tf.float32).shape == (1, 0)
    for value, dtype in [(300, tf.uint8), (-1, tf.uint32), (True, tf.int32), (1, tf.bool)]:
        with pytest.raises(rest.ServingError, match="is not of expected type"):
            rest.json_to_tensor([value], dtype)
    with pytest.raises(rest.ServingError, match="without loss of precision"):
        rest.json_to_tensor([1e300], tf.float32)
    assert rest.json_to_tensor([1e300], tf.float64)[0] == 1e300


def test_parse_json_names_the_problem():
    assert rest.parse_json(b'{"a": [NaN, 1]}')["a"][1] == 1  # TF Serving takes NaN
    for body in [b"", b'{"a": 1,}', b"[1 2]", b"{} {}", b'"abc', b"\xff"]:
        with pytest.raises(rest.ServingError) as info:
            rest.parse_json(body)
        assert info.value.message.startswith("JSON Parse error: "), body
        assert "\n" not in info.value.message


# --------------------------------------------------------------------------------------
# This server's own machinery (skipped against a real TF Serving)
# --------------------------------------------------------------------------------------


def _copy_version(model: str, version: int, base_path: Path, as_version: int | None = None):
    """Copy a fixture version into ``base_path`` atomically (temp dir, then rename)."""
    target = base_path / str(as_version or version)
    tmp = base_path / f".tmp-{target.name}"
    shutil.copytree(fixture_models_dir() / model / str(version), tmp)
    os.rename(tmp, target)


def _wait_for(predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


@local_only
def test_default_policy_serves_only_the_latest_version(tmp_path):
    for version in (1, 2):
        _copy_version("evae", version, tmp_path)
    with ModelServer([single_model_config("evae", tmp_path)], port=0, poll_wait_seconds=0) as server:
        status = get(server.url, "/v1/models/evae").json()["model_version_status"]
        assert [s["version"] for s in status] == ["2"]
        error = post(server.url, "/v1/models/evae/versions/1:predict", {"instances": Z})
        assert_error(error, 404, "Servable not found for request: Specific(evae, 1)")


@local_only
def test_new_version_is_picked_up_without_failing_requests(tmp_path):
    _copy_version("evae", 1, tmp_path)
    config = single_model_config("evae", tmp_path)
    with ModelServer([config], port=0, poll_wait_seconds=0.1) as server:
        before = sample(server.url, 2, 0)
        (tmp_path / "3").mkdir()  # no saved_model.pb yet: ignored
        (tmp_path / "notaversion").mkdir()
        statuses: list[int] = []
        stop = threading.Event()

        def hammer():
            body = {"signature_name": "sample", "inputs": {"num_samples": 2, "seed": 0}}
            while not stop.is_set():
                statuses.append(post(server.url, PREDICT, body).status_code)

        thread = threading.Thread(target=hammer)
        thread.start()
        try:
            _copy_version("evae", 2, tmp_path)

            def upgraded():
                states = get(server.url, "/v1/models/evae").json()["model_version_status"]
                return [(s["version"], s["state"]) for s in states] == [
                    ("2", "AVAILABLE"),
                    ("1", "END"),
                ]

            _wait_for(upgraded)
            time.sleep(0.2)
        finally:
            stop.set()
            thread.join()
        assert statuses and set(statuses) == {200}
        after = sample(server.url, 2, 0)
        assert after["images"] != before["images"]
        assert after == sample(server.url, 2, 0, version=2)


@local_only
def test_broken_version_keeps_the_old_one_serving(tmp_path):
    _copy_version("evae", 1, tmp_path)
    with ModelServer([single_model_config("evae", tmp_path)], port=0, poll_wait_seconds=0.1) as server:
        broken = tmp_path / ".tmp-2"
        broken.mkdir()
        (broken / "saved_model.pb").write_bytes(b"not a protobuf")
        os.rename(broken, tmp_path / "2")

        def failed():
            states = get(server.url, "/v1/models/evae").json()["model_version_status"]
            return states[0]["version"] == "2" and states[0]["status"]["error_code"] != "OK"

        _wait_for(failed)
        states = get(server.url, "/v1/models/evae").json()["model_version_status"]
        assert states[0]["state"] == "END" and states[0]["status"]["error_message"]
        assert states[1] == {
            "version": "1",
            "state": "AVAILABLE",
            "status": {"error_code": "OK", "error_message": ""},
        }
        assert len(sample(server.url, 1, 0)["z"]) == 1


@local_only
def test_version_labels(tmp_path):
    config_file = tmp_path / "models.config"
    config_file.write_text(
        f"""
        model_config_list {{
          config {{
            name: "evae"  base_path: "{fixture_models_dir() / "evae"}"
            model_platform: "tensorflow"
            model_version_policy {{ all {{}} }}
            version_labels {{ key: 'stable' value: 1 }}
          }}
        }}
        """
    )
    with ModelServer(read_model_config_file(config_file), port=0, poll_wait_seconds=0) as server:
        body = {"signature_name": "sample", "inputs": {"num_samples": 2, "seed": 0}}
        response = post(server.url, "/v1/models/evae/labels/stable:predict", body)
        labelled = response.json()["outputs"]
        assert labelled == sample(server.url, 2, 0, version=1)
        metadata = get(server.url, "/v1/models/evae/labels/stable/metadata").json()
        assert metadata["model_spec"]["version"] == "1"


def _fake_servable(call) -> Servable:
    inputs = {"x": tf.TensorSpec([None], tf.float32)}
    signature = Signature("serving_default", inputs, "tensorflow/serving/predict", call)
    return Servable(1, {"serving_default": signature}, {})


def make_slow(behaviour) -> threading.Event:
    """Make the fake model wait (up to 10 s) until the returned event is set."""
    release = threading.Event()

    def slow(inputs):
        release.wait(10)
        return {"y": inputs["x"]}

    behaviour[0] = slow
    return release


@pytest.fixture
def fake_server(tmp_path):
    """A server whose model calls ``behaviour[0]`` (settable by the test)."""
    (tmp_path / "1").mkdir()
    (tmp_path / "1" / "saved_model.pb").write_bytes(b"")
    behaviour = [lambda inputs: {"y": inputs["x"] * 2}]
    servable = _fake_servable(lambda inputs: behaviour[0](inputs))

    def start(**kwargs):
        server = ModelServer(
            [single_model_config("fake", tmp_path)],
            port=0,
            poll_wait_seconds=0,
            loader=lambda name, version, path: servable,
            **kwargs,
        )
        servers.append(server.start())
        return server

    servers: list[ModelServer] = []
    yield start, behaviour
    for server in servers:
        server.close()


@local_only
def test_body_too_large_is_rejected(fake_server):
    start, _ = fake_server
    server = start(max_request_bytes=1000)
    response = post(server.url, "/v1/models/fake:predict", {"instances": [0.5] * 1000})
    error = assert_error(response, 413)
    assert error == "Request body exceeds the limit of 1000 bytes (--max_request_bytes)"

    def chunked():  # no Content-Length: the limit applies while reading
        yield b'{"instances": ['
        yield b"0.5, " * 1000
        yield b"0.5]}"

    response = requests.post(server.url + "/v1/models/fake:predict", data=chunked(), timeout=10)
    error = assert_error(response, 413)
    assert error == "Request body exceeds the limit of 1000 bytes (--max_request_bytes)"
    ok = post(server.url, "/v1/models/fake:predict", {"instances": [0.5]})
    assert ok.json() == {"predictions": [1.0]}


@local_only
def test_timeout_answers_504_and_overload_503(fake_server):
    start, behaviour = fake_server
    release = make_slow(behaviour)
    server = start(timeout_in_ms=300, num_threads=1)
    try:
        error = assert_error(post(server.url, "/v1/models/fake:predict", {"instances": [1.0]}), 504)
        assert "Deadline Exceeded" in error
        # The only prediction thread is still busy with the first request.
        error = assert_error(post(server.url, "/v1/models/fake:predict", {"instances": [1.0]}), 503)
        assert "overloaded" in error
    finally:
        release.set()
    behaviour[0] = lambda inputs: {"y": inputs["x"]}
    _wait_for(lambda: post(server.url, "/v1/models/fake:predict", {"instances": [1.0]}).ok)


@local_only
def test_unexpected_exceptions_answer_500_and_the_server_survives(fake_server):
    start, behaviour = fake_server

    def broken(inputs):
        raise RuntimeError("boom")

    behaviour[0] = broken
    server = start()
    error = assert_error(post(server.url, "/v1/models/fake:predict", {"instances": [1.0]}), 500)
    assert "boom" in error
    behaviour[0] = lambda inputs: {"y": inputs["x"] + 1}
    assert post(server.url, "/v1/models/fake:predict", {"inputs": [1.0]}).json() == {
        "outputs": [2.0]
    }


def grpc_predict(server: ModelServer, x: list[float]):
    """``fake``'s ``Predict`` over gRPC: the response, or the RpcError's (code name, details)."""
    import grpc
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "fake"
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.float32(x)))
    with grpc.insecure_channel(server.grpc_address) as channel:
        try:
            return prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(
                request, timeout=30
            )
        except grpc.RpcError as e:
            return e.code().name, e.details()


@local_only
def test_grpc_codes_match_the_rest_statuses(fake_server):
    """504 / 503 / 500 over REST are DEADLINE_EXCEEDED / UNAVAILABLE / INTERNAL over gRPC,
    with the same messages; the server keeps serving."""
    start, behaviour = fake_server
    release = make_slow(behaviour)
    server = start(timeout_in_ms=300, num_threads=1, grpc_port=0)
    try:
        code, message = grpc_predict(server, [1.0])
        assert code == "DEADLINE_EXCEEDED" and "Deadline Exceeded" in message
        code, message = grpc_predict(server, [1.0])
        assert code == "UNAVAILABLE" and "overloaded" in message
    finally:
        release.set()

    def broken(inputs):
        raise RuntimeError("boom")

    behaviour[0] = broken
    _wait_for(lambda: grpc_predict(server, [1.0])[0] == "INTERNAL")
    rest_error = assert_error(post(server.url, "/v1/models/fake:predict", {"inputs": [1.0]}), 500)
    assert grpc_predict(server, [1.0]) == ("INTERNAL", rest_error)
    behaviour[0] = lambda inputs: {"y": inputs["x"] * 3}
    response = grpc_predict(server, [1.0, 2.0])
    assert tf.make_ndarray(response.outputs["y"]).tolist() == [3.0, 6.0]
    assert response.model_spec.version.value == 1


@local_only
def test_other_paths_and_methods(fake_server):
    start, _ = fake_server
    server = start()
    assert_error(get(server.url, "/"), 404, "Not found: GET /")
    response = requests.put(server.url + "/v1/models/fake", timeout=10)
    assert_error(response, 400, "Malformed request: PUT /v1/models/fake")
    response = post(server.url, "/v1/models/fake:classify", {"examples": []})
    assert_error(response, 501, "This server does not implement :classify")


# --------------------------------------------------------------------------------------
# models.config parsing
# --------------------------------------------------------------------------------------


def test_parse_model_config_two_models(tmp_path):
    text = """
    # two models
    model_config_list {
      config {
        name: 'evae'            # single quotes
        base_path: "/models/evae"
        model_platform: "tensorflow"
        model_version_policy: { specific { versions: 1 versions: 3 } }
        version_labels { key: "stable" value: 1 }
        version_labels { key: 'canary', value: 3 }
      },
      config < name: "vae" base_path: "rel/" "vae" model_platform: 'tensorflow'
               model_version_policy { latest { num_versions: 2 } } >
    }
    """
    evae, vae = parse_model_config(text, base_dir=tmp_path)
    assert (evae.name, evae.base_path) == ("evae", "/models/evae")
    assert dict(evae.version_labels) == {"stable": 1, "canary": 3}
    assert select_versions(evae, [1, 2]) == {1}
    assert vae.base_path == str(tmp_path / "rel/vae")
    assert select_versions(vae, [1, 2, 3]) == {2, 3}
    assert select_versions(single_model_config("m", tmp_path), [4, 1, 9]) == {9}


def test_the_shipped_models_config():
    configs = read_model_config_file(REPO / "serving" / "models.config")
    assert [(c.name, c.base_path) for c in configs] == [
        ("evae", "/models/evae"),
        ("vae", "/models/vae"),
    ]


@pytest.mark.parametrize(
    "text, message",
    [
        ("model_config_list { config { name: 'a' } }", "<config>: model 'a' has no base_path"),
        (
            "model_config_list {\n config { name: 'a' base_path: '/x' colour: 'red' } }",
            '<config>:2:37 : Message type "tensorflow.serving.ModelConfig" has no field named '
            '"colour".',
        ),
        (
            "model_config_list { config { name: 'a' base_path: '/x' model_platform: 'tensorflow' }"
            "\n config { name: 'a' base_path: '/y' model_platform: 'tensorflow' } }",
            "<config>: Illegal to list model a multiple times in config list",
        ),
        (
            "model_config_list { config { name: 'a' base_path: '/x' model_platform: 'onnx' } }",
            "<config>: model 'a': model_platform must be 'tensorflow', got 'onnx'",
        ),
        ("model_config_list { config { name: 'a' ", "<config>:1:36 : Expected \"}\"."),
        (
            "model_config_list { config { name: 'a' base_path: '/x' } }",
            "<config>: model 'a': model_platform must be 'tensorflow', got ''",
        ),
        (
            "model_config_list { config { name: 'a' base_path: '/x' model_platform: 'tensorflow'"
            " model_version_policy { specific {} } } }",
            "<config>: model 'a': the specific version policy lists no versions",
        ),
    ],
)
def test_parse_model_config_errors(text, message):
    with pytest.raises(ModelConfigError) as info:
        parse_model_config(text)
    assert str(info.value) == message


# --------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------


def run_server_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "serving.server", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@local_only
@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--model_base_path", "missing/dir"],
            "error: --model_base_path 'missing/dir' does not exist",
        ),
        (
            ["--model_config_file", "missing.config"],
            "error: --model_config_file 'missing.config' does not exist",
        ),
        ([], "error: one of --model_base_path or --model_config_file is required"),
        (
            ["--model_base_path", ".", "--rest_api_port", "70000"],
            "argument --rest_api_port: expected an integer in 0..65535, received '70000'",
        ),
        (["--enable_batching"], "error: unrecognized arguments: --enable_batching"),
    ],
)
def test_cli_rejects_bad_flags(args, message):
    result = run_server_cli(*args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


@local_only
def test_cli_reports_config_errors_with_line(tmp_path):
    config = tmp_path / "models.config"
    config.write_text(
        "model_config_list {\n  config { name: 'evae' base_path: 'nowhere' model_platform: 'tensorflow' }\n}\n"
    )
    result = run_server_cli("--model_config_file", str(config))
    assert result.returncode == 2
    assert (
        f"error: base_path '{tmp_path / 'nowhere'}' of model 'evae' does not exist" in result.stderr
    )
    config.write_text("model_config_list {\n  config { nam: 'evae' }\n}\n")
    result = run_server_cli("--model_config_file", str(config))
    assert result.returncode == 2
    assert f"{config}:2:12 : Message type" in result.stderr
    assert 'has no field named "nam".' in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("python -m serving.server: error: ")
    assert "Traceback" not in result.stderr


@local_only
def test_cli_serves_and_stops_cleanly_on_sigterm():
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "serving.server",
            "--model_name=evae",
            f"--model_base_path={fixture_models_dir() / 'evae'}",
            "--rest_api_port=0",
            "--port=0",
        ],
        cwd=REPO,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    try:
        port = None
        deadline = time.monotonic() + 60
        while port is None and time.monotonic() < deadline:
            line = process.stderr.readline()
            if not line:
                break
            match = re.search(r"Exporting HTTP/REST API at:127\.0\.0\.1:(\d+)", line)
            if match:
                port = int(match.group(1))
        assert port, "the server did not report its port"
        url = f"http://127.0.0.1:{port}"
        status = get(url, "/v1/models/evae").json()["model_version_status"]
        assert [s["version"] for s in status] == ["2"]  # default policy: latest only
        assert post(url, PREDICT, {"instances": Z}).status_code == 200
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        rest_of_log = process.stderr.read()
        assert "POST /v1/models/evae:predict 200" in rest_of_log
        assert "Traceback" not in rest_of_log
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
