"""A local model server that answers TensorFlow Serving's REST API.

For machines without Docker: serves SavedModels laid out for TF Serving
(``<base_path>/<version>/saved_model.pb``) with the same URLs, JSON formats, error
messages and status codes (``shared/spec/tf-serving-rest.md``), so a client or a test
written against one works against the other::

    python -m serving.server --model_name evae --model_base_path models/evae \\
        --rest_api_port 8501
    python -m serving.server --model_config_file serving/models.config

Flags are named as ``tensorflow_model_server``'s; ``--rest_api_host`` (default
127.0.0.1), ``--max_request_bytes`` (default 64 MiB; larger bodies get 413) and
``--max_batch_size`` (default 1024: the largest batch dimension of an input, and the
largest ``num_samples`` input; more is a 400) are this server's own. Only REST is served:
``--port`` (gRPC) is accepted and ignored, and ``:classify`` / ``:regress`` answer 501.

Loading follows TF Serving: integer version directories, the configured version
policy (default: the latest one), a poller that loads new versions fully before
swapping them in (in-flight requests finish on the version they started with), and
an old version is only unloaded once a new one is available.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import json
import logging
import math
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import numpy as np
from werkzeug.exceptions import ClientDisconnected
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from serving import rest
from serving.model_config import (
    ModelConfig,
    ModelConfigError,
    VersionPolicy,
    parse_model_config_file,
)
from serving.rest import RestError, TensorInfo, invalid_argument

logger = logging.getLogger(__name__)

DEFAULT_SIGNATURE = "serving_default"
PREDICT_METHOD_NAMES = (
    "tensorflow/serving/predict",
    "tensorflow/serving/classify",
    "tensorflow/serving/regress",
)
DEFAULT_MAX_REQUEST_BYTES = 64 * 1024 * 1024
# Requests for more rows than this are refused before the model runs: a 64 MiB body of
# latents decodes to hundreds of thousands of images, more memory than the host has.
DEFAULT_MAX_BATCH_SIZE = 1024
# A scalar integer input of this name asks the model for that many rows.
NUM_SAMPLES_INPUT = "num_samples"

# tensorflow_serving/model_servers/http_rest_api_util.cc
_PREDICT_PATH = re.compile(
    r"/v1/models/([^/:]+)(?:(?:/versions/([0-9]+))|(?:/labels/([^/:]+)))?"
    r":(classify|regress|predict)",
    re.IGNORECASE,
)
_STATUS_PATH = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:(?:/versions/([0-9]+))|(?:/labels/([^/:]+)))?(?:/(metadata))?",
    re.IGNORECASE,
)
_API_PATH = re.compile(r"/v1/.*", re.IGNORECASE | re.DOTALL)

# tf.errors.OpError.error_code -> canonical code name.
_TF_CODE_NAMES = {
    1: "CANCELLED",
    2: "UNKNOWN",
    3: "INVALID_ARGUMENT",
    4: "DEADLINE_EXCEEDED",
    5: "NOT_FOUND",
    6: "ALREADY_EXISTS",
    7: "PERMISSION_DENIED",
    8: "RESOURCE_EXHAUSTED",
    9: "FAILED_PRECONDITION",
    10: "ABORTED",
    11: "OUT_OF_RANGE",
    12: "UNIMPLEMENTED",
    13: "INTERNAL",
    14: "UNAVAILABLE",
    15: "DATA_LOSS",
    16: "UNAUTHENTICATED",
}


# --------------------------------------------------------------------------------------
# Servables: one loaded version of one model
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Signature:
    """One signature of a loaded SavedModel.

    ``call`` maps input arrays (by input name) to output arrays; it is ``None`` for
    entries of the SignatureDef map that are not callable (``__saved_model_init_op``).
    """

    name: str
    inputs: Mapping[str, TensorInfo]
    outputs: Mapping[str, TensorInfo]
    method_name: str
    call: Callable[[Mapping[str, np.ndarray]], Mapping[str, Any]] | None


@dataclasses.dataclass(frozen=True)
class Servable:
    """A loaded model version: its signatures and its SignatureDef map as JSON."""

    name: str
    version: int
    path: str
    signatures: Mapping[str, Signature]
    signature_def_json: Mapping[str, Any]
    handle: Any = None  # keeps the loaded SavedModel (and its variables) alive


def _tf_error_message(message: str) -> str:
    """Strip TF's Python-side decoration so messages read as TF Serving's do."""
    marker = "<stack traces unavailable>\n"
    if marker in message:
        message = message[message.index(marker) + len(marker) :]
    elif message.startswith("Graph execution error:"):
        message = message[len("Graph execution error:") :].lstrip()
    return re.sub(r"\s*\[Op:[^\]]*\]\s*$", "", message).strip()


def _read_meta_graph(path: Path, tags: set[str]):
    from google.protobuf import text_format
    from tensorflow.core.protobuf import saved_model_pb2

    saved_model = saved_model_pb2.SavedModel()
    if (path / "saved_model.pb").exists():
        saved_model.ParseFromString((path / "saved_model.pb").read_bytes())
    else:
        text_format.Parse((path / "saved_model.pbtxt").read_text(), saved_model)
    for meta_graph in saved_model.meta_graphs:
        if set(meta_graph.meta_info_def.tags) == tags:
            return meta_graph
    raise ValueError(f"SavedModel at {path} has no MetaGraphDef with tags {sorted(tags)}")


def _message_to_dict(message) -> dict[str, Any]:
    from google.protobuf import json_format

    try:
        return json_format.MessageToDict(
            message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        )
    except TypeError:  # protobuf < 5.26
        return json_format.MessageToDict(
            message, preserving_proto_field_name=True, including_default_value_fields=True
        )


def _proto_tensor_info(info) -> TensorInfo:
    from tensorflow.core.framework import types_pb2

    shape = info.tensor_shape
    dims = None if shape.unknown_rank else tuple(d.size if d.size >= 0 else None for d in shape.dim)
    return TensorInfo(types_pb2.DataType.Name(info.dtype), dims)


def _spec_tensor_info(spec) -> TensorInfo:
    from tensorflow.core.framework import types_pb2

    shape = None if spec.shape.rank is None else tuple(spec.shape.as_list())
    return TensorInfo(types_pb2.DataType.Name(spec.dtype.as_datatype_enum), shape)


def _make_call(function, input_specs: Mapping[str, Any]):
    import tensorflow as tf

    def call(inputs: Mapping[str, np.ndarray]) -> dict[str, Any]:
        tensors = {
            name: tf.constant(value, dtype=input_specs[name].dtype)
            for name, value in inputs.items()
        }
        try:
            outputs = function(**tensors)
        except tf.errors.OpError as e:
            code = _TF_CODE_NAMES.get(e.error_code, "UNKNOWN")
            raise RestError(code, _tf_error_message(e.message)) from None
        return {name: value.numpy() for name, value in outputs.items()}

    return call


def load_servable(name: str, version: int, path: str | os.PathLike) -> Servable:
    """Load one version directory with ``tf.saved_model.load`` (tag ``serve``)."""
    import tensorflow as tf

    path = Path(path)
    meta_graph = _read_meta_graph(path, {"serve"})
    loaded = tf.saved_model.load(str(path), tags=["serve"])
    signatures = {}
    for sig_name, sig_def in meta_graph.signature_def.items():
        function = loaded.signatures.get(sig_name)
        if function is None:
            inputs = {k: _proto_tensor_info(v) for k, v in sig_def.inputs.items()}
            call = None
        else:
            specs = function.structured_input_signature[1]
            inputs = {k: _spec_tensor_info(spec) for k, spec in specs.items()}
            call = _make_call(function, specs)
        outputs = {k: _proto_tensor_info(v) for k, v in sig_def.outputs.items()}
        signatures[sig_name] = Signature(sig_name, inputs, outputs, sig_def.method_name, call)
    signature_json = {k: _message_to_dict(v) for k, v in meta_graph.signature_def.items()}
    return Servable(name, version, str(path), signatures, signature_json, handle=loaded)


# --------------------------------------------------------------------------------------
# Model registry: versions on disk -> loaded servables
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class VersionState:
    version: int
    state: str  # START, LOADING, AVAILABLE, UNLOADING, END
    error_code: str = "OK"
    error_message: str = ""


def list_version_dirs(base_path: str | os.PathLike) -> dict[int, Path]:
    """Integer-named subdirectories holding a ``saved_model.pb`` (or ``.pbtxt``)."""
    versions: dict[int, Path] = {}
    with os.scandir(base_path) as entries:
        for entry in entries:
            if not (re.fullmatch(r"[0-9]+", entry.name) and entry.is_dir()):
                continue
            path = Path(entry.path)
            if (path / "saved_model.pb").is_file() or (path / "saved_model.pbtxt").is_file():
                versions.setdefault(int(entry.name), path)
    return versions


def _fingerprint(path: Path) -> tuple:
    entries = []
    for root, _, files in os.walk(path):
        for file in files:
            try:
                stat = os.stat(os.path.join(root, file))
            except OSError:
                continue
            entries.append(
                (os.path.relpath(os.path.join(root, file), path), stat.st_size, stat.st_mtime_ns)
            )
    return tuple(sorted(entries))


class _Model:
    def __init__(self, config: ModelConfig):
        self.config = config
        self.labels = dict(config.version_labels)
        # Both maps are replaced, never mutated, so request threads read them without a lock.
        self.loaded: dict[int, Servable] = {}
        self.states: dict[int, VersionState] = {}
        self.failed: dict[int, tuple] = {}  # version -> fingerprint of the failed attempt
        self.warned_missing = False

    def set_state(self, state: VersionState) -> None:
        self.states = {**self.states, state.version: state}


class ModelRegistry:
    """Loads model versions per config and policy; answers lookups for requests."""

    def __init__(
        self,
        configs: list[ModelConfig],
        poll_wait_seconds: float = 1.0,
        loader: Callable[[str, int, Path], Servable] = load_servable,
    ):
        self._models = {config.name: _Model(config) for config in configs}
        self._poll_wait_seconds = poll_wait_seconds
        self._loader = loader
        self._lock = threading.Lock()  # serialises polls (initial load vs. poller)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def poll_once(self) -> None:
        """Look at every base path once; load new aspired versions, unload others."""
        with self._lock:
            for model in self._models.values():
                if self._stop.is_set():
                    return
                self._refresh(model)

    def start_polling(self) -> None:
        if self._poll_wait_seconds <= 0 or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._poll_loop, name="version-poller", daemon=True)
        self._thread.start()

    def request_stop(self) -> None:
        """Make a running poll return early; ``stop()`` also waits for the poller."""
        self._stop.set()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def _poll_loop(self) -> None:
        while not self._stop.wait(self._poll_wait_seconds):
            try:
                self.poll_once()
            except Exception:  # the poller must survive anything a filesystem does
                logger.exception("Polling the model base paths failed")

    def _refresh(self, model: _Model) -> None:
        name, base_path = model.config.name, model.config.base_path
        try:
            available = list_version_dirs(base_path)
        except OSError as e:
            if not model.warned_missing:
                logger.warning("Cannot list base path %s of model %s: %s", base_path, name, e)
                model.warned_missing = True
            return
        model.warned_missing = False
        aspired = model.config.version_policy.select(list(available))
        for version in sorted(aspired - model.loaded.keys(), reverse=True):
            self._load(model, version, available[version])
        stale = [v for v in model.loaded if v not in aspired]
        keep = [v for v in model.loaded if v in aspired]
        # Availability preserving: never drop the last version while a new one fails.
        if stale and (keep or not aspired):
            model.loaded = {v: s for v, s in model.loaded.items() if v in aspired}
            for version in stale:
                model.set_state(VersionState(version, "END"))
                logger.info("Unloaded servable version {name: %s version: %d}", name, version)

    def _load(self, model: _Model, version: int, path: Path) -> None:
        name = model.config.name
        fingerprint = _fingerprint(path)
        if model.failed.get(version) == fingerprint:
            return  # unchanged since it failed: retry only when the directory changes
        model.set_state(VersionState(version, "LOADING"))
        logger.info("Loading servable version {name: %s version: %d} from %s", name, version, path)
        start = time.monotonic()
        try:
            servable = self._loader(name, version, path)
        except Exception as e:
            model.failed[version] = fingerprint
            message = f"Loading servable version {{name: {name} version: {version}}} failed: {e}"
            model.set_state(VersionState(version, "END", "UNKNOWN", message))
            logger.error("%s", message)
            return
        model.failed.pop(version, None)
        model.loaded = {**model.loaded, version: servable}
        model.set_state(VersionState(version, "AVAILABLE"))
        logger.info(
            "Successfully loaded servable version {name: %s version: %d} in %.2fs",
            name,
            version,
            time.monotonic() - start,
        )

    def get(self, name: str, version: int | None = None, label: str | None = None) -> Servable:
        """The servable a request names (TF Serving's ``GetServableHandle``)."""
        model = self._models.get(name)
        if label is not None:
            if model is None or label not in model.labels:
                raise invalid_argument(f"Unrecognized servable version label: {label}")
            version = model.labels[label]
        loaded = model.loaded if model is not None else {}
        if version is None:
            if not loaded:
                raise RestError("NOT_FOUND", f"Servable not found for request: Latest({name})")
            return loaded[max(loaded)]
        if version not in loaded:
            raise RestError(
                "NOT_FOUND", f"Servable not found for request: Specific({name}, {version})"
            )
        return loaded[version]

    def status(self, name: str, version: int | None = None) -> list[VersionState]:
        """Version states, highest first (TF Serving's ``GetModelStatus``)."""
        model = self._models.get(name)
        states = model.states if model is not None else {}
        if version is not None:
            if version not in states:
                raise RestError("NOT_FOUND", f"Could not find version {version} of model {name}")
            return [states[version]]
        if not states:
            raise RestError("NOT_FOUND", f"Could not find any versions of model {name}")
        return [states[v] for v in sorted(states, reverse=True)]


# --------------------------------------------------------------------------------------
# The REST application
# --------------------------------------------------------------------------------------


class _BodyTooLarge(Exception):
    def __init__(self, size: int | None):
        super().__init__(size)
        self.size = size


class RestApp:
    """WSGI application implementing ``/v1/models/...`` like TF Serving's REST handler."""

    def __init__(
        self,
        registry: ModelRegistry,
        *,
        max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
        num_threads: int | None = None,
        timeout_in_ms: int = 30_000,
        max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
    ):
        self.registry = registry
        self.max_request_bytes = max_request_bytes
        self.max_batch_size = max_batch_size
        self.num_threads = num_threads or 4 * (os.cpu_count() or 1)
        self.timeout_in_ms = timeout_in_ms
        self._slots = threading.BoundedSemaphore(self.num_threads)
        self._executor = concurrent.futures.ThreadPoolExecutor(
            self.num_threads, thread_name_prefix="predict"
        )

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def __call__(self, environ, start_response):
        request = Request(environ)
        start = time.monotonic()
        path = _raw_path(environ)
        try:
            status, body = self.handle(request.method, path, request)
        except RestError as e:
            status, body = e.http_status, rest.error_body(e.message)
        except _BodyTooLarge as e:
            status = 413
            size = "" if e.size is None else f" of {e.size} bytes"
            body = rest.error_body(
                f"Request body{size} exceeds the limit of {self.max_request_bytes} bytes "
                "(--max_request_bytes)"
            )
        except RecursionError:
            status, body = 400, rest.error_body("JSON value nested too deeply")
        except Exception as e:  # a bad request must never take the server down
            logger.exception("Unhandled error for %s %s", request.method, path)
            status, body = 500, rest.error_body(f"Internal error: {type(e).__name__}: {e}")
        logger.info(
            "%s %s %d %.1fms", request.method, path, status, 1000 * (time.monotonic() - start)
        )
        response = Response(body, status=status, content_type="application/json")
        return response(environ, start_response)

    def handle(self, method: str, path: str, request: Request) -> tuple[int, str]:
        if not _API_PATH.fullmatch(path):
            raise RestError("NOT_FOUND", f"Not found: {method} {path}")
        body = self._read_body(request)
        malformed = invalid_argument(f"Malformed request: {method} {path}")
        if method == "POST":
            match = _PREDICT_PATH.fullmatch(path)
        elif method == "GET":
            match = _STATUS_PATH.fullmatch(path)
        else:
            raise malformed
        if match is None:
            raise malformed
        raw_name, version_str, raw_label, verb = match.groups()
        name = unquote(raw_name or "")
        label = unquote(raw_label) if raw_label else None
        version = None
        if version_str:
            version = int(version_str)
            if version > 2**63 - 1:
                raise invalid_argument(f"Failed to convert version: {version_str} to numeric.")
        if method == "POST":
            if verb == "predict":
                return 200, self.predict(name, version, label, body)
            if verb in ("classify", "regress"):
                raise RestError(
                    "UNIMPLEMENTED", f"The local model server does not implement :{verb}"
                )
            raise malformed  # e.g. ':PREDICT': matched case-insensitively, then ignored
        if not name:
            raise invalid_argument("Missing model name in request.")
        if verb == "metadata":
            return 200, self.metadata(name, version, label)
        return 200, self.status(name, version)

    def _read_body(self, request: Request) -> bytes:
        limit = self.max_request_bytes
        if request.content_length is not None and request.content_length > limit:
            raise _BodyTooLarge(request.content_length)
        try:
            body = request.stream.read(limit + 1)  # chunked bodies have no Content-Length
        except (OSError, ClientDisconnected) as e:  # a bad chunk header, a short body
            raise invalid_argument(f"Malformed request body: {e}") from None
        if len(body) > limit:
            raise _BodyTooLarge(None)
        return body

    def status(self, name: str, version: int | None) -> str:
        states = self.registry.status(name, version)
        answer = {
            "model_version_status": [
                {
                    "version": str(s.version),
                    "state": s.state,
                    "status": {"error_code": s.error_code, "error_message": s.error_message},
                }
                for s in states
            ]
        }
        return json.dumps(answer, indent=1)

    def metadata(self, name: str, version: int | None, label: str | None) -> str:
        servable = self.registry.get(name, version, label)
        answer = {
            "model_spec": {"name": name, "signature_name": "", "version": str(servable.version)},
            "metadata": {"signature_def": {"signature_def": servable.signature_def_json}},
        }
        return json.dumps(answer, indent=1)

    def predict(self, name: str, version: int | None, label: str | None, body: bytes) -> str:
        doc = rest.parse_json(body)
        chosen: dict[str, Any] = {}

        def input_infos(signature_name: str) -> Mapping[str, TensorInfo]:
            servable = self.registry.get(name, version, label)
            key = signature_name or DEFAULT_SIGNATURE
            signature = servable.signatures.get(key)
            if signature is None:
                raise invalid_argument(
                    f'Serving signature name: "{key}" not found in signature def'
                )
            chosen["signature"] = signature
            return signature.inputs

        request = rest.parse_predict_request(doc, input_infos)
        outputs = self._run(chosen["signature"], request.inputs)
        return rest.format_predict_response(outputs, request.format)

    def _run(self, signature: Signature, inputs: dict[str, np.ndarray]) -> Mapping[str, Any]:
        # predict_util.cc: PreProcessPrediction, then our own shape check (a graph may
        # not check shapes itself), then the call under the REST timeout.
        if signature.method_name not in PREDICT_METHOD_NAMES:
            raise RestError(
                "INTERNAL",
                "Expected prediction signature method_name to be one of {"
                + ", ".join(PREDICT_METHOD_NAMES)
                + f"}}. Was: {signature.method_name}",
            )
        if set(inputs) != set(signature.inputs):
            sent, wanted = sorted(inputs), sorted(signature.inputs)
            raise invalid_argument(
                f"input size does not match signature: {len(sent)}!={len(wanted)} "
                f"len({{{','.join(sent)}}}) != len({{{','.join(wanted)}}}). "
                f"Sent extra: {{{','.join(sorted(set(sent) - set(wanted)))}}}. "
                f"Missing but required: {{{','.join(sorted(set(wanted) - set(sent)))}}}."
            )
        for input_name, array in inputs.items():
            info = signature.inputs[input_name]
            if not info.is_compatible_with(array.shape):
                raise invalid_argument(
                    f"Input '{input_name}' has shape [{','.join(map(str, array.shape))}], "
                    f"which is not compatible with the signature's shape {info.shape_string()}"
                )
        self._check_batch_size(inputs, signature)
        if signature.call is None:
            raise RestError("INTERNAL", f"Signature {signature.name} cannot be called")
        timeout = self.timeout_in_ms / 1000 if self.timeout_in_ms > 0 else None
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self._slots.acquire(timeout=timeout):
            raise RestError(
                "UNAVAILABLE",
                f"Server overloaded: all {self.num_threads} prediction threads stayed busy "
                f"for {self.timeout_in_ms} ms (--rest_api_num_threads)",
            )
        try:
            future = self._executor.submit(signature.call, inputs)
        except RuntimeError:  # executor shut down
            self._slots.release()
            raise RestError("UNAVAILABLE", "Server is shutting down") from None
        future.add_done_callback(lambda _: self._slots.release())
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            return future.result(timeout=remaining)
        except concurrent.futures.TimeoutError:
            raise RestError(
                "DEADLINE_EXCEEDED",
                f"Deadline Exceeded: prediction did not finish within {self.timeout_in_ms} ms "
                "(--rest_api_timeout_in_ms)",
            ) from None

    def _check_batch_size(self, inputs: Mapping[str, np.ndarray], signature: Signature) -> None:
        """Refuse requests for more rows than ``max_batch_size`` (400, like TF Serving's
        batching refuses a task larger than its ``max_batch_size``)."""
        limit = self.max_batch_size
        for input_name, array in inputs.items():
            info = signature.inputs[input_name]
            batched = info.shape is not None and len(info.shape) > 0 and info.shape[0] is None
            if batched and array.ndim > 0 and array.shape[0] > limit:
                raise invalid_argument(
                    f"Batch size {array.shape[0]} of input '{input_name}' exceeds the server's "
                    f"limit of {limit} (--max_batch_size)"
                )
            if (
                input_name == NUM_SAMPLES_INPUT
                and array.ndim == 0
                and array.dtype.kind in "iu"
                and int(array) > limit
            ):
                raise invalid_argument(
                    f"num_samples must be in [1, {limit}]: got {int(array)} (the server's "
                    "--max_batch_size)"
                )


def _raw_path(environ: Mapping[str, Any]) -> str:
    """The request path as sent (still percent-encoded), without the query string."""
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if raw is None:
        raw = quote(environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", ""))
    return raw.split("?", 1)[0]


# --------------------------------------------------------------------------------------
# Server lifecycle
# --------------------------------------------------------------------------------------


class _RequestHandler(WSGIRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """RestApp logs every request itself."""

    def send_error(self, code: int, message: str | None = None, explain: str | None = None):
        """Errors found before the app runs (a malformed request line or headers, a URI
        too long) are answered with a JSON error body too, not ``http.server``'s HTML."""
        try:
            short, _ = self.responses[code]
        except KeyError:
            short = "Error"
        message = message or short
        self.log_error("code %d, message %s", code, message)
        self.send_response(code, short)
        self.send_header("Connection", "close")
        body = None
        if code >= 200 and code not in (204, 205, 304):
            body = rest.error_body(message).encode("utf-8", "replace")
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)


class ModelServer:
    """Registry + REST app + threaded HTTP server, startable in-process.

    with ModelServer(configs, port=0) as server:
        requests.get(f"{server.url}/v1/models/evae")
    """

    def __init__(
        self,
        configs: list[ModelConfig],
        *,
        host: str = "127.0.0.1",
        port: int = 8501,
        poll_wait_seconds: float = 1.0,
        max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
        num_threads: int | None = None,
        timeout_in_ms: int = 30_000,
        max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
        loader: Callable[[str, int, Path], Servable] = load_servable,
    ):
        self.registry = ModelRegistry(configs, poll_wait_seconds, loader)
        self.app = RestApp(
            self.registry,
            max_request_bytes=max_request_bytes,
            num_threads=num_threads,
            timeout_in_ms=timeout_in_ms,
            max_batch_size=max_batch_size,
        )
        self._host, self._port = host, port
        self._http: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._serving = False
        self._state_lock = threading.Lock()

    @property
    def port(self) -> int:
        if self._http is None:
            raise RuntimeError("The server is not started")
        return self._http.server_port

    @property
    def url(self) -> str:
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self.port}"

    def bind(self) -> ModelServer:
        """Bind the socket, then load the models' initial versions and start polling.

        Connections made meanwhile wait in the socket's backlog until serving starts.
        """
        self._http = make_server(
            self._host, self._port, self.app, threaded=True, request_handler=_RequestHandler
        )
        self.registry.poll_once()
        self.registry.start_polling()
        logger.info("Exporting HTTP/REST API at:%s:%d ...", self._host, self.port)
        return self

    def serve_forever(self) -> None:
        assert self._http is not None, "call bind() first"
        with self._state_lock:
            if self._stopping.is_set():
                return
            self._serving = True
        self._http.serve_forever()

    def start(self) -> ModelServer:
        """``bind()`` and serve from a background thread."""
        self.bind()
        self._thread = threading.Thread(target=self.serve_forever, name="http", daemon=True)
        self._thread.start()
        return self

    def shutdown(self) -> None:
        """Stop accepting requests (safe from any thread but the serving one)."""
        with self._state_lock:
            self._stopping.set()
            serving = self._serving
        self.registry.request_stop()
        if serving and self._http is not None:
            self._http.shutdown()

    def close(self) -> None:
        self.shutdown()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        if self._http is not None:
            self._http.server_close()
            self._http = None
        self.registry.stop()
        self.app.close()

    def __enter__(self) -> ModelServer:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.close()


# --------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m serving.server",
        description="Serve SavedModels over TensorFlow Serving's REST API.",
    )
    parser.add_argument("--model_name", default="default", help="name of the single model")
    parser.add_argument("--model_base_path", help="directory holding the model's version dirs")
    parser.add_argument(
        "--model_config_file",
        help="ModelServerConfig text proto (several models); takes precedence",
    )
    parser.add_argument("--rest_api_port", type=int, default=8501, help="0 picks a free port")
    parser.add_argument(
        "--rest_api_host",
        default="127.0.0.1",
        help="address to bind (0.0.0.0 exposes the server to the network)",
    )
    parser.add_argument(
        "--rest_api_num_threads",
        type=int,
        default=None,
        help="concurrent predictions (default 4 x CPUs)",
    )
    parser.add_argument(
        "--rest_api_timeout_in_ms",
        type=int,
        default=30_000,
        help="predict deadline; <= 0 disables it",
    )
    parser.add_argument(
        "--file_system_poll_wait_seconds",
        type=float,
        default=1.0,
        help="seconds between polls for new versions; 0 polls once",
    )
    parser.add_argument(
        "--max_request_bytes",
        type=int,
        default=DEFAULT_MAX_REQUEST_BYTES,
        help="larger request bodies are answered with 413",
    )
    parser.add_argument(
        "--max_batch_size",
        type=int,
        default=DEFAULT_MAX_BATCH_SIZE,
        help="largest batch dimension of an input and largest num_samples (400 beyond)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=None,
        help="gRPC port of tensorflow_model_server: accepted, not served",
    )
    return parser


def _configs_from_args(parser: argparse.ArgumentParser, args) -> list[ModelConfig]:
    if args.model_config_file:
        if args.model_base_path:
            logger.warning("--model_config_file is set: --model_base_path is ignored")
        if not os.path.isfile(args.model_config_file):
            parser.error(f"--model_config_file {args.model_config_file!r} does not exist")
        try:
            configs = parse_model_config_file(args.model_config_file)
        except (ModelConfigError, OSError, UnicodeDecodeError) as e:
            parser.error(f"cannot read --model_config_file: {e}")
        if not configs:
            parser.error(f"--model_config_file {args.model_config_file!r} lists no models")
        for config in configs:
            if not os.path.isdir(config.base_path):
                parser.error(
                    f"base_path {config.base_path!r} of model {config.name!r} does not exist"
                )
        return configs
    if not args.model_base_path:
        parser.error("one of --model_base_path or --model_config_file is required")
    if not os.path.isdir(args.model_base_path):
        parser.error(f"--model_base_path {args.model_base_path!r} does not exist")
    if not args.model_name:
        parser.error("--model_name must not be empty")
    base_path = str(Path(args.model_base_path).resolve())
    return [ModelConfig(args.model_name, base_path, "tensorflow", VersionPolicy())]


def main(argv: list[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    if not 0 <= args.rest_api_port <= 65535:
        parser.error(f"--rest_api_port must be in 0..65535, got {args.rest_api_port}")
    if args.max_request_bytes <= 0:
        parser.error(f"--max_request_bytes must be positive, got {args.max_request_bytes}")
    if args.rest_api_num_threads is not None and args.rest_api_num_threads < 1:
        parser.error(f"--rest_api_num_threads must be >= 1, got {args.rest_api_num_threads}")
    if not args.rest_api_host.strip():
        parser.error("--rest_api_host must not be empty (use 0.0.0.0 to listen on every address)")
    poll = args.file_system_poll_wait_seconds
    if not (math.isfinite(poll) and poll >= 0):
        parser.error(f"--file_system_poll_wait_seconds must be a finite number >= 0, got {poll:g}")
    if args.max_batch_size < 1:
        parser.error(f"--max_batch_size must be >= 1, got {args.max_batch_size}")
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    configs = _configs_from_args(parser, args)
    if args.port is not None:
        logger.warning("--port=%d ignored: this server only serves REST", args.port)

    server = ModelServer(
        configs,
        host=args.rest_api_host,
        port=args.rest_api_port,
        poll_wait_seconds=args.file_system_poll_wait_seconds,
        max_request_bytes=args.max_request_bytes,
        num_threads=args.rest_api_num_threads,
        timeout_in_ms=args.rest_api_timeout_in_ms,
        max_batch_size=args.max_batch_size,
    )

    def on_signal(signum, _frame):
        logger.info("Received %s, shutting down", signal.Signals(signum).name)
        # shutdown() waits for serve_forever() to return: call it off this thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        server.bind()
    except OSError as e:
        server.close()
        print(
            f"error: cannot serve on {args.rest_api_host}:{args.rest_api_port}: {e}",
            file=sys.stderr,
        )
        return 1
    try:
        server.serve_forever()
    finally:
        server.close()
    logger.info("Server stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
