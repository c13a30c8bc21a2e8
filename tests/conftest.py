"""Shared pytest setup: quiet TensorFlow, float32 policy restored after each test, and
the `base_url` of a server holding the serving fixture models."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _restore_dtype_policy():
    yield
    keras.mixed_precision.set_global_policy("float32")


@pytest.fixture(scope="module",
                params=["tf_serving" if os.environ.get("TF_SERVING_URL") else "local"])
def base_url(request):
    """The URL of a server with the fixture models: a local ``serving.server`` on a free
    port, or the real TF Serving at ``TF_SERVING_URL``."""
    from serving_fixtures import TF_SERVING_URL, fixture_models_dir

    if request.param == "tf_serving":
        yield TF_SERVING_URL.rstrip("/")
        return
    from serving.config import read_model_config_file
    from serving.server import ModelServer

    configs = read_model_config_file(fixture_models_dir() / "models.config")
    with ModelServer(configs, port=0, poll_wait_seconds=0) as server:
        yield server.url
