"""TF Serving's REST API (``docs/serving.md``). A predict request is parsed (JSON rows or
columns -> arrays typed by the signature), predicted (``serving.core.Predictor``, shared with
gRPC), then formatted. Errors are ``{"error": "<message>"}`` with the HTTP status of the
canonical code. Numbers are JSON numbers, not TF Serving's exact bytes: compare them parsed."""

import base64
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
from serving.grpc_api import metadata_response, status_response, to_json

logger = logging.getLogger(__name__)

HTTP_STATUS = {  # tensorflow_serving/model_servers/http_server.cc: ToHTTPStatusCode
    Code.INVALID_ARGUMENT: 400, Code.FAILED_PRECONDITION: 400, Code.OUT_OF_RANGE: 400,
    Code.UNAUTHENTICATED: 401, Code.PERMISSION_DENIED: 403, Code.NOT_FOUND: 404,
    Code.ALREADY_EXISTS: 409, Code.ABORTED: 409, Code.RESOURCE_EXHAUSTED: 429,
    Code.CANCELLED: 499, Code.UNKNOWN: 500, Code.INTERNAL: 500, Code.DATA_LOSS: 500,
    Code.UNIMPLEMENTED: 501, Code.UNAVAILABLE: 503, Code.DEADLINE_EXCEEDED: 504}  # fmt: skip
ROW, COLUMNAR = "row", "columnar"
_VERSION = r"(?:/versions/([0-9]+)|/labels/([^/:]+))?"  # paths: http_rest_api_util.cc
_PREDICT_PATH = re.compile(rf"/v1/models/([^/:]+){_VERSION}:(?-i:(classify|regress|predict))", re.I)
_STATUS_PATH = re.compile(rf"/v1/models(?:/([^/:]+))?{_VERSION}(/metadata)?", re.I)
_TYPE_NAMES = {tf.float32: "float", tf.float64: "double", tf.float16: "half"}  # DataTypeString


def _show(value: Any) -> str:
    """A JSON value as quoted in error messages (compact, at most 200 characters)."""
    text = json.dumps(value, separators=(",", ":"), default=str)
    return text if len(text) <= 200 else text[:197] + "..."


def parse_json(body: bytes) -> Any:
    """orjson; Python's json only for what orjson refuses but TF Serving takes (NaN)."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as e:
        try:
            return json.loads(body)
        except (ValueError, RecursionError):
            error = e if body else "The document is empty"
            raise invalid_argument(f"JSON Parse error: {error}") from None


def _is_object(value: Any) -> bool:  # but not a {"b64": "..."} string
    return isinstance(value, dict) and not (len(value) == 1 and isinstance(value.get("b64"), str))


def _leaf(value: Any, dtype: tf.DType) -> Any:
    """Check one JSON leaf against ``dtype`` (json_tensor.cc: AddValueToTensor)."""
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if number and dtype.is_floating:
        try:  # rounding a float is fine; changing an integer or overflowing is not
            with np.errstate(over="ignore"):
                cast = float(dtype.as_numpy_dtype(value))
        except OverflowError:  # an integer beyond float64
            cast = math.inf
        if cast == value or isinstance(value, float) and not math.isinf(cast):
            return value  # unchanged, or a float rounded within range
        raise invalid_argument(f"Cannot convert JSON value: {value} to "
                               f"{_TYPE_NAMES.get(dtype, dtype.name)} without loss of precision.")
    if (number and dtype.is_integer and isinstance(value, int) and dtype.min <= value <= dtype.max
            or dtype == tf.bool and isinstance(value, bool)):
        return value
    if dtype == tf.string and isinstance(value, str):
        return value.encode("utf-8")
    if dtype == tf.string and isinstance(value, dict) and not _is_object(value):
        try:
            return base64.b64decode(value["b64"] + "=" * (-len(value["b64"]) % 4), validate=True)
        except ValueError:
            raise invalid_argument("Unable to base64 decode") from None
    if number and not (dtype.is_integer or dtype.is_complex or dtype in (tf.string, tf.bool)):
        raise ServingError(Code.UNIMPLEMENTED, f"Conversion of JSON Value to type: {dtype.name}")
    kind = {dict: "Object", list: "Array", str: "String", bool: str(value), type(None): "Null"}
    raise invalid_argument(f"JSON Value: {_show(value)} Type: {kind.get(type(value), 'Number')} "
                           f"is not of expected type: {_TYPE_NAMES.get(dtype, dtype.name)}")


def json_to_tensor(value: Any, dtype: tf.DType) -> np.ndarray:
    """One JSON value (scalar or dense nested lists) -> array of ``dtype``."""
    shape, probe, flat = [], value, []
    while isinstance(probe, list):  # json_tensor.cc: GetDenseTensorShape
        shape.append(len(probe))
        probe = probe[0] if probe else None

    def fill(item: Any, level: int) -> None:
        if isinstance(item, list) and level < len(shape) and len(item) == shape[level]:
            for element in item:
                fill(element, level + 1)
        elif isinstance(item, list):
            expected = shape[level] if level < len(shape) else "a value"
            raise invalid_argument(f"Encountered list at unexpected size: {len(item)} at level: "
                                   f"{level} expected size: {expected}")
        elif level != len(shape):
            raise invalid_argument(f"JSON Value: {_show(item)} found at incorrect level: "
                                   f"{level + 1} in the JSON DOM. Expected at level: {len(shape)}")
        else:
            flat.append(_leaf(item, dtype))
    fill(value, 0)
    return np.array(flat, dtype=dtype.as_numpy_dtype).reshape(shape)


def _instances(instances: list, infos: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Row format: one value (one input) or one object per instance; stacked by name."""
    names, objects = sorted(infos), _is_object(instances[0])
    if not objects and len(names) > 1:
        raise invalid_argument("instances is a plain list, but expecting list of objects as "
                               "multiple input tensors required as per tensorinfo_map")
    columns: dict[str, list[np.ndarray]] = {name: [] for name in names}
    for index, element in enumerate(instances):
        failed = f"Failed to process element: {index}"
        if _is_object(element) != objects:
            raise invalid_argument(f"Expecting {'object' if objects else 'value/list'} but got "
                                   f"something else at item {index}")
        items = element if objects else {names[0]: element}
        if sorted(items) != names:
            raise invalid_argument(f"{failed} of 'instances' list. JSON object: {_show(element)} "
                                   f"keys must be equal to: {','.join(names)}")
        for name, item in items.items():
            try:
                array = json_to_tensor(item, infos[name].dtype)
            except ServingError as e:
                raise ServingError(e.code, f"{failed} key: {name} of 'instances' list. "
                                           f"Error: {e.code_name}: {e.message}") from None
            if columns[name] and array.shape != (first := columns[name][0].shape):
                raise invalid_argument(f"{failed} of 'instances' list. Error: Expecting shape "
                                       f"{list(first)} but got: {list(array.shape)}")
            columns[name].append(array)
    return {name: np.stack(arrays) for name, arrays in columns.items()}


def parse_predict_body(doc: Mapping[str, Any], signature: Signature) -> dict[str, np.ndarray]:
    """The inputs of a predict body, typed by ``signature`` (FillPredictRequestFromJson)."""
    if not (infos := signature.inputs):
        raise invalid_argument(f"Failed to get input map for signature: {signature.name}")
    if "instances" in doc and "inputs" in doc:
        raise invalid_argument("Not formatted correctly: expecting only one of 'inputs' or "
                               "'instances' keys to exist")
    if "instances" in doc:
        if not isinstance(doc["instances"], list) or not doc["instances"]:
            problem = ("No values in 'instances' array" if isinstance(doc["instances"], list)
                       else "Excepting 'instances' to be an list/array")
            raise invalid_argument(f"JSON Value: {_show(doc)} {problem}")
        return _instances(doc["instances"], infos)
    if "inputs" not in doc:
        raise invalid_argument("Missing 'inputs' or 'instances' key")
    inputs = doc["inputs"]  # columnar: a value (one input) or an object naming every input
    if not _is_object(inputs):
        if len(infos) > 1:
            raise invalid_argument("inputs is a plain value/list, but expecting an object as "
                                   "multiple input tensors required as per tensorinfo_map")
        inputs = {next(iter(infos)): inputs}
    for name in sorted(infos.keys() - inputs.keys()):  # the first missing one
        raise invalid_argument(f"Missing named input: {name} in 'inputs' object.")
    return {name: json_to_tensor(inputs[name], infos[name].dtype) for name in sorted(infos)}


def _json_array(array: np.ndarray, name: str) -> Any:
    """What orjson writes for one output: the array, or lists of strings (``*_bytes``: b64)."""
    if array.dtype.kind in "OSU":  # object (bytes), bytes or str
        items = [v if isinstance(v, bytes) else str(v).encode() for v in array.reshape(-1)]
        items = ([{"b64": base64.b64encode(v).decode()} for v in items] if name.endswith("_bytes")
                 else [v.decode("utf-8", errors="replace") for v in items])
        return np.array(items, dtype=object).reshape(array.shape).tolist()
    if array.dtype.kind not in "fiub":
        raise invalid_argument(f"Failed to write JSON value for tensor type: {array.dtype}")
    return np.ascontiguousarray(array)


def format_predict_response(outputs: Mapping[str, np.ndarray], fmt: str) -> bytes:
    """The answer to a ``ROW`` or ``COLUMNAR`` predict request (MakeJsonFromTensors)."""
    if not outputs:
        raise invalid_argument("Cannot convert empty tensor map to JSON")
    arrays = {name: _json_array(np.asarray(outputs[name]), name) for name in sorted(outputs)}
    doc: Any = arrays if len(arrays) > 1 else next(iter(arrays.values()))
    if fmt == ROW:
        sizes = {name: len(a) if np.ndim(a) else None for name, a in arrays.items()}
        if None in sizes.values() or len(set(sizes.values())) > 1:
            raise invalid_argument(f"Outputs have no common batch size: {sizes}")
        if len(arrays) > 1:  # one object per row
            doc = [dict(zip(arrays, r, strict=True)) for r in zip(*arrays.values(), strict=True)]
    doc = {"predictions" if fmt == ROW else "outputs": doc}
    if all(np.isfinite(a).all() for a in arrays.values() if isinstance(a, np.ndarray)):
        return orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
    return json.dumps(doc, default=lambda a: a.tolist()).encode()  # json: NaN tokens (orjson: null)


class RestApp:
    """WSGI application answering ``/v1/models/...`` like TF Serving's REST handler."""

    def __init__(self, predictor: Predictor, max_request_bytes: int):
        self.predictor, self.max_request_bytes = predictor, max_request_bytes

    def __call__(self, environ, start_response):
        start, request = time.monotonic(), Request(environ)
        # werkzeug stops a chunked body at this limit silently: one byte more tells it went on
        request.max_content_length = self.max_request_bytes + 1
        raw = environ.get("RAW_URI") or environ.get("REQUEST_URI") or quote(request.full_path, "/?")
        method, path = request.method, raw.split("?", 1)[0]  # path: still percent-encoded
        try:
            status, body = 200, self.handle(method, path, request)
        except ServingError as e:
            status, error = HTTP_STATUS.get(e.code, 500), e.message
        except RequestEntityTooLarge:
            status, error = 413, (f"Request body exceeds the limit of {self.max_request_bytes} "
                                  "bytes (--max_request_bytes)")
        except HTTPException as e:  # werkzeug: a malformed body
            status, error = e.code or 400, f"Malformed request body: {e.description}"
        except Exception as e:  # a bad request must never take the server down
            logger.exception("Unhandled error for %s %s", method, path)
            status, error = 500, f"Internal error: {type(e).__name__}: {e}"
        body = body if status == 200 else orjson.dumps({"error": error})
        logger.info("%s %s %d %.1fms", method, path, status, 1e3 * (time.monotonic() - start))
        return Response(body, status, content_type="application/json")(environ, start_response)

    def handle(self, method: str, path: str, request: Request) -> bytes:
        if len(body := request.get_data(cache=False)) > self.max_request_bytes:
            raise RequestEntityTooLarge()
        if not path.lower().startswith("/v1/"):
            raise ServingError(Code.NOT_FOUND, f"Not found: {method} {path}")
        pattern = {"POST": _PREDICT_PATH, "GET": _STATUS_PATH}.get(method)
        if not (match := pattern and pattern.fullmatch(path)):
            raise invalid_argument(f"Malformed request: {method} {path}")
        name, version, label, verb = match.groups()
        if version and int(version) > 2**63 - 1:
            raise invalid_argument(f"Failed to convert version: {version} to numeric.")
        spec = ModelSpec(unquote(name or ""), version and int(version), label and unquote(label))
        if method == "GET":
            if not spec.name:
                raise invalid_argument("Missing model name in request.")
            return to_json(metadata_response(self.predictor, spec) if verb
                           else status_response(self.predictor.registry, spec))
        if verb != "predict":
            raise ServingError(Code.UNIMPLEMENTED, f"This server does not implement :{verb}")
        doc = parse_json(body)
        if not isinstance(doc, dict):
            raise invalid_argument(f"JSON Value: {_show(doc)} Is not object")
        if not isinstance(signature_name := doc.get("signature_name", ""), str):
            raise invalid_argument("'signature_name' key must be a string value.")
        spec = ModelSpec(spec.name, spec.version, spec.label, signature_name)
        _, outputs = self.predictor.predict(spec, lambda sig: parse_predict_body(doc, sig))
        return format_predict_response(outputs, ROW if "instances" in doc else COLUMNAR)
