"""TF Serving's REST API (``docs/serving.md``): JSON in, the shared predict core, JSON out.

Each predict request goes through three separate steps:

* parse: ``parse_predict_body`` turns ``{"instances": ...}`` (row format, a batch
  dimension is added) or ``{"inputs": ...}`` (columnar) into numpy arrays typed by the
  signature, with TF Serving's checks (``json_tensor.cc``);
* predict: ``serving.core.Predictor``, shared with gRPC;
* format: ``format_predict_response`` writes ``{"predictions": ...}`` /
  ``{"outputs": ...}`` with orjson (numpy arrays directly; strings named ``*_bytes`` as
  ``{"b64": ...}``).

Errors are ``{"error": "<message>"}`` with the HTTP status of the canonical code.
Numbers are JSON numbers, not TF Serving's exact bytes: parse them, don't compare text.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
import re
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, unquote

import numpy as np
import orjson
import tensorflow as tf
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge
from werkzeug.wrappers import Request, Response

from serving.core import Code, ModelSpec, Predictor, ServingError, Signature, invalid_argument

logger = logging.getLogger(__name__)

# tensorflow_serving/model_servers/http_server.cc: ToHTTPStatusCode.
HTTP_STATUS = {
    Code.CANCELLED: 499, Code.UNKNOWN: 500, Code.INVALID_ARGUMENT: 400,
    Code.DEADLINE_EXCEEDED: 504, Code.NOT_FOUND: 404, Code.ALREADY_EXISTS: 409,
    Code.PERMISSION_DENIED: 403, Code.RESOURCE_EXHAUSTED: 429,
    Code.FAILED_PRECONDITION: 400, Code.ABORTED: 409, Code.OUT_OF_RANGE: 400,
    Code.UNIMPLEMENTED: 501, Code.INTERNAL: 500, Code.UNAVAILABLE: 503,
    Code.DATA_LOSS: 500, Code.UNAUTHENTICATED: 401,
}  # fmt: skip
ROW, COLUMNAR = "row", "columnar"

# tensorflow_serving/model_servers/http_rest_api_util.cc
_PREDICT_PATH = re.compile(
    r"/v1/models/([^/:]+)(?:/versions/([0-9]+)|/labels/([^/:]+))?:(classify|regress|predict)",
    re.IGNORECASE,
)
_STATUS_PATH = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:/versions/([0-9]+)|/labels/([^/:]+))?(/metadata)?", re.IGNORECASE
)


def error_body(message: str) -> bytes:
    return orjson.dumps({"error": message})


def _show(value: Any) -> str:
    """A JSON value as quoted in error messages (compact, at most 200 characters)."""
    text = json.dumps(value, separators=(",", ":"), default=str)
    return text if len(text) <= 200 else text[:197] + "..."


# --------------------------------------------------------------------------------------
# Parse: JSON body -> input arrays (json_tensor.cc: FillPredictRequestFromJson)
# --------------------------------------------------------------------------------------


def parse_json(body: bytes) -> Any:
    """orjson; Python's json only for what orjson refuses but TF Serving takes (NaN)."""
    if not body:
        raise invalid_argument("JSON Parse error: The document is empty")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as e:
        try:
            return json.loads(body)
        except (ValueError, RecursionError):
            raise invalid_argument(f"JSON Parse error: {e}") from None


def _is_b64(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)


def _dtype_name(dtype: tf.DType) -> str:
    """TF's ``DataTypeString``, as TF Serving's messages name types."""
    return {tf.float32: "float", tf.float64: "double", tf.float16: "half"}.get(dtype, dtype.name)


def _type_error(value: Any, dtype: tf.DType) -> ServingError:
    kind = {dict: "Object", list: "Array", str: "String", bool: str(value), type(None): "Null"}
    return invalid_argument(
        f"JSON Value: {_show(value)} Type: {kind.get(type(value), 'Number')} "
        f"is not of expected type: {_dtype_name(dtype)}"
    )


def _leaf(value: Any, dtype: tf.DType) -> Any:
    """Check one JSON leaf against ``dtype`` (json_tensor.cc: AddValueToTensor)."""
    if dtype == tf.string:
        if _is_b64(value):
            try:
                return base64.b64decode(value["b64"] + "=" * (-len(value["b64"]) % 4), validate=True)
            except (binascii.Error, ValueError):
                raise invalid_argument("Unable to base64 decode") from None
        if isinstance(value, str):
            return value.encode("utf-8")
        raise _type_error(value, dtype)
    if dtype == tf.bool:
        if isinstance(value, bool):
            return value
        raise _type_error(value, dtype)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _type_error(value, dtype)
    if dtype.is_floating:
        try:
            with np.errstate(over="ignore"):
                cast = float(dtype.as_numpy_dtype(value))
        except OverflowError:
            cast = float("inf")
        if cast != value and not (math.isnan(cast) and math.isnan(value)):
            if isinstance(value, int) or math.isinf(cast):
                raise invalid_argument(
                    f"Cannot convert JSON value: {value} to {_dtype_name(dtype)} without loss "
                    "of precision."
                )
        return value
    if dtype.is_integer and isinstance(value, int) and dtype.min <= value <= dtype.max:
        return value
    if dtype.is_integer or dtype.is_complex:
        raise _type_error(value, dtype)
    raise ServingError(Code.UNIMPLEMENTED, f"Conversion of JSON Value to type: {dtype.name}")


def json_to_tensor(value: Any, dtype: tf.DType) -> np.ndarray:
    """One JSON value (scalar or dense nested lists) -> array of ``dtype``."""
    shape: list[int] = []
    probe = value
    while isinstance(probe, list):  # json_tensor.cc: GetDenseTensorShape
        shape.append(len(probe))
        probe = probe[0] if probe else None
    flat: list = []

    def fill(item: Any, level: int) -> None:
        if not isinstance(item, list):
            if level != len(shape):
                raise invalid_argument(
                    f"JSON Value: {_show(item)} found at incorrect level: {level + 1} in the "
                    f"JSON DOM. Expected at level: {len(shape)}"
                )
            flat.append(_leaf(item, dtype))
        elif level >= len(shape) or len(item) != shape[level]:
            raise invalid_argument(
                f"Encountered list at unexpected size: {len(item)} at level: {level}"
                f" expected size: {shape[level] if level < len(shape) else 'a value'}"
            )
        else:
            for element in item:
                fill(element, level + 1)

    fill(value, 0)
    np_dtype = object if dtype == tf.string else dtype.as_numpy_dtype
    array = np.empty(len(flat), dtype=np_dtype)
    array[:] = flat
    return array.reshape(shape)


def _instances(instances: list, infos: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Row format: one value (one input) or one object per instance; stacked by name."""
    names = sorted(infos)
    objects = isinstance(instances[0], dict) and not _is_b64(instances[0])
    if not objects and len(names) > 1:
        raise invalid_argument(
            "instances is a plain list, but expecting list of objects as multiple input "
            "tensors required as per tensorinfo_map"
        )
    columns: dict[str, list[np.ndarray]] = {name: [] for name in names}
    for index, element in enumerate(instances):
        is_object = isinstance(element, dict) and not _is_b64(element)
        if is_object != objects:
            kind = "object" if objects else "value/list"
            raise invalid_argument(f"Expecting {kind} but got something else at item {index}")
        items = element if objects else {names[0]: element}
        if sorted(items) != names:
            raise invalid_argument(
                f"Failed to process element: {index} of 'instances' list. JSON object: "
                f"{_show(element)} keys must be equal to: {','.join(names)}"
            )
        for name, item in items.items():
            try:
                columns[name].append(json_to_tensor(item, infos[name].dtype))
            except ServingError as e:
                raise ServingError(
                    e.code,
                    f"Failed to process element: {index} key: {name} of 'instances' list. "
                    f"Error: {e.code_name}: {e.message}",
                ) from None
            if columns[name][-1].shape != columns[name][0].shape:
                raise invalid_argument(
                    f"Failed to process element: {index} of 'instances' list. Error: "
                    f"Expecting shape {list(columns[name][0].shape)} but got: "
                    f"{list(columns[name][-1].shape)}"
                )
    return {name: np.stack(arrays) for name, arrays in columns.items()}


def _columns(inputs: Any, infos: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Columnar format: a value (one input) or an object naming every input."""
    if not isinstance(inputs, dict) or _is_b64(inputs):
        if len(infos) > 1:
            raise invalid_argument(
                "inputs is a plain value/list, but expecting an object as multiple input "
                "tensors required as per tensorinfo_map"
            )
        ((name, info),) = infos.items()
        return {name: json_to_tensor(inputs, info.dtype)}
    for name in sorted(infos):
        if name not in inputs:
            raise invalid_argument(f"Missing named input: {name} in 'inputs' object.")
    return {name: json_to_tensor(inputs[name], infos[name].dtype) for name in sorted(infos)}


def parse_predict_body(doc: Any, signature: Signature) -> tuple[str, dict[str, np.ndarray]]:
    """``(format, inputs)`` of a parsed predict body, typed by ``signature``."""
    if not signature.inputs:
        raise invalid_argument(f"Failed to get input map for signature: {signature.name}")
    if "instances" in doc and "inputs" in doc:
        raise invalid_argument(
            "Not formatted correctly: expecting only one of 'inputs' or 'instances' keys to exist"
        )
    if "instances" in doc:
        instances = doc["instances"]
        if not isinstance(instances, list):
            raise invalid_argument(
                f"JSON Value: {_show(doc)} Excepting 'instances' to be an list/array"
            )
        if not instances:
            raise invalid_argument(f"JSON Value: {_show(doc)} No values in 'instances' array")
        return ROW, _instances(instances, signature.inputs)
    if "inputs" in doc:
        return COLUMNAR, _columns(doc["inputs"], signature.inputs)
    raise invalid_argument("Missing 'inputs' or 'instances' key")


# --------------------------------------------------------------------------------------
# Format: output arrays -> JSON (json_tensor.cc: MakeJsonFromTensors)
# --------------------------------------------------------------------------------------


def _json_array(array: np.ndarray, name: str) -> Any:
    """What orjson writes for one output: the array itself, or lists for strings."""
    if array.dtype == object or array.dtype.kind in "SU":
        items = [v if isinstance(v, bytes) else str(v).encode() for v in array.reshape(-1)]
        if name.endswith("_bytes"):
            values = [{"b64": base64.b64encode(v).decode("ascii")} for v in items]
        else:
            values = [v.decode("utf-8", errors="replace") for v in items]
        return np.array(values, dtype=object).reshape(array.shape).tolist()
    if array.dtype.kind == "f" and array.dtype not in (np.float16, np.float32, np.float64):
        array = array.astype(np.float32)  # bfloat16
    if array.dtype.kind not in "fiub":
        raise invalid_argument(f"Failed to write JSON value for tensor type: {array.dtype}")
    return np.ascontiguousarray(array)


def _dumps(doc: Any, finite: bool) -> bytes:
    if finite:
        return orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
    # orjson writes NaN / Infinity as null; TF Serving writes the tokens, as json does.
    return json.dumps(doc, default=lambda a: a.tolist()).encode()


def format_predict_response(outputs: Mapping[str, np.ndarray], fmt: str) -> bytes:
    """The body of a successful predict answer, for a ``ROW`` or ``COLUMNAR`` request."""
    if not outputs:
        raise invalid_argument("Cannot convert empty tensor map to JSON")
    names = sorted(outputs)
    arrays = {name: _json_array(np.asarray(outputs[name]), name) for name in names}
    finite = all(
        not isinstance(a, np.ndarray) or a.dtype.kind != "f" or np.isfinite(a).all()
        for a in arrays.values()
    )
    if fmt == COLUMNAR:
        return _dumps({"outputs": arrays[names[0]] if len(names) == 1 else arrays}, finite)
    sizes = {name: len(a) if np.ndim(a) else None for name, a in arrays.items()}
    if None in sizes.values() or len(set(sizes.values())) > 1:
        raise invalid_argument(f"Outputs have no common batch size: {sizes}")
    if len(names) == 1:
        return _dumps({"predictions": arrays[names[0]]}, finite)
    rows = [{n: arrays[n][i] for n in names} for i in range(sizes[names[0]])]
    return _dumps({"predictions": rows}, finite)


# --------------------------------------------------------------------------------------
# The WSGI application
# --------------------------------------------------------------------------------------


def _raw_path(environ: Mapping[str, Any]) -> str:
    """The request path as sent (still percent-encoded), without the query string."""
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if raw is None:
        raw = quote(environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", ""))
    return raw.split("?", 1)[0]


def _spec(name: str | None, version: str | None, label: str | None) -> ModelSpec:
    if version and int(version) > 2**63 - 1:
        raise invalid_argument(f"Failed to convert version: {version} to numeric.")
    return ModelSpec(
        unquote(name or ""), int(version) if version else None, unquote(label) if label else None
    )


class RestApp:
    """WSGI application answering ``/v1/models/...`` like TF Serving's REST handler."""

    def __init__(self, predictor: Predictor, max_request_bytes: int):
        self.predictor = predictor
        self.max_request_bytes = max_request_bytes

    def __call__(self, environ, start_response):
        request = Request(environ)
        # werkzeug refuses a longer Content-Length (413) and stops reading a chunked body
        # at this limit; one byte more tells a body that goes on from one that ends there.
        request.max_content_length = self.max_request_bytes + 1
        start, path = time.monotonic(), _raw_path(environ)
        try:
            status, body = 200, self.handle(request.method, path, request)
        except ServingError as e:
            status, body = HTTP_STATUS.get(e.code, 500), error_body(e.message)
        except HTTPException as e:  # 413 from the body limit, 400 for a malformed body
            status = e.code or 400
            body = error_body(
                f"Request body exceeds the limit of {self.max_request_bytes} bytes "
                "(--max_request_bytes)"
                if status == 413
                else f"Malformed request body: {e.description}"
            )
        except Exception as e:  # a bad request must never take the server down
            logger.exception("Unhandled error for %s %s", request.method, path)
            status, body = 500, error_body(f"Internal error: {type(e).__name__}: {e}")
        logger.info("%s %s %d %.1fms", request.method, path, status, 1e3 * (time.monotonic() - start))
        response = Response(body, status=status, content_type="application/json")
        return response(environ, start_response)

    def handle(self, method: str, path: str, request: Request) -> bytes:
        from serving.grpc_api import metadata_response, status_response, to_json

        body = request.get_data(cache=False)
        if len(body) > self.max_request_bytes:
            raise RequestEntityTooLarge()
        if not path.lower().startswith("/v1/"):
            raise ServingError(Code.NOT_FOUND, f"Not found: {method} {path}")
        pattern = {"POST": _PREDICT_PATH, "GET": _STATUS_PATH}.get(method)
        match = pattern.fullmatch(path) if pattern else None
        if match is None:
            raise invalid_argument(f"Malformed request: {method} {path}")
        spec = _spec(*match.groups()[:3])
        verb = match.group(4)
        if method == "GET":
            if not spec.name:
                raise invalid_argument("Missing model name in request.")
            if verb:
                return to_json(metadata_response(self.predictor, spec))
            return to_json(status_response(self.predictor.registry, spec))
        if verb in ("classify", "regress"):
            raise ServingError(Code.UNIMPLEMENTED, f"This server does not implement :{verb}")
        if verb != "predict":  # ':PREDICT' matches case-insensitively, then is refused
            raise invalid_argument(f"Malformed request: {method} {path}")
        return self.predict(spec, body)

    def predict(self, spec: ModelSpec, body: bytes) -> bytes:
        doc = parse_json(body)
        if not isinstance(doc, dict):
            raise invalid_argument(f"JSON Value: {_show(doc)} Is not object")
        signature_name = doc.get("signature_name", "")
        if not isinstance(signature_name, str):
            raise invalid_argument("'signature_name' key must be a string value.")
        parsed: list[str] = []

        def parse(signature: Signature) -> dict[str, np.ndarray]:
            fmt, inputs = parse_predict_body(doc, signature)
            parsed.append(fmt)
            return inputs

        spec = ModelSpec(spec.name, spec.version, spec.label, signature_name)
        _, outputs = self.predictor.predict(spec, parse)
        return format_predict_response(outputs, parsed[0])
