"""TF Serving's gRPC API and its status / metadata messages (docs/serving.md,
'gRPC (`PredictionService`, `ModelService`)').

``PredictionService.Predict`` / ``GetModelMetadata`` and ``ModelService.GetModelStatus``
on the ``tensorflow_serving.apis`` stubs. Predict is parse (``TensorProto`` -> numpy,
dtypes checked against the signature), ``serving.core.Predictor`` (shared with REST),
format (numpy -> ``TensorProto``). A ``ServingError``'s canonical code is the gRPC status
code, as in TF Serving. REST writes the same status and metadata messages as JSON.
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
from tensorflow_serving.apis import get_model_metadata_pb2 as metadata_pb2
from tensorflow_serving.apis import get_model_status_pb2 as status_pb2
from tensorflow_serving.apis import model_service_pb2_grpc as model_grpc
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc as prediction_grpc

from serving.core import ModelRegistry, ModelSpec, Predictor, ServingError, Signature
from serving.core import invalid_argument as _invalid

logger = logging.getLogger(__name__)

GRPC_STATUS = {code.value[0]: code for code in grpc.StatusCode}


def spec_from_proto(proto) -> ModelSpec:
    version = proto.version.value if proto.HasField("version") else None
    return ModelSpec(proto.name, version, proto.version_label or None, proto.signature_name)


def status_response(registry: ModelRegistry, spec: ModelSpec):
    """``GetModelStatusResponse``: the model's version states, highest first."""
    if spec.label:
        spec = ModelSpec(spec.name, registry.get(spec.name, label=spec.label).version)
    response = status_pb2.GetModelStatusResponse()
    for state in registry.status(spec.name, spec.version):
        status = response.model_version_status.add(
            version=state.version, state=status_pb2.ModelVersionStatus.State.Value(state.state))
        status.status.error_code = state.error_code
        status.status.error_message = state.error_message
    return response


def metadata_response(predictor: Predictor, spec: ModelSpec):
    """``GetModelMetadataResponse`` with the ``signature_def`` map."""
    servable = predictor.registry.get(spec.name, spec.version, spec.label)
    response = metadata_pb2.GetModelMetadataResponse()
    response.model_spec.name = spec.name
    response.model_spec.version.value = servable.version
    signature_map = metadata_pb2.SignatureDefMap()
    signature_map.signature_def.MergeFrom(servable.signature_defs)
    response.metadata["signature_def"].Pack(signature_map)
    return response


def _to_dict(message) -> dict[str, Any]:
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)


def to_json(response) -> bytes:
    """A status or metadata response as TF Serving's REST API writes it."""
    if not isinstance(response, metadata_pb2.GetModelMetadataResponse):
        return orjson.dumps(_to_dict(response))
    signature_map = metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(signature_map)
    model_spec = _to_dict(response.model_spec) | {"version": str(response.model_spec.version.value)}
    return orjson.dumps({"model_spec": model_spec,
                         "metadata": {"signature_def": _to_dict(signature_map)}})


def parse_tensors(request, signature: Signature) -> dict[str, np.ndarray]:
    """``PredictRequest.inputs`` -> arrays, dtypes checked against ``signature``."""
    inputs = {}
    for name, proto in request.inputs.items():
        spec = signature.inputs.get(name)
        if spec is not None and proto.dtype != spec.dtype.as_datatype_enum:
            got = tf.as_dtype(proto.dtype).name if proto.dtype else "DT_INVALID"
            raise _invalid(f"Expects arg '{name}' to be {spec.dtype.name} but {got} is provided")
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


class PredictionServicer(prediction_grpc.PredictionServiceServicer):
    def __init__(self, predictor: Predictor):
        self.predictor = predictor

    def Predict(self, request, context):  # noqa: N802 (the gRPC method name)
        def predict():
            spec = spec_from_proto(request.model_spec)
            servable, outputs = self.predictor.predict(
                spec, lambda signature: parse_tensors(request, signature))
            return format_tensors(servable, spec, outputs, list(request.output_filter))

        return _answer(context, predict)

    def GetModelMetadata(self, request, context):  # noqa: N802
        def metadata():
            if not request.metadata_field:
                raise _invalid("GetModelMetadataRequest must specify at least one metadata_field")
            for field in request.metadata_field:
                if field != "signature_def":
                    raise _invalid(f"Metadata field {field} is not supported")
            return metadata_response(self.predictor, spec_from_proto(request.model_spec))

        return _answer(context, metadata)


class ModelServicer(model_grpc.ModelServiceServicer):
    def __init__(self, registry: ModelRegistry):
        self.registry = registry

    def GetModelStatus(self, request, context):  # noqa: N802
        spec = spec_from_proto(request.model_spec)
        return _answer(context, lambda: status_response(self.registry, spec))


def make_grpc_server(predictor: Predictor, host: str, port: int,
                     max_request_bytes: int) -> tuple[grpc.Server, int]:
    """A gRPC server with both services bound to ``host:port`` (not started yet), and
    the port it bound (0 if it could not)."""
    options = [("grpc.max_receive_message_length", max_request_bytes),
               ("grpc.max_send_message_length", -1)]
    executor = futures.ThreadPoolExecutor(predictor.num_threads, thread_name_prefix="grpc")
    server = grpc.server(executor, options=options)
    prediction_grpc.add_PredictionServiceServicer_to_server(PredictionServicer(predictor), server)
    model_grpc.add_ModelServiceServicer_to_server(ModelServicer(predictor.registry), server)
    return server, server.add_insecure_port(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
