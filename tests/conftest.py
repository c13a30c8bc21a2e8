"""Shared pytest setup: quiet TensorFlow, float32 policy restored after each test, and
servers holding the serving fixture models (REST ``base_url``, gRPC ``grpc_address``,
and ``endpoint``: a client URL for each protocol in turn)."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import pytest  # noqa: E402

# A real TF Serving serving the fixture models (see tests/serving_fixtures.py).
TF_SERVING_URL = os.environ.get("TF_SERVING_URL") or None  # http://host:8501
TF_SERVING_GRPC = os.environ.get("TF_SERVING_GRPC") or None  # host:8500
EXTERNAL = TF_SERVING_URL is not None or TF_SERVING_GRPC is not None


@pytest.fixture(autouse=True)
def _restore_dtype_policy():
    yield
    keras.mixed_precision.set_global_policy("float32")


@pytest.fixture(scope="module")
def local_server():
    """``serving.server`` in-process with the fixture models, REST and gRPC on free ports."""
    if EXTERNAL:
        pytest.skip("TF_SERVING_URL / TF_SERVING_GRPC given: testing that server instead")
    from serving_fixtures import fixture_models_dir

    from serving.config import read_model_config_file
    from serving.server import ModelServer

    configs = read_model_config_file(fixture_models_dir() / "models.config")
    with ModelServer(configs, port=0, grpc_port=0, poll_wait_seconds=0) as server:
        yield server


@pytest.fixture(scope="module")
def base_url(request):
    """The REST URL of a server with the fixture models (local, or ``TF_SERVING_URL``)."""
    if not EXTERNAL:
        return request.getfixturevalue("local_server").url
    if TF_SERVING_URL is None:
        pytest.skip("only TF_SERVING_GRPC is given: no REST server to test")
    return TF_SERVING_URL.rstrip("/")


@pytest.fixture(scope="module")
def grpc_address(request):
    """The gRPC ``host:port`` of a server with the fixture models."""
    if not EXTERNAL:
        return request.getfixturevalue("local_server").grpc_address
    if TF_SERVING_GRPC is None:
        pytest.skip("only TF_SERVING_URL is given: no gRPC server to test")
    return TF_SERVING_GRPC


@pytest.fixture(scope="module", params=["rest", "grpc"])
def endpoint(request):
    """A ``serving.client`` URL of the fixture server, once per protocol."""
    if request.param == "rest":
        return request.getfixturevalue("base_url")
    return "grpc://" + request.getfixturevalue("grpc_address")
