"""The model registry and the predict core that REST and gRPC share.

``load_servable`` loads one version directory; ``ModelRegistry`` loads the versions a
``ModelConfig``'s policy asks for and swaps new ones in (TF Serving's behaviour, see
``docs/serving.md``); ``Predictor`` resolves a model spec to a signature, checks the
inputs against it and the server's limits, and runs it under the predict deadline.
Protocols only parse requests into numpy arrays and format the outputs; every error is
a ``ServingError`` carrying a canonical code from ``error_codes.proto``.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import error_codes_pb2, meta_graph_pb2, saved_model_pb2

from serving.config import ModelConfig, select_versions

logger = logging.getLogger(__name__)

Code = error_codes_pb2.Code
DEFAULT_SIGNATURE = "serving_default"
PREDICT_METHOD_NAMES = (
    "tensorflow/serving/predict",
    "tensorflow/serving/classify",
    "tensorflow/serving/regress",
)
# Requests for more rows than this are refused before the model runs.
DEFAULT_MAX_BATCH_SIZE = 1024
# A scalar integer input of this name asks the model for that many rows.
NUM_SAMPLES_INPUT = "num_samples"


class ServingError(Exception):
    """A failed request: ``code`` is a canonical ``error_codes_pb2.Code`` value."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def code_name(self) -> str:
        return Code.Name(self.code)


def invalid_argument(message: str) -> ServingError:
    return ServingError(Code.INVALID_ARGUMENT, message)


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    """A signature input or output: ``tf.DType`` and shape (``None`` = unknown)."""

    dtype: tf.DType | None  # None: DT_INVALID (e.g. ``__saved_model_init_op``)
    shape: tuple[int | None, ...] | None  # None: unknown rank

    def is_compatible_with(self, shape: tuple[int, ...]) -> bool:
        return self.shape is None or tf.TensorShape(self.shape).is_compatible_with(shape)

    def shape_string(self) -> str:
        if self.shape is None:
            return "[?]"
        return "[" + ",".join("-1" if d is None else str(d) for d in self.shape) + "]"


@dataclasses.dataclass(frozen=True)
class Signature:
    """One SignatureDef; ``call`` is None for entries that are not callable."""

    name: str
    inputs: Mapping[str, TensorInfo]
    outputs: Mapping[str, TensorInfo]
    method_name: str
    call: Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]] | None


@dataclasses.dataclass(frozen=True)
class Servable:
    """A loaded model version: its signatures and its SignatureDef map proto."""

    name: str
    version: int
    path: str
    signatures: Mapping[str, Signature]
    signature_defs: Any  # the MetaGraphDef's map<string, SignatureDef>
    handle: Any = None  # keeps the loaded SavedModel (and its variables) alive


def _tf_error_message(message: str) -> str:
    """Strip TF's Python-side decoration so messages read as TF Serving's do."""
    marker = "<stack traces unavailable>\n"
    if marker in message:
        message = message[message.index(marker) + len(marker) :]
    message = message.removeprefix("Graph execution error:").lstrip()
    return re.sub(r"\s*\[Op:[^\]]*\]\s*$", "", message).strip()


def _read_meta_graph(path: Path) -> meta_graph_pb2.MetaGraphDef:
    from google.protobuf import text_format

    saved_model = saved_model_pb2.SavedModel()
    if (path / "saved_model.pb").exists():
        saved_model.ParseFromString((path / "saved_model.pb").read_bytes())
    else:
        text_format.Parse((path / "saved_model.pbtxt").read_text(), saved_model)
    for meta_graph in saved_model.meta_graphs:
        if set(meta_graph.meta_info_def.tags) == {"serve"}:
            return meta_graph
    raise ValueError(f"SavedModel at {path} has no MetaGraphDef with tags ['serve']")


def _tensor_info(proto) -> TensorInfo:
    shape = tf.TensorShape(proto.tensor_shape)
    dims = None if shape.rank is None else tuple(shape.as_list())
    return TensorInfo(tf.as_dtype(proto.dtype) if proto.dtype else None, dims)


def _spec_info(spec: tf.TensorSpec) -> TensorInfo:
    return TensorInfo(spec.dtype, None if spec.shape.rank is None else tuple(spec.shape.as_list()))


def _make_call(function, specs: Mapping[str, tf.TensorSpec]):
    def call(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        tensors = {k: tf.constant(v, dtype=specs[k].dtype) for k, v in inputs.items()}
        try:
            outputs = function(**tensors)
        except tf.errors.OpError as e:
            raise ServingError(e.error_code, _tf_error_message(e.message)) from None
        return {name: value.numpy() for name, value in outputs.items()}

    return call


def load_servable(name: str, version: int, path: str | os.PathLike) -> Servable:
    """Load one version directory with ``tf.saved_model.load`` (tag ``serve``)."""
    path = Path(path)
    meta_graph = _read_meta_graph(path)
    loaded = tf.saved_model.load(str(path), tags=["serve"])
    signatures = {}
    for sig_name, sig_def in meta_graph.signature_def.items():
        function = loaded.signatures.get(sig_name)
        inputs = {k: _tensor_info(v) for k, v in sig_def.inputs.items()}
        call = None
        if function is not None:
            specs = function.structured_input_signature[1]
            inputs = {k: _spec_info(spec) for k, spec in specs.items()}
            call = _make_call(function, specs)
        outputs = {k: _tensor_info(v) for k, v in sig_def.outputs.items()}
        signatures[sig_name] = Signature(sig_name, inputs, outputs, sig_def.method_name, call)
    return Servable(name, version, str(path), signatures, meta_graph.signature_def, loaded)


# --------------------------------------------------------------------------------------
# Model registry: versions on disk -> loaded servables
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class VersionState:
    version: int
    state: str  # ModelVersionStatus.State: START, LOADING, AVAILABLE, UNLOADING, END
    error_code: int = Code.OK
    error_message: str = ""


def list_version_dirs(base_path: str | os.PathLike) -> dict[int, Path]:
    """Integer-named subdirectories holding a ``saved_model.pb`` (or ``.pbtxt``)."""
    versions: dict[int, Path] = {}
    with os.scandir(base_path) as entries:
        for entry in entries:
            if re.fullmatch(r"[0-9]+", entry.name) and entry.is_dir():
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
            entries.append((os.path.join(root, file), stat.st_size, stat.st_mtime_ns))
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
        if self._poll_wait_seconds > 0 and self._thread is None:
            self._thread = threading.Thread(target=self._poll_loop, name="poller", daemon=True)
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
        aspired = select_versions(model.config, list(available))
        for version in sorted(aspired - model.loaded.keys(), reverse=True):
            self._load(model, version, available[version])
        stale = [v for v in model.loaded if v not in aspired]
        # Availability preserving: never drop the last version while a new one fails.
        if stale and (len(stale) < len(model.loaded) or not aspired):
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
            model.set_state(VersionState(version, "END", Code.UNKNOWN, message))
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
        if label:
            if model is None or label not in model.labels:
                raise invalid_argument(f"Unrecognized servable version label: {label}")
            version = model.labels[label]
        loaded = model.loaded if model is not None else {}
        if version is None:
            if not loaded:
                raise ServingError(Code.NOT_FOUND, f"Servable not found for request: Latest({name})")
            return loaded[max(loaded)]
        if version not in loaded:
            raise ServingError(
                Code.NOT_FOUND, f"Servable not found for request: Specific({name}, {version})"
            )
        return loaded[version]

    def status(self, name: str, version: int | None = None) -> list[VersionState]:
        """Version states, highest first (TF Serving's ``GetModelStatus``)."""
        model = self._models.get(name)
        states = model.states if model is not None else {}
        if version is not None:
            if version not in states:
                raise ServingError(
                    Code.NOT_FOUND, f"Could not find version {version} of model {name}"
                )
            return [states[version]]
        if not states:
            raise ServingError(Code.NOT_FOUND, f"Could not find any versions of model {name}")
        return [states[v] for v in sorted(states, reverse=True)]


# --------------------------------------------------------------------------------------
# Predict: model spec + input arrays -> output arrays (predict_util.cc)
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """What a request names: a model, and at most one of a version or a label."""

    name: str
    version: int | None = None
    label: str | None = None
    signature_name: str = ""


class Predictor:
    """Signature lookup, input checks, limits and the deadline, for every protocol."""

    def __init__(
        self,
        registry: ModelRegistry,
        *,
        num_threads: int | None = None,
        timeout_in_ms: int = 30_000,
        max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
    ):
        self.registry = registry
        self.num_threads = num_threads or 4 * (os.cpu_count() or 1)
        self.timeout_in_ms = timeout_in_ms
        self.max_batch_size = max_batch_size
        self._slots = threading.BoundedSemaphore(self.num_threads)
        self._executor = concurrent.futures.ThreadPoolExecutor(
            self.num_threads, thread_name_prefix="predict"
        )

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def signature(self, spec: ModelSpec) -> tuple[Servable, Signature]:
        """The servable and signature ``spec`` names (NOT_FOUND / INVALID_ARGUMENT)."""
        servable = self.registry.get(spec.name, spec.version, spec.label)
        key = spec.signature_name or DEFAULT_SIGNATURE
        signature = servable.signatures.get(key)
        if signature is None:
            raise invalid_argument(f'Serving signature name: "{key}" not found in signature def')
        if signature.method_name not in PREDICT_METHOD_NAMES:
            raise ServingError(
                Code.INTERNAL,
                f"Expected prediction signature method_name to be one of "
                f"{{{', '.join(PREDICT_METHOD_NAMES)}}}. Was: {signature.method_name}",
            )
        return servable, signature

    def check_inputs(self, signature: Signature, inputs: Mapping[str, np.ndarray]) -> None:
        """Names, shapes and the batch limit of ``inputs`` against ``signature``."""
        if set(inputs) != set(signature.inputs):
            sent, wanted = set(inputs), set(signature.inputs)
            raise invalid_argument(
                f"input size does not match signature: {len(sent)}!={len(wanted)} "
                f"len({{{','.join(sorted(sent))}}}) != len({{{','.join(sorted(wanted))}}}). "
                f"Sent extra: {{{','.join(sorted(sent - wanted))}}}. "
                f"Missing but required: {{{','.join(sorted(wanted - sent))}}}."
            )
        limit = self.max_batch_size
        for name, array in inputs.items():
            info = signature.inputs[name]
            if not info.is_compatible_with(array.shape):
                raise invalid_argument(
                    f"Input '{name}' has shape [{','.join(map(str, array.shape))}], "
                    f"which is not compatible with the signature's shape {info.shape_string()}"
                )
            batched = bool(info.shape) and info.shape[0] is None
            if batched and array.ndim > 0 and array.shape[0] > limit:
                raise invalid_argument(
                    f"Batch size {array.shape[0]} of input '{name}' exceeds the server's "
                    f"limit of {limit} (--max_batch_size)"
                )
            if name == NUM_SAMPLES_INPUT and array.ndim == 0 and array.dtype.kind in "iu":
                if int(array) > limit:
                    raise invalid_argument(
                        f"num_samples must be in [1, {limit}]: got {int(array)} "
                        "(the server's --max_batch_size)"
                    )

    def predict(self, spec: ModelSpec, parse: Callable[[Signature], dict[str, np.ndarray]]):
        """Resolve ``spec``, ``parse`` the request against its signature, check and run.

        Returns ``(servable, outputs)``.
        """
        servable, signature = self.signature(spec)
        inputs = parse(signature)
        self.check_inputs(signature, inputs)
        if signature.call is None:
            raise ServingError(Code.INTERNAL, f"Signature {signature.name} cannot be called")
        return servable, self._run(signature.call, inputs)

    def _run(self, call, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        timeout = self.timeout_in_ms / 1000 if self.timeout_in_ms > 0 else None
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self._slots.acquire(timeout=timeout):
            raise ServingError(
                Code.UNAVAILABLE,
                f"Server overloaded: all {self.num_threads} prediction threads stayed busy "
                f"for {self.timeout_in_ms} ms (--rest_api_num_threads)",
            )
        try:
            future = self._executor.submit(call, inputs)
        except RuntimeError:  # executor shut down
            self._slots.release()
            raise ServingError(Code.UNAVAILABLE, "Server is shutting down") from None
        future.add_done_callback(lambda _: self._slots.release())
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            return future.result(timeout=remaining)
        except concurrent.futures.TimeoutError:
            raise ServingError(
                Code.DEADLINE_EXCEEDED,
                f"Deadline Exceeded: prediction did not finish within {self.timeout_in_ms} ms "
                "(--rest_api_timeout_in_ms)",
            ) from None
