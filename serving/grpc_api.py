"""TF Serving's gRPC API (docs/serving.md, 'gRPC (`PredictionService`, `ModelService`)'):
``PredictionService.Predict`` / ``GetModelMetadata`` and ``ModelService.GetModelStatus``
on the ``tensorflow_serving.apis`` stubs. Predict is parse (``TensorProto`` -> numpy,
dtypes checked against the signature), ``serving.core.Predictor`` (shared with REST),
format (numpy -> ``TensorProto``). A ``ServingError``'s canonical code is the gRPC status
code, as in TF Serving. REST writes the same status and metadata messages as JSON.
"""

from __future__ import annotations

import functools
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
    """A request's ``ModelSpec`` proto as a ``serving.core.ModelSpec``."""
    version = proto.version.value if proto.HasField("version") else None
    return ModelSpec(proto.name, version, proto.version_label or None, proto.signature_name)


def status_response(registry: ModelRegistry, spec: ModelSpec):
    """``GetModelStatusResponse``: the model's version states, highest first."""
    if spec.label:
        spec = ModelSpec(spec.name, registry.get(spec.name, label=spec.label).version)
    return status_pb2.GetModelStatusResponse(model_version_status=[
        {"version": s.version, "state": s.state,
         "status": {"error_code": s.error_code, "error_message": s.error_message}}
        for s in registry.status(spec.name, spec.version)])


def metadata_response(predictor: Predictor, spec: ModelSpec):
    """``GetModelMetadataResponse`` with the ``signature_def`` map."""
    servable = predictor.registry.get(spec.name, spec.version, spec.label)
    response = metadata_pb2.GetModelMetadataResponse(
        model_spec={"name": spec.name, "version": {"value": servable.version}})
    signature_map = metadata_pb2.SignatureDefMap(signature_def=servable.signature_defs)
    response.metadata["signature_def"].Pack(signature_map)
    return response


def to_json(response) -> bytes:
    """A status or metadata response as TF Serving's REST API writes it."""
    doc = json_format.MessageToDict(
        response, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
    for packed in doc.get("metadata", {}).values():  # the Any's message, without its "@type"
        del packed["@type"]
    return orjson.dumps(doc)


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
    response = predict_pb2.PredictResponse(model_spec={
        "name": spec.name, "version": {"value": servable.version},
        "signature_name": spec.signature_name or "serving_default"})
    for name in output_filter or outputs:
        if name not in outputs:
            raise _invalid(f"output tensor alias not found in signature: {name}")
        response.outputs[name].CopyFrom(tf.make_tensor_proto(outputs[name]))
    return response


def _rpc(method: Callable[[Any, Any], Any]):
    """A servicer method; a ``ServingError`` aborts with its code, anything else INTERNAL."""
    @functools.wraps(method)
    def answer(self, request, context: grpc.ServicerContext):
        try:
            return method(self, request)
        except ServingError as e:
            code, message = GRPC_STATUS.get(e.code, grpc.StatusCode.UNKNOWN), e.message
        except Exception as e:  # a bad request must never take the server down
            logger.exception("Unhandled error in a gRPC call")
            code, message = grpc.StatusCode.INTERNAL, f"Internal error: {type(e).__name__}: {e}"
        context.abort(code, message)

    return answer


class _Servicer(prediction_grpc.PredictionServiceServicer, model_grpc.ModelServiceServicer):
    def __init__(self, predictor: Predictor):
        self.predictor = predictor

    @_rpc
    def Predict(self, request):  # noqa: N802 (the gRPC method names)
        spec = spec_from_proto(request.model_spec)
        servable, outputs = self.predictor.predict(spec, functools.partial(parse_tensors, request))
        return format_tensors(servable, spec, outputs, list(request.output_filter))

    @_rpc
    def GetModelMetadata(self, request):  # noqa: N802
        if not request.metadata_field:
            raise _invalid("GetModelMetadataRequest must specify at least one metadata_field")
        for field in request.metadata_field:
            if field != "signature_def":
                raise _invalid(f"Metadata field {field} is not supported")
        return metadata_response(self.predictor, spec_from_proto(request.model_spec))

    @_rpc
    def GetModelStatus(self, request):  # noqa: N802
        return status_response(self.predictor.registry, spec_from_proto(request.model_spec))


def make_grpc_server(predictor: Predictor, address: str, max_request_bytes: int) -> tuple[grpc.Server, int]:
    """A gRPC server (not started) bound to ``host:port``, and its port (0: not bound)."""
    options = [("grpc.max_receive_message_length", max_request_bytes),
               ("grpc.max_send_message_length", -1)]
    executor = futures.ThreadPoolExecutor(predictor.num_threads, thread_name_prefix="grpc")
    server = grpc.server(executor, options=options)
    servicer = _Servicer(predictor)
    prediction_grpc.add_PredictionServiceServicer_to_server(servicer, server)
    model_grpc.add_ModelServiceServicer_to_server(servicer, server)
    return server, server.add_insecure_port(address)
