"""TF Serving's gRPC API and the status / metadata messages (docs/serving.md,
'gRPC (`PredictionService`, `ModelService`)').

``PredictionService.Predict`` / ``GetModelMetadata`` and ``ModelService.GetModelStatus``
on the ``tensorflow_serving.apis`` stubs. Predict is parse (``TensorProto`` -> numpy,
checked against the signature's dtypes) -> ``serving.core.Predictor`` (shared with
REST) -> format (numpy -> ``TensorProto``). A ``ServingError``'s canonical code is the
gRPC status code, as in TF Serving. The status and metadata responses are built here
once; REST writes the same messages as JSON.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent import futures
from typing import Any

import grpc
import numpy as np
import orjson
import tensorflow as tf
from google.protobuf import json_format
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from serving.core import ModelRegistry, ModelSpec, Predictor, ServingError, Signature
from serving.core import invalid_argument as _invalid

logger = logging.getLogger(__name__)

GRPC_STATUS = {code.value[0]: code for code in grpc.StatusCode}
_State = get_model_status_pb2.ModelVersionStatus.State


def spec_from_proto(proto) -> ModelSpec:
    version = proto.version.value if proto.HasField("version") else None
    return ModelSpec(proto.name, version, proto.version_label or None, proto.signature_name)


def status_response(registry: ModelRegistry, spec: ModelSpec):
    """``GetModelStatusResponse``: the model's version states, highest first."""
    if spec.label:
        spec = ModelSpec(spec.name, registry.get(spec.name, label=spec.label).version)
    response = get_model_status_pb2.GetModelStatusResponse()
    for state in registry.status(spec.name, spec.version):
        status = response.model_version_status.add(version=state.version)
        status.state = _State.Value(state.state)
        status.status.error_code = state.error_code
        status.status.error_message = state.error_message
    return response


def metadata_response(predictor: Predictor, spec: ModelSpec):
    """``GetModelMetadataResponse`` with the ``signature_def`` map."""
    servable = predictor.registry.get(spec.name, spec.version, spec.label)
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    response.model_spec.name = spec.name
    response.model_spec.version.value = servable.version
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    for name, signature_def in servable.signature_defs.items():
        signature_map.signature_def[name].CopyFrom(signature_def)
    response.metadata["signature_def"].Pack(signature_map)
    return response


def _to_dict(message) -> dict[str, Any]:
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def to_json(response) -> bytes:
    """A status or metadata response as TF Serving's REST API writes it."""
    if isinstance(response, get_model_metadata_pb2.GetModelMetadataResponse):
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signature_map)
        doc = {
            "model_spec": _to_dict(response.model_spec),
            "metadata": {"signature_def": _to_dict(signature_map)},
        }
        doc["model_spec"]["version"] = str(response.model_spec.version.value)
        return orjson.dumps(doc)
    return orjson.dumps(_to_dict(response))


def parse_tensors(request, signature: Signature) -> dict[str, np.ndarray]:
    """``PredictRequest.inputs`` -> arrays, dtypes checked against ``signature``."""
    inputs = {}
    for name, proto in request.inputs.items():
        info = signature.inputs.get(name)
        if info is not None and proto.dtype != info.dtype.as_datatype_enum:
            got = tf.as_dtype(proto.dtype).name if proto.dtype else "DT_INVALID"
            raise _invalid(f"Expects arg '{name}' to be {info.dtype.name} but {got} is provided")
        try:
            inputs[name] = tf.make_ndarray(proto)
        except (TypeError, ValueError) as e:
            raise _invalid(f"Input '{name}' is not a valid TensorProto: {e}") from None
    return inputs


def format_tensors(servable, spec: ModelSpec, outputs: dict[str, np.ndarray], output_filter):
    """Output arrays -> ``PredictResponse`` (only ``output_filter``'s names if given)."""
    response = predict_pb2.PredictResponse()
    response.model_spec.name = spec.name
    response.model_spec.version.value = servable.version
    response.model_spec.signature_name = spec.signature_name or "serving_default"
    for name in output_filter or outputs:
        if name not in outputs:
            raise _invalid(f"output tensor alias not found in signature: {name}")
        response.outputs[name].CopyFrom(tf.make_tensor_proto(outputs[name]))
    return response


def _answer(context: grpc.ServicerContext, method: Callable[[], Any]):
    """Run ``method``; a ``ServingError`` aborts with its code, anything else INTERNAL."""
    try:
        return method()
    except ServingError as e:
        code, message = GRPC_STATUS.get(e.code, grpc.StatusCode.UNKNOWN), e.message
    except Exception as e:  # a bad request must never take the server down
        logger.exception("Unhandled error in a gRPC call")
        code, message = grpc.StatusCode.INTERNAL, f"Internal error: {type(e).__name__}: {e}"
    context.abort(code, message)


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, predictor: Predictor):
        self.predictor = predictor

    def Predict(self, request, context):  # noqa: N802 (the gRPC method name)
        def predict():
            spec = spec_from_proto(request.model_spec)
            servable, outputs = self.predictor.predict(
                spec, lambda signature: parse_tensors(request, signature)
            )
            return format_tensors(servable, spec, outputs, list(request.output_filter))

        return _answer(context, predict)

    def GetModelMetadata(self, request, context):  # noqa: N802
        def metadata():
            fields = list(request.metadata_field)
            if not fields:
                raise _invalid("GetModelMetadataRequest must specify at least one metadata_field")
            for field in fields:
                if field != "signature_def":
                    raise _invalid(f"Metadata field {field} is not supported")
            return metadata_response(self.predictor, spec_from_proto(request.model_spec))

        return _answer(context, metadata)


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, registry: ModelRegistry):
        self.registry = registry

    def GetModelStatus(self, request, context):  # noqa: N802
        spec = spec_from_proto(request.model_spec)
        return _answer(context, lambda: status_response(self.registry, spec))


def make_grpc_server(
    predictor: Predictor, host: str, port: int, max_request_bytes: int
) -> tuple[grpc.Server, int]:
    """A started-later gRPC server with both services, bound to ``host:port``."""
    server = grpc.server(
        futures.ThreadPoolExecutor(predictor.num_threads, thread_name_prefix="grpc"),
        options=[
            ("grpc.max_receive_message_length", max_request_bytes),
            ("grpc.max_send_message_length", -1),
        ],
    )
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionServicer(predictor), server
    )
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(
        ModelServicer(predictor.registry), server
    )
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    bound = server.add_insecure_port(address)
    return server, bound


