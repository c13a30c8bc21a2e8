"""The model registry and the predict core that REST and gRPC share (``docs/serving.md``).

``ModelRegistry`` loads the versions each ``ModelConfig``'s policy asks for and swaps new
ones in, as TF Serving does. ``Predictor`` resolves a model spec to a signature, checks
the inputs against it and the server's limits, and runs it under the predict deadline.
Every error is a ``ServingError`` with a canonical code from ``error_codes.proto``.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
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
from tensorflow.core.protobuf import error_codes_pb2

from evae_tf import errors
from serving.config import DEFAULT_MAX_BATCH_SIZE, ModelConfig, select_versions

logger = logging.getLogger(__name__)

Code = error_codes_pb2.Code
DEFAULT_SIGNATURE = "serving_default"
PREDICT_METHOD_NAMES = tuple(f"tensorflow/serving/{m}" for m in ("predict", "classify", "regress"))
NUM_SAMPLES_INPUT = "num_samples"  # a scalar integer input of this name asks for N rows


class ServingError(errors.ServingError):
    """A failed request: ``code`` is a canonical ``error_codes_pb2.Code`` value."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code, self.code_name, self.message = code, Code.Name(code), message


def invalid_argument(message: str) -> ServingError:
    return ServingError(Code.INVALID_ARGUMENT, message)


@dataclasses.dataclass(frozen=True)
class Signature:
    """One SignatureDef: its inputs' specs and, if it is callable, ``call``."""

    name: str
    inputs: Mapping[str, tf.TensorSpec]
    method_name: str
    call: Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]] | None


@dataclasses.dataclass(frozen=True)
class Servable:
    """A loaded model version: its signatures and its SignatureDef map proto."""

    version: int
    signatures: Mapping[str, Signature]
    signature_defs: Any  # the MetaGraphDef's map<string, SignatureDef>, for metadata
    handle: Any = None  # the session holding the loaded graph and its variables


def _make_call(session: tf.compat.v1.Session, signature_def):
    feeds = {name: info.name for name, info in signature_def.inputs.items()}
    names = sorted(signature_def.outputs)
    fetches = [signature_def.outputs[name].name for name in names]

    def call(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            values = session.run(fetches, {feeds[k]: v for k, v in inputs.items()})
        except tf.errors.OpError as e:  # TF's message, as TF Serving reports it
            message = e.message.removeprefix("Graph execution error:").strip()
            raise ServingError(e.error_code, message) from None
        return dict(zip(names, values, strict=True))

    return call


def load_servable(name: str, version: int, path: str | os.PathLike) -> Servable:
    """The ``serve`` MetaGraphDef in a session with the process's threads, as TF Serving's
    ``LoadSavedModel``: a signature is one ``Session.run`` (bench/NOTES.md, change 20)."""
    threads = tf.config.threading
    session = tf.compat.v1.Session(graph=tf.Graph(), config=tf.compat.v1.ConfigProto(
        intra_op_parallelism_threads=threads.get_intra_op_parallelism_threads(),
        inter_op_parallelism_threads=threads.get_inter_op_parallelism_threads(),
        allow_soft_placement=True))
    with session.graph.as_default():
        meta_graph = tf.compat.v1.saved_model.load(session, ["serve"], str(path))
    signatures = {}
    for sig_name, sig_def in meta_graph.signature_def.items():
        specs = {key: tf.TensorSpec(tf.TensorShape(info.tensor_shape), tf.as_dtype(info.dtype), key)
                 for key, info in sig_def.inputs.items()}
        call = _make_call(session, sig_def) if sig_def.method_name in PREDICT_METHOD_NAMES else None
        signatures[sig_name] = Signature(sig_name, specs, sig_def.method_name, call)
    return Servable(version, signatures, meta_graph.signature_def, session)


# --- Model registry: versions on disk -> loaded servables ------------------------------


@dataclasses.dataclass(frozen=True)
class VersionState:
    version: int
    state: str  # ModelVersionStatus.State's name: LOADING, AVAILABLE, END, ...
    error_code: int = Code.OK
    error_message: str = ""


def list_version_dirs(base_path: str | os.PathLike) -> dict[int, Path]:
    """Integer-named subdirectories holding a ``saved_model.pb``."""
    with os.scandir(base_path) as entries:
        paths = [Path(e.path) for e in entries if re.fullmatch(r"[0-9]+", e.name) and e.is_dir()]
    return {int(p.name): p for p in sorted(paths, reverse=True) if (p / "saved_model.pb").is_file()}


def _fingerprint(path: Path) -> list:
    """Every entry under ``path`` with its size and mtime: tells a changed directory."""
    with contextlib.suppress(OSError):  # changing while we look: a fingerprint of its own
        return sorted((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in path.rglob("*"))
    return []


@dataclasses.dataclass
class _Model:
    """One configured model; ``loaded``/``states`` are replaced, never mutated: no lock."""

    config: ModelConfig
    loaded: dict[int, Servable] = dataclasses.field(default_factory=dict)
    states: dict[int, VersionState] = dataclasses.field(default_factory=dict)
    failed: dict[int, list] = dataclasses.field(default_factory=dict)  # fingerprints
    warned_missing: bool = False

    def set_state(self, version: int, state: str, *error) -> None:
        self.states = {**self.states, version: VersionState(version, state, *error)}


class ModelRegistry:
    """Loads model versions per config and policy; answers lookups for requests."""

    def __init__(self, configs: list[ModelConfig], poll_wait_seconds: float = 1.0,
                 loader: Callable[[str, int, Path], Servable] = load_servable):
        self._models = {config.name: _Model(config) for config in configs}
        self._poll_wait_seconds, self._loader = poll_wait_seconds, loader
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
        """Poll every ``poll_wait_seconds`` from a thread (never if that is 0)."""
        if self._poll_wait_seconds > 0 and self._thread is None:
            self._thread = threading.Thread(target=self._poll_loop, name="poller", daemon=True)
            self._thread.start()

    def stop(self, wait: bool = True) -> None:
        """End polling (a running poll returns early); ``wait`` for the poller to end."""
        self._stop.set()
        if wait and self._thread is not None:
            self._thread.join(timeout=30)

    def _poll_loop(self) -> None:
        while not self._stop.wait(self._poll_wait_seconds):
            try:
                self.poll_once()
            except Exception:  # the poller must survive anything a filesystem does
                logger.exception("Polling the model base paths failed")

    def _refresh(self, model: _Model) -> None:
        try:
            available = list_version_dirs(model.config.base_path)
        except OSError as e:
            if not model.warned_missing:
                logger.warning("Cannot list base path %s of model %s: %s",
                               model.config.base_path, model.config.name, e)
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
                model.set_state(version, "END")
                logger.info("Unloaded servable version {name: %s version: %d}",
                            model.config.name, version)

    def _load(self, model: _Model, version: int, path: Path) -> None:
        servable_id = f"{{name: {model.config.name} version: {version}}}"
        fingerprint = _fingerprint(path)
        if model.failed.get(version) == fingerprint:
            return  # unchanged since it failed: retry only when the directory changes
        model.set_state(version, "LOADING")
        logger.info("Loading servable version %s from %s", servable_id, path)
        start = time.monotonic()
        try:
            servable = self._loader(model.config.name, version, path)
        except Exception as e:
            model.failed[version] = fingerprint
            message = f"Loading servable version {servable_id} failed: {e}"
            model.set_state(version, "END", Code.UNKNOWN, message)
            logger.error("%s", message)
            return
        model.failed.pop(version, None)
        model.loaded = {**model.loaded, version: servable}
        model.set_state(version, "AVAILABLE")
        logger.info("Successfully loaded servable version %s in %.2fs", servable_id,
                    time.monotonic() - start)

    def get(self, name: str, version: int | None = None, label: str | None = None) -> Servable:
        """The servable a request names (TF Serving's ``GetServableHandle``)."""
        model = self._models.get(name)
        if label:
            if model is None or label not in model.config.version_labels:
                raise invalid_argument(f"Unrecognized servable version label: {label}")
            version = model.config.version_labels[label]
        loaded = model.loaded if model is not None else {}
        if version is None and loaded:
            return loaded[max(loaded)]
        if version is None or version not in loaded:
            wanted = f"Latest({name})" if version is None else f"Specific({name}, {version})"
            raise ServingError(Code.NOT_FOUND, f"Servable not found for request: {wanted}")
        return loaded[version]

    def status(self, name: str, version: int | None = None) -> list[VersionState]:
        """Version states, highest first (TF Serving's ``GetModelStatus``)."""
        model = self._models.get(name)
        states = model.states if model is not None else {}
        if version is not None and version not in states:
            raise ServingError(Code.NOT_FOUND, f"Could not find version {version} of model {name}")
        if not states:
            raise ServingError(Code.NOT_FOUND, f"Could not find any versions of model {name}")
        return [states[v] for v in sorted(states, reverse=True) if version in (None, v)]


# --- Predict: model spec + input arrays -> output arrays (predict_util.cc) -------------


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """What a request names: a model, and at most one of a version or a label."""

    name: str
    version: int | None = None
    label: str | None = None
    signature_name: str = ""


def _shape_string(shape: tf.TensorShape) -> str:  # as TF Serving's messages write it
    dims = shape.as_list() if shape.rank is not None else ["?"]
    return "[" + ",".join("-1" if d is None else str(d) for d in dims) + "]"


class Predictor:
    """Signature lookup, input checks, limits and the deadline, for every protocol."""

    def __init__(self, registry: ModelRegistry, *, num_threads: int | None = None,
                 timeout_in_ms: int = 30_000, max_batch_size: int = DEFAULT_MAX_BATCH_SIZE):
        self.registry = registry
        self.num_threads = num_threads or 4 * (os.cpu_count() or 1)
        self.timeout_in_ms, self.max_batch_size = timeout_in_ms, max_batch_size
        self._executor = concurrent.futures.ThreadPoolExecutor(self.num_threads, "predict")

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def predict(self, spec: ModelSpec, parse: Callable[[Signature], dict[str, np.ndarray]]):
        """``(servable, outputs)``: resolve ``spec``, ``parse`` the request, check, run."""
        servable = self.registry.get(spec.name, spec.version, spec.label)
        key = spec.signature_name or DEFAULT_SIGNATURE
        signature = servable.signatures.get(key)
        if signature is None:
            raise invalid_argument(f'Serving signature name: "{key}" not found in signature def')
        if signature.method_name not in PREDICT_METHOD_NAMES or signature.call is None:
            raise ServingError(Code.INTERNAL, "Expected prediction signature method_name to be "
                               f"one of {{{', '.join(PREDICT_METHOD_NAMES)}}}. "
                               f"Was: {signature.method_name}")
        inputs = parse(signature)
        self.check_inputs(signature, inputs)
        return servable, self._run(signature.call, inputs)

    def check_inputs(self, signature: Signature, inputs: Mapping[str, np.ndarray]) -> None:
        """Names, shapes and the batch limit of ``inputs`` against ``signature``."""
        sent, wanted = set(inputs), set(signature.inputs)
        if sent != wanted:
            raise invalid_argument(
                f"input size does not match signature: {len(sent)}!={len(wanted)} "
                f"len({{{','.join(sorted(sent))}}}) != len({{{','.join(sorted(wanted))}}}). "
                f"Sent extra: {{{','.join(sorted(sent - wanted))}}}. "
                f"Missing but required: {{{','.join(sorted(wanted - sent))}}}.")
        limit = self.max_batch_size
        for name, array in inputs.items():
            shape = signature.inputs[name].shape
            if not shape.is_compatible_with(array.shape):
                raise invalid_argument(
                    f"Input '{name}' has shape [{','.join(map(str, array.shape))}], which is "
                    f"not compatible with the signature's shape {_shape_string(shape)}")
            if shape.rank and shape[0] is None and array.ndim and array.shape[0] > limit:
                raise invalid_argument(f"Batch size {array.shape[0]} of input '{name}' exceeds "
                                       f"the server's limit of {limit} (--max_batch_size)")
            if (name == NUM_SAMPLES_INPUT and array.ndim == 0 and array.dtype.kind in "iu"
                    and int(array) > limit):
                raise invalid_argument(f"num_samples must be in [1, {limit}]: got {int(array)} "
                                       "(the server's --max_batch_size)")

    def _run(self, call, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``call(inputs)`` on a prediction thread within the deadline: UNAVAILABLE if no
        thread was free for all of it, DEADLINE_EXCEEDED if the prediction ran over."""
        try:
            future = self._executor.submit(call, inputs)
        except RuntimeError:  # executor shut down
            raise ServingError(Code.UNAVAILABLE, "Server is shutting down") from None
        try:
            return future.result(self.timeout_in_ms / 1000 if self.timeout_in_ms > 0 else None)
        except concurrent.futures.TimeoutError:
            if future.cancel():  # still queued: it never got a thread
                raise ServingError(Code.UNAVAILABLE, f"Server overloaded: all {self.num_threads} "
                                   f"prediction threads stayed busy for {self.timeout_in_ms} ms "
                                   "(--rest_api_num_threads)") from None
            raise ServingError(Code.DEADLINE_EXCEEDED, "Deadline Exceeded: prediction did not "
                               f"finish within {self.timeout_in_ms} ms (--rest_api_timeout_in_ms)"
                               ) from None
