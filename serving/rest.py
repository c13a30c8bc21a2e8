"""TensorFlow Serving's REST JSON encoding, shared by the local server and the client.

This module mirrors ``tensorflow_serving/util/json_tensor.cc`` and the error
conventions of ``http_rest_api_handler.cc`` (see ``shared/spec/tf-serving-rest.md``):

* requests: ``instances`` (row format, a batch dimension is added) or ``inputs``
  (columnar format, the nesting as written), exactly one of them;
* responses: ``{"predictions": ...}`` for row requests, ``{"outputs": ...}`` for
  columnar ones; string outputs whose name ends in ``_bytes`` as ``{"b64": ...}``;
  floats with up to 9 (float) or 17 (double) significant digits, ``NaN`` /
  ``Infinity`` tokens;
* errors: ``{"error": "<message>"}`` with TF Serving's messages and the HTTP status
  its canonical error code maps to.

It depends on numpy only (no TensorFlow), so the client stays light. Tensors are
described by TF ``DataType`` enum names (``"DT_FLOAT"``) and shapes with ``None``
for unknown dimensions, exactly as a SignatureDef lists them.

    infos = {"z": TensorInfo("DT_FLOAT", (None, 16))}
    request = parse_predict_request(doc, lambda signature_name: infos)
    request.inputs["z"].shape  # (batch, 16), float32
    body = format_predict_response({"images": images, "png_bytes": pngs}, request.format)
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import decimal
import functools
import json
import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

# --------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------

# tensorflow_serving/model_servers/http_server.cc: ToHTTPStatusCode.
HTTP_STATUS_BY_CODE = {
    "OK": 200,
    "CANCELLED": 499,
    "UNKNOWN": 500,
    "INVALID_ARGUMENT": 400,
    "DEADLINE_EXCEEDED": 504,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "PERMISSION_DENIED": 403,
    "RESOURCE_EXHAUSTED": 429,
    "FAILED_PRECONDITION": 400,
    "ABORTED": 409,
    "OUT_OF_RANGE": 400,
    "UNIMPLEMENTED": 501,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
    "DATA_LOSS": 500,
    "UNAUTHENTICATED": 401,
}


class RestError(Exception):
    """An error answered as ``{"error": message}`` with the HTTP status of ``code``.

    ``code`` is a canonical TF/absl status code name such as ``"INVALID_ARGUMENT"``.
    """

    def __init__(self, code: str, message: str):
        if code not in HTTP_STATUS_BY_CODE or code == "OK":
            raise ValueError(f"Unknown error code. Received: code={code!r}")
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def http_status(self) -> int:
        return HTTP_STATUS_BY_CODE[self.code]

    def status_string(self) -> str:
        """``absl::Status::ToString()``: ``"INVALID_ARGUMENT: message"``."""
        return f"{self.code}: {self.message}"


def invalid_argument(message: str) -> RestError:
    return RestError("INVALID_ARGUMENT", message)


def error_body(message: str) -> str:
    """The error body exactly as TF Serving's ``MakeJsonFromStatus`` writes it."""
    return '{\n    "error": ' + _json_string(message) + "\n}"


# --------------------------------------------------------------------------------------
# Data types
# --------------------------------------------------------------------------------------

# DataType enum name -> (DataTypeString as used in messages, numpy dtype or None).
DTYPES: dict[str, tuple[str, Any]] = {
    "DT_FLOAT": ("float", np.float32),
    "DT_DOUBLE": ("double", np.float64),
    "DT_INT32": ("int32", np.int32),
    "DT_UINT8": ("uint8", np.uint8),
    "DT_INT16": ("int16", np.int16),
    "DT_INT8": ("int8", np.int8),
    "DT_STRING": ("string", np.object_),
    "DT_INT64": ("int64", np.int64),
    "DT_BOOL": ("bool", np.bool_),
    "DT_UINT16": ("uint16", np.uint16),
    "DT_HALF": ("half", np.float16),
    "DT_UINT32": ("uint32", np.uint32),
    "DT_UINT64": ("uint64", np.uint64),
    "DT_BFLOAT16": ("bfloat16", None),
    "DT_COMPLEX64": ("complex64", np.complex64),
    "DT_COMPLEX128": ("complex128", np.complex128),
    "DT_RESOURCE": ("resource", None),
    "DT_VARIANT": ("variant", None),
    "DT_INVALID": ("INVALID", None),
}

# What json_tensor.cc's AddValueToTensor accepts (everything else is UNIMPLEMENTED).
_INPUT_DTYPES = {
    "DT_FLOAT",
    "DT_DOUBLE",
    "DT_INT32",
    "DT_INT16",
    "DT_INT8",
    "DT_UINT8",
    "DT_STRING",
    "DT_INT64",
    "DT_BOOL",
    "DT_UINT32",
    "DT_UINT64",
}
_INT_RANGES = {
    # rapidjson IsInt / IsInt64 / IsUint / IsUint64; int16/int8/uint8 use IsInt (then
    # the value is narrowed, as TF does when it reads a TensorProto's int_val).
    "DT_INT32": (-(2**31), 2**31 - 1),
    "DT_INT16": (-(2**31), 2**31 - 1),
    "DT_INT8": (-(2**31), 2**31 - 1),
    "DT_UINT8": (-(2**31), 2**31 - 1),
    "DT_INT64": (-(2**63), 2**63 - 1),
    "DT_UINT32": (0, 2**32 - 1),
    "DT_UINT64": (0, 2**64 - 1),
}
_FLOAT_MAX = float(np.finfo(np.float32).max)
_LOSSLESS_INT_MAX = {"DT_FLOAT": 2**24 - 1, "DT_DOUBLE": 2**53 - 1}


def dtype_string(dtype: str) -> str:
    """TF's ``DataTypeString``: ``"DT_FLOAT"`` -> ``"float"``."""
    known = DTYPES.get(dtype)
    return known[0] if known else dtype.removeprefix("DT_").lower()


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    """A signature input or output: DataType enum name and shape (``None`` = unknown).

    ``shape=None`` means unknown rank.
    """

    dtype: str
    shape: tuple[int | None, ...] | None

    def is_compatible_with(self, shape: tuple[int, ...]) -> bool:
        if self.shape is None:
            return True
        return len(shape) == len(self.shape) and all(
            want is None or want == got for want, got in zip(self.shape, shape, strict=True)
        )

    def shape_string(self) -> str:
        if self.shape is None:
            return "[?]"
        return "[" + ",".join("-1" if d is None else str(d) for d in self.shape) + "]"


# --------------------------------------------------------------------------------------
# JSON parsing with rapidjson's messages
# --------------------------------------------------------------------------------------


class _NumberTooBig(ValueError):
    def __init__(self, literal: str):
        super().__init__(literal)
        self.literal = literal


def _parse_float(literal: str) -> float:
    value = float(literal)
    if math.isinf(value):
        raise _NumberTooBig(literal)
    return value


def _first_key_wins(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # rapidjson keeps duplicate members and FindMember() returns the first one.
    out: dict[str, Any] = {}
    for key, value in pairs:
        out.setdefault(key, value)
    return out


def _innermost_container(text: str, pos: int) -> str:
    """'{' or '[': the container open at ``pos`` (strings skipped)."""
    stack: list[str] = []
    in_string = escaped = False
    for ch in text[:pos]:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            stack.append(ch)
        elif ch in "]}" and stack:
            stack.pop()
    return stack[-1] if stack else ""


def _rapidjson_parse_message(err: json.JSONDecodeError) -> str:
    msg = err.msg
    if msg.startswith("Expecting value"):
        if not err.doc.strip():
            return "The document is empty."
        return "Invalid value."
    if msg.startswith(("Expecting property name", "Illegal trailing comma before end of object")):
        return "Missing a name for object member."
    if msg.startswith("Illegal trailing comma before end of array"):
        return "Invalid value."
    if msg.startswith("Expecting ':' delimiter"):
        return "Missing a colon after a name of object member."
    if msg.startswith("Expecting ',' delimiter"):
        if _innermost_container(err.doc, err.pos) == "{":
            return "Missing a comma or '}' after an object member."
        return "Missing a comma or ']' after an array element."
    if msg.startswith("Extra data"):
        return "The document root must not be followed by other values."
    if msg.startswith("Unterminated string"):
        return "Missing a closing quotation mark in string."
    if msg.startswith("Invalid \\uXXXX escape"):
        return "Incorrect hex digit after \\u escape in string."
    if msg.startswith("Invalid \\escape"):
        return "Invalid escape character in string."
    if msg.startswith("Invalid control character"):
        return "Invalid encoding in string."
    return "Invalid value."


def parse_json(body: bytes) -> Any:
    """Parse a request body like TF Serving's ``ParseJson`` (NaN/Infinity accepted).

    Raises:
        RestError: INVALID_ARGUMENT with ``JSON Parse error: ... at offset: N``.
    """
    if not body:
        raise invalid_argument("JSON Parse error: The document is empty")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise invalid_argument(
            f"JSON Parse error: Invalid encoding in string. at offset: {e.start}"
        ) from None
    try:
        return json.loads(text, parse_float=_parse_float, object_pairs_hook=_first_key_wins)
    except json.JSONDecodeError as e:
        offset = len(text[: e.pos].encode("utf-8"))
        raise invalid_argument(
            f"JSON Parse error: {_rapidjson_parse_message(e)} at offset: {offset}"
        ) from None
    except _NumberTooBig as e:
        offset = len(text[: max(text.find(e.literal), 0)].encode("utf-8"))
        raise invalid_argument(
            f"JSON Parse error: Number too big to be stored in double. at offset: {offset}"
        ) from None
    except RecursionError:
        raise invalid_argument("JSON Parse error: document nested too deeply") from None


# --------------------------------------------------------------------------------------
# Writing JSON values the way rapidjson / TF Serving does
# --------------------------------------------------------------------------------------

_SHORT_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
}


def _json_string(s: str) -> str:
    """rapidjson's Writer::String: escapes quotes, backslashes and control characters."""
    out = []
    for ch in s:
        if ch in _SHORT_ESCAPES:
            out.append(_SHORT_ESCAPES[ch])
        elif ord(ch) < 0x20:
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def format_float32(value: float) -> str:
    """TF Serving's ``WriteDecimal<float>``: ``%g`` if it round-trips, else ``%.9g``."""
    value = float(np.float32(value))
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "-Infinity" if value < 0 else "Infinity"
    text = f"{value:g}"
    if np.float32(text) != np.float32(value):
        text = f"{value:.9g}"
    if "." not in text and "e" not in text:
        text += ".0"
    return text


def format_float64(value: float) -> str:
    """TF Serving's ``WriteDecimal<double>``: ``%g`` if it round-trips, else ``%.17g``."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "-Infinity" if value < 0 else "Infinity"
    text = f"{value:g}"
    if float(text) != value:
        text = f"{value:.17g}"
    if "." not in text and "e" not in text:
        text += ".0"
    return text


def _rapidjson_double(value: float) -> str:
    """rapidjson's ``Writer::Double`` (shortest digits, ``Prettify`` layout)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "-Infinity" if value < 0 else "Infinity"
    sign = "-" if math.copysign(1.0, value) < 0 else ""
    if value == 0:
        return sign + "0.0"
    _, digit_tuple, exponent = decimal.Decimal(repr(abs(value))).as_tuple()
    digits = "".join(map(str, digit_tuple)).rstrip("0")
    exponent += len(digit_tuple) - len(digits)
    length, kk = len(digits), len(digits) + exponent
    if 0 <= exponent and kk <= 21:
        text = digits + "0" * exponent + ".0"
    elif 0 < kk <= 21:
        text = digits[:kk] + "." + digits[kk:]
    elif -6 < kk <= 0:
        text = "0." + "0" * -kk + digits
    elif length == 1:
        text = f"{digits}e{kk - 1}"
    else:
        text = f"{digits[0]}.{digits[1:]}e{kk - 1}"
    return sign + text


def _pretty(value: Any, indent: int) -> str:
    pad = "    " * (indent + 1)
    if isinstance(value, dict):
        if not value:
            return "{}"
        items = [f"{pad}{_json_string(k)}: {_pretty(v, indent + 1)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + "    " * indent + "}"
    if isinstance(value, list):
        if not value:
            return "[]"
        items = [pad + _pretty(v, indent + 1) for v in value]
        return "[\n" + ",\n".join(items) + "\n" + "    " * indent + "]"
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return _json_string(value)
    if isinstance(value, int) and -(2**63) <= value < 2**64:
        return str(value)
    return _rapidjson_double(float(value))


def json_value_to_string(value: Any) -> str:
    """TF Serving's ``JsonValueToString``: how a JSON value is quoted in error messages.

    A top-level decimal is written like a float output; anything else with rapidjson's
    PrettyWriter (4-space indentation).
    """
    if isinstance(value, float):
        if abs(value) <= 3.4028234e38:  # rapidjson's IsFloat()
            return format_float32(value)
        return format_float64(value)
    return _pretty(value, 0)


# --------------------------------------------------------------------------------------
# JSON -> tensors (json_tensor.cc: FillPredictRequestFromJson)
# --------------------------------------------------------------------------------------

ROW = "row"
COLUMNAR = "columnar"


@dataclasses.dataclass
class PredictRequest:
    signature_name: str  # as sent ("" when absent)
    format: str  # ROW or COLUMNAR
    inputs: dict[str, np.ndarray]


def _json_type(value: Any) -> str:
    if value is None:
        return "Null"
    if value is True:
        return "True"
    if value is False:
        return "False"
    if isinstance(value, dict):
        return "Object"
    if isinstance(value, list):
        return "Array"
    if isinstance(value, str):
        return "String"
    return "Number"


def _type_error(value: Any, dtype: str) -> RestError:
    return invalid_argument(
        f"JSON Value: {json_value_to_string(value)} Type: {_json_type(value)} "
        f"is not of expected type: {dtype_string(dtype)}"
    )


def _is_b64_object(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)


def _decode_b64(value: Any) -> bytes:
    if not _is_b64_object(value):
        raise invalid_argument(
            f"JSON Value: {json_value_to_string(value)} not formatted correctly for base64 data"
        )
    text = value["b64"]
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise invalid_argument("Unable to base64 decode") from None


def _is_lossless(value: int | float, dtype: str) -> bool:
    # json_tensor.cc: IsLosslessDecimal<float|double>.
    if isinstance(value, int) and -(2**63) <= value < 2**64:
        return abs(value) <= _LOSSLESS_INT_MAX[dtype]
    try:
        as_float = float(value)
    except OverflowError:
        return True
    if not math.isfinite(as_float):
        return True
    limit = _FLOAT_MAX if dtype == "DT_FLOAT" else float(np.finfo(np.float64).max)
    return -limit <= as_float <= limit


def _convert_scalar(value: Any, dtype: str) -> Any:
    """Check one JSON leaf against ``dtype`` (json_tensor.cc: AddValueToTensor)."""
    if isinstance(value, dict):
        if dtype == "DT_STRING":
            return _decode_b64(value)
        raise _type_error(value, dtype)
    if dtype not in _INPUT_DTYPES:
        raise RestError(
            "UNIMPLEMENTED",
            f"Conversion of JSON Value: {json_value_to_string(value)} to type: "
            f"{dtype_string(dtype)}",
        )
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if dtype in ("DT_FLOAT", "DT_DOUBLE"):
        if not is_number:
            raise _type_error(value, dtype)
        if not _is_lossless(value, dtype):
            target = "float" if dtype == "DT_FLOAT" else "double"
            raise invalid_argument(
                f"Cannot convert JSON value: {json_value_to_string(value)} to {target} "
                "without loss of precision."
            )
        return float(value)
    if dtype == "DT_STRING":
        if not isinstance(value, str):
            raise _type_error(value, dtype)
        return value.encode("utf-8")
    if dtype == "DT_BOOL":
        if not isinstance(value, bool):
            raise _type_error(value, dtype)
        return value
    low, high = _INT_RANGES[dtype]
    if not (isinstance(value, int) and not isinstance(value, bool) and low <= value <= high):
        raise _type_error(value, dtype)
    return value


def _dense_shape(value: Any) -> tuple[int, ...]:
    # json_tensor.cc: GetDenseTensorShape follows the first element of each list.
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return tuple(shape)


def _fill(value: Any, level: int, shape: tuple[int, ...], dtype: str, out: list) -> None:
    # json_tensor.cc: FillTensorProto.
    rank = len(shape)
    if not isinstance(value, list):
        if level != rank:
            raise invalid_argument(
                f"JSON Value: {json_value_to_string(value)} found at incorrect level: "
                f"{level + 1} in the JSON DOM. Expected at level: {rank}"
            )
        out.append(_convert_scalar(value, dtype))
        return
    if level >= rank:
        raise invalid_argument(f"Encountered list at unexpected level: {level} expected < {rank}")
    if len(value) != shape[level]:
        raise invalid_argument(
            f"Encountered list at unexpected size: {len(value)} at level: {level} "
            f"expected size: {shape[level]}"
        )
    for item in value:
        _fill(item, level + 1, shape, dtype, out)


def _to_array(values: list, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    np_dtype = DTYPES[dtype][1]
    if dtype == "DT_STRING":
        array = np.empty(len(values), dtype=object)
        array[:] = values
    elif dtype in _INT_RANGES and dtype not in ("DT_INT64", "DT_UINT64"):
        # Narrow like TF does when it reads int_val (e.g. 300 -> uint8 44).
        array = np.array(values, dtype=np.int64).astype(np_dtype)
    else:
        array = np.array(values, dtype=np_dtype)
    return array.reshape(shape)


def json_to_tensor(value: Any, dtype: str) -> np.ndarray:
    """One JSON value (scalar or nested lists) to an array of ``dtype``, shape as nested."""
    shape = _dense_shape(value)
    values: list = []
    _fill(value, 0, shape, dtype, values)
    return _to_array(values, shape, dtype)


def _signature_format_error(doc: Any) -> RestError:
    return invalid_argument(
        f"JSON Value: {json_value_to_string(doc)} not formatted correctly. "
        "'signature_name' key must be a string value."
    )


def _instances_to_tensors(
    instances: list, infos: Mapping[str, TensorInfo]
) -> dict[str, np.ndarray]:
    # json_tensor.cc: FillTensorMapFromInstancesList.
    def is_element_object(value: Any) -> bool:
        return isinstance(value, dict) and not _is_b64_object(value)

    if not isinstance(instances[0], dict) and len(infos) > 1:
        raise invalid_argument(
            "instances is a plain list, but expecting list of objects as multiple input "
            "tensors required as per tensorinfo_map"
        )
    objects = is_element_object(instances[0])
    input_names = sorted(infos)
    values: dict[str, list] = {}
    shapes: dict[str, tuple[int, ...]] = {}

    def add_item(item: Any, name: str) -> None:
        if name not in infos:
            raise invalid_argument(f"JSON object: does not have named input: {name}")
        shape = _dense_shape(item)
        flat: list = []
        _fill(item, 0, shape, infos[name].dtype, flat)
        if name not in shapes:
            shapes[name] = shape
            values[name] = flat
            return
        expected = math.prod(shapes[name])
        if expected != len(flat):
            raise invalid_argument(f"Expecting tensor size: {expected} but got: {len(flat)}")
        if shapes[name] != shape:
            raise invalid_argument(
                f"Expecting shape [{','.join(map(str, shapes[name]))}] but got: "
                f"[{','.join(map(str, shape))}]"
            )
        values[name].extend(flat)

    for index, element in enumerate(instances):
        if objects:
            if not is_element_object(element):
                raise invalid_argument(
                    f"Expecting object but got list at item {index} of input list"
                )
            for name, item in element.items():
                try:
                    add_item(item, name)
                except RestError as e:
                    raise invalid_argument(
                        f"Failed to process element: {index} key: {name} of 'instances' "
                        f"list. Error: {e.status_string()}"
                    ) from None
            if sorted(element) != input_names:
                raise invalid_argument(
                    f"Failed to process element: {index} of 'instances' list. JSON object: "
                    f"{json_value_to_string(element)} keys must be equal to: "
                    f"{','.join(input_names)}"
                )
        else:
            if is_element_object(element):
                raise invalid_argument(
                    f"Expecting value/list but got object at item {index} of input list"
                )
            try:
                add_item(element, input_names[0])
            except RestError as e:
                raise invalid_argument(
                    f"Failed to process element: {index} of 'instances' list. "
                    f"Error: {e.status_string()}"
                ) from None
    return {
        name: _to_array(values[name], (len(instances), *shapes[name]), infos[name].dtype)
        for name in values
    }


def _inputs_to_tensors(inputs: Any, infos: Mapping[str, TensorInfo]) -> dict[str, np.ndarray]:
    # json_tensor.cc: FillTensorMapFromInputsMap.
    if not isinstance(inputs, dict) or _is_b64_object(inputs):
        if len(infos) > 1:
            raise invalid_argument(
                "inputs is a plain value/list, but expecting an object as multiple input "
                "tensors required as per tensorinfo_map"
            )
        ((name, info),) = infos.items()
        return {name: json_to_tensor(inputs, info.dtype)}
    tensors = {}
    for name in sorted(infos):
        if name not in inputs:
            raise invalid_argument(f"Missing named input: {name} in 'inputs' object.")
        tensors[name] = json_to_tensor(inputs[name], infos[name].dtype)
    return tensors


def parse_predict_request(
    doc: Any, get_input_infos: Callable[[str], Mapping[str, TensorInfo]]
) -> PredictRequest:
    """Validate a parsed predict body and build its input arrays.

    ``get_input_infos(signature_name)`` resolves the model and signature (raising
    ``RestError`` for an unknown model, version or signature); it is called after the
    body's top level has been checked, in TF Serving's order.
    """
    if not isinstance(doc, dict):
        raise invalid_argument(f"JSON Value: {json_value_to_string(doc)} Is not object")
    signature_name = doc.get("signature_name", "")
    if not isinstance(signature_name, str):
        raise _signature_format_error(doc)
    infos = get_input_infos(signature_name)
    if not infos:
        raise invalid_argument(
            f"Failed to get input map for signature: {signature_name or 'DEFAULT'}"
        )
    has_instances, has_inputs = "instances" in doc, "inputs" in doc
    if has_instances and has_inputs:
        raise invalid_argument(
            f"JSON Value: {json_value_to_string(doc)} Not formatted correctly expecting only "
            "one of 'inputs' or 'instances' keys to exist "
        )
    if has_instances:
        instances = doc["instances"]
        if not isinstance(instances, list):
            raise invalid_argument(
                f"JSON Value: {json_value_to_string(doc)} Excepting 'instances' to be an list/array"
            )
        if not instances:
            raise invalid_argument(
                f"JSON Value: {json_value_to_string(doc)} No values in 'instances' array"
            )
        return PredictRequest(signature_name, ROW, _instances_to_tensors(instances, infos))
    if has_inputs:
        return PredictRequest(signature_name, COLUMNAR, _inputs_to_tensors(doc["inputs"], infos))
    raise invalid_argument("Missing 'inputs' or 'instances' key")


# --------------------------------------------------------------------------------------
# Tensors -> JSON (json_tensor.cc: MakeJsonFromTensors)
# --------------------------------------------------------------------------------------


def _printf_all(values: list[float], spec: str) -> list[str]:
    """``spec % v`` for every value, in one C-level formatting call."""
    if not values:
        return []
    return ((",".join([spec] * len(values))) % tuple(values)).split(",")


def _float_tokens(flat: np.ndarray, double: bool) -> list[str]:
    """``format_float32`` / ``format_float64`` for every element, vectorised.

    The same tokens as the per-value functions: ``%g`` where it round-trips, else
    ``%.9g`` (float) / ``%.17g`` (double); ``.0`` after integral values; ``NaN`` and
    ``[-]Infinity`` for non-finite ones. Formatting and the round-trip parse each run as
    one C-level call over the whole tensor instead of a Python call per element.
    """
    with np.errstate(invalid="ignore"):  # signalling NaNs
        precise = flat.astype(np.float64 if double else np.float32)
        values = precise.astype(np.float64)
    finite = np.isfinite(values)
    if not finite.all():
        tokens = ["NaN"] * values.size
        for i in np.flatnonzero(~finite).tolist():
            if not math.isnan(values[i]):
                tokens[i] = "-Infinity" if values[i] < 0 else "Infinity"
        index = np.flatnonzero(finite)
        for i, token in zip(index.tolist(), _float_tokens(flat[index], double), strict=True):
            tokens[i] = token
        return tokens
    as_list = values.tolist()
    # Most values of a network's output need the long form, so write that for all and
    # try ``%g`` only where it may round-trip: where the value rounded to 6 significant
    # digits (in float64, so approximately) lies within 0.75 ulp of it. A value whose
    # exact 6-digit rounding round-trips is within 0.5 ulp, so none is missed; each
    # candidate is then checked exactly (printed with ``%g`` and parsed back).
    tokens = _printf_all(as_list, "%.17g" if double else "%.9g")
    magnitude = np.abs(values)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        exponent = np.floor(np.log10(np.where(magnitude > 0, magnitude, 1.0)))
        scale = 10.0 ** (5.0 - exponent)
        rounded = np.round(values * scale) / scale
        ulp = np.abs(np.spacing(precise)).astype(np.float64)
        near = np.abs(rounded - values) <= 0.75 * ulp
    candidates = np.flatnonzero(near | ~np.isfinite(rounded))
    if candidates.size:
        short = _printf_all([as_list[i] for i in candidates.tolist()], "%g")
        parsed = np.fromstring(",".join(short), dtype=precise.dtype, sep=",")
        if parsed.size != candidates.size:  # cannot happen for printf output
            raise RuntimeError(f"float formatting parsed {parsed.size} of {candidates.size}")
        for k in np.flatnonzero(parsed == precise[candidates]).tolist():
            tokens[int(candidates[k])] = short[k]
    # ``%g`` writes integral values without a point ("3"); TF Serving adds ".0" unless
    # the token has an exponent ("1e+06").
    for i in np.flatnonzero(values == np.trunc(values)).tolist():
        token = tokens[i]
        if "." not in token and "e" not in token:
            tokens[i] = token + ".0"
    return tokens


def _tokens(array: np.ndarray, name: str) -> list[str]:
    """JSON tokens for every element of ``array`` (flattened, C order)."""
    flat = array.reshape(-1)
    kind = flat.dtype
    if kind == np.float32 or kind == np.float16:
        return _float_tokens(flat, double=False)
    if kind == np.float64:
        return _float_tokens(flat, double=True)
    if kind == np.bool_:
        return ["true" if v else "false" for v in flat.tolist()]
    if kind in (np.int8, np.int16, np.int32, np.uint8, np.int64, np.uint32, np.uint64):
        return [str(v) for v in flat.tolist()]
    if kind == np.object_ or kind.kind in "SU":
        items = [v if isinstance(v, bytes) else str(v).encode("utf-8") for v in flat.tolist()]
        if name.endswith("_bytes"):
            return ['{"b64": "' + base64.b64encode(v).decode("ascii") + '"}' for v in items]
        return [_json_string(v.decode("utf-8", errors="replace")) for v in items]
    raise invalid_argument(
        f"Failed to write JSON value for tensor type: {_numpy_dtype_string(kind)}"
    )


def _numpy_dtype_string(dtype: np.dtype) -> str:
    for enum, (string, np_dtype) in DTYPES.items():
        if np_dtype is not None and np.dtype(np_dtype) == dtype and enum != "DT_INVALID":
            return string
    return str(dtype)


_TEMPLATE_CACHE_ELEMENTS = 1 << 20


@functools.lru_cache(maxsize=32)
def _cached_template(shape: tuple[int, ...]) -> str:
    return _build_template(shape)


def _build_template(shape: tuple[int, ...]) -> str:
    """A ``%s`` per element, grouped into JSON arrays along ``shape``."""
    parts = ["%s"]
    for size in reversed(shape):
        parts = ["[" + ",".join(parts * size) + "]"]
    return parts[0]


def _template(shape: tuple[int, ...]) -> str:
    if math.prod(shape) <= _TEMPLATE_CACHE_ELEMENTS:
        return _cached_template(shape)
    return _build_template(shape)


def _nest(tokens: list[str], shape: tuple[int, ...]) -> list[str]:
    """Consecutive runs of ``prod(shape)`` tokens, each as nested JSON arrays of ``shape``."""
    if not shape:
        return tokens
    template = _template(shape)
    step = math.prod(shape)
    if step == 1:
        return [template % (token,) for token in tokens]
    return [template % tuple(tokens[i : i + step]) for i in range(0, len(tokens), step)]


def tensor_to_json(array: np.ndarray, name: str = "") -> str:
    """One tensor as JSON text: a scalar, or nested lists."""
    array = np.asarray(array)
    if array.size == 0:
        return json.dumps(np.empty(array.shape).tolist())
    return _nest(_tokens(array, name), array.shape)[0]


def _rows_to_json(array: np.ndarray, name: str) -> list[str]:
    if array.size == 0:
        return [json.dumps(np.empty(array.shape[1:]).tolist()) for _ in range(array.shape[0])]
    return _nest(_tokens(array, name), array.shape[1:])


def format_predict_response(outputs: Mapping[str, np.ndarray], fmt: str) -> str:
    """The body of a successful predict answer, for a ``ROW`` or ``COLUMNAR`` request."""
    if not outputs:
        raise invalid_argument("Cannot convert empty tensor map to JSON")
    names = sorted(outputs)
    arrays = {name: np.asarray(outputs[name]) for name in names}
    if fmt == COLUMNAR:
        if len(names) == 1:
            return '{"outputs": ' + tensor_to_json(arrays[names[0]], names[0]) + "}"
        parts = [f"{_json_string(n)}: {tensor_to_json(arrays[n], n)}" for n in names]
        return '{"outputs": {' + ", ".join(parts) + "}}"
    if fmt != ROW:
        raise invalid_argument("Invalid request format")
    batch_size = -1
    for name in names:
        if arrays[name].ndim == 0:
            raise invalid_argument(f"Tensor name: {name} has no shape information ")
        size = arrays[name].shape[0]
        if batch_size >= 0 and size != batch_size:
            raise invalid_argument(
                f"Tensor name: {name} has inconsistent batch size: {size} expecting: {batch_size}"
            )
        batch_size = size
    rows = {name: _rows_to_json(arrays[name], name) for name in names}
    if len(names) == 1:
        items = rows[names[0]]
    else:
        items = [
            "{" + ", ".join(f"{_json_string(n)}: {rows[n][i]}" for n in names) + "}"
            for i in range(batch_size)
        ]
    return '{"predictions": [\n' + ",\n".join(items) + "\n]}"


# --------------------------------------------------------------------------------------
# Client side helpers
# --------------------------------------------------------------------------------------


def to_json_value(value: Any) -> Any:
    """Arrays / bytes / numpy scalars -> JSON-ready Python values (bytes as ``{"b64"}``)."""
    if isinstance(value, bytes):
        return {"b64": base64.b64encode(value).decode("ascii")}
    if isinstance(value, np.ndarray):
        if value.dtype == np.object_ or value.dtype.kind == "S":
            return [to_json_value(v) for v in value] if value.ndim else to_json_value(value.item())
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, list | tuple):
        return [to_json_value(v) for v in value]
    return value


def from_json_value(value: Any) -> Any:
    """Undo b64 encoding in a response value: ``{"b64": s}`` -> bytes, recursively."""
    if _is_b64_object(value):
        return base64.b64decode(value["b64"])
    if isinstance(value, list):
        return [from_json_value(v) for v in value]
    if isinstance(value, dict):
        return {k: from_json_value(v) for k, v in value.items()}
    return value
