"""Client for a decoder served by TensorFlow Serving (or ``serving.server``), REST or gRPC::

    with ServingClient("http://localhost:8501", "evae") as client:  # or "grpc://host:8500"
        images = client.sample(16, seed=0)  # [16, H, W, C] float32 in [0, 1]
        prior = client.sample(16, 0, signature_name="sample_prior")

    python -m serving.client --url http://localhost:8501 --num 16 --out samples.png

Failures raise :class:`ServingError`; the command line prints its message and exits with 1.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import gc
import json
import math
import os
import socket
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import orjson
import requests

from evae_tf import errors
from evae_tf.cli import EXIT_INTERRUPTED, fail, positive
from evae_tf.files import write_bytes_atomic
from evae_tf.images import decode_png, encode_png, grid

# HTTP status -> canonical code (the first of several: 400 is also FAILED_PRECONDITION).
_CODE_BY_HTTP = {
    400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
    409: "ABORTED", 413: "RESOURCE_EXHAUSTED", 429: "RESOURCE_EXHAUSTED", 499: "CANCELLED",
    500: "INTERNAL", 501: "UNIMPLEMENTED", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}  # fmt: skip


class ServingError(errors.ServingError):
    """A failed request. ``status``: HTTP status (REST) or gRPC code name, None if no
    answer came; ``code``: the canonical code name (``"NOT_FOUND"``) for both."""

    def __init__(self, message: str, status: int | str | None = None):
        protocol = "HTTP" if isinstance(status, int) else "gRPC"
        super().__init__(message if status is None else f"{protocol} {status}: {message}")
        self.message, self.status = message, status
        self.code = _CODE_BY_HTTP.get(status, "UNKNOWN") if isinstance(status, int) else status


class _Rest:
    """TF Serving's REST API: JSON over ``requests``, columnar ``inputs`` / ``outputs``."""

    def __init__(self, url: str, model: str, version: int | None, timeout: float):
        self.url, self.timeout = url.rstrip("/"), timeout
        version_path = "" if version is None else f"/versions/{version}"
        self._model_url = f"{self.url}/v1/models/{quote(model, safe='')}{version_path}"
        self._session = requests.Session()
        self.close = self._session.close

    def status(self) -> dict[str, Any]:
        return self._call("GET", self._model_url)

    def metadata(self) -> dict[str, Any]:
        return self._call("GET", self._model_url + "/metadata")

    def predict(self, inputs: Mapping[str, Any], signature_name: str) -> dict[str, Any]:
        body = {"signature_name": signature_name, "inputs": dict(inputs)}
        outputs = self._call("POST", self._model_url + ":predict", body).get("outputs")
        if not isinstance(outputs, dict):
            raise ServingError(f"bad response: no 'outputs' object, got {outputs!r:.80}", 200)
        return from_json_value(outputs)

    def _call(self, method: str, url: str, body: Any = None) -> dict[str, Any]:
        data = None if body is None else json.dumps(body, default=_json_default).encode()
        try:
            response = self._session.request(method, url, data=data, timeout=self.timeout)
        except requests.exceptions.Timeout:
            raise ServingError(f"timed out after {self.timeout:g}s waiting for {url}") from None
        except requests.exceptions.ConnectionError as e:
            raise ServingError(f"cannot reach {self.url}: {_connection_reason(e)}") from None
        except requests.exceptions.RequestException as e:
            raise ServingError(f"request to {url} failed: {e}") from None
        return _json_object(response, url)


def _json_default(value: Any) -> Any:
    """What ``json`` cannot write: numpy values as lists / numbers, bytes as ``{"b64"}``."""
    if isinstance(value, bytes):
        return {"b64": base64.b64encode(value).decode("ascii")}
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    raise TypeError(f"cannot send a {type(value).__name__} as JSON")


_parse_lock = threading.Lock()


def loads(content: bytes) -> Any:
    """A REST answer's JSON, or ``None``. The cyclic GC is paused meanwhile: the ~17k lists
    of 16 images set off collections costing 5-10 × the parse (orjson holds the GIL anyway)."""
    with _parse_lock:
        enabled = gc.isenabled()
        try:
            gc.disable()
            return orjson.loads(content)
        except orjson.JSONDecodeError:  # NaN / Infinity tokens, which TF Serving writes
            with contextlib.suppress(ValueError):
                return json.loads(content)
        finally:
            if enabled:
                gc.enable()
    return None


def _json_object(response: requests.Response, url: str) -> dict[str, Any]:
    """The JSON object of a 200 answer; otherwise a :class:`ServingError`."""
    status, answer = response.status_code, loads(response.content)
    if not isinstance(answer, dict):
        snippet = response.text[:200].strip()
        raise ServingError(f"bad response from {url}: not JSON (an object): {snippet!r}", status)
    if status != 200:
        error = answer.get("error") or f"unexpected error response: {response.text[:200]!r}"
        raise ServingError(str(error), status)
    return answer


def from_json_value(value: Any) -> Any:
    """``{"b64": s}`` -> bytes, recursively; a tensor (one dtype) whose first leaf is not one stays."""
    if isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str):
        return base64.b64decode(value["b64"])
    if isinstance(value, dict):
        return {k: from_json_value(v) for k, v in value.items()}
    leaf = value
    while isinstance(leaf, list) and leaf:
        leaf = leaf[0]
    return [from_json_value(v) for v in value] if isinstance(leaf, dict) else value


def _connection_reason(error: BaseException) -> str:
    """'connection refused' / 'unknown host' from the exception chain, else its message."""
    cause: BaseException | None = error
    while cause is not None and not isinstance(cause, ConnectionRefusedError | socket.gaierror):
        cause = cause.__cause__ or cause.__context__
    if cause is None:
        return str(error)
    return "connection refused" if isinstance(cause, ConnectionRefusedError) else "unknown host"


class _Grpc:
    """TF Serving's gRPC API: ``PredictionService`` / ``ModelService`` stubs."""

    def __init__(self, address: str, model: str, version: int | None, timeout: float):
        import grpc
        from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

        self.url, self.timeout, self._grpc = f"grpc://{address}", timeout, grpc
        self._spec = {"name": model, "version": None if version is None else {"value": version}}
        options = [("grpc.max_receive_message_length", -1)]
        self._channel = grpc.insecure_channel(address, options=options)
        self._predict = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self._model = model_service_pb2_grpc.ModelServiceStub(self._channel)
        self.close = self._channel.close

    def status(self) -> dict[str, Any]:
        from tensorflow_serving.apis.get_model_status_pb2 import GetModelStatusRequest

        return _rest_json(self._call(self._model.GetModelStatus, GetModelStatusRequest))

    def metadata(self) -> dict[str, Any]:
        from tensorflow_serving.apis.get_model_metadata_pb2 import GetModelMetadataRequest

        return _rest_json(self._call(self._predict.GetModelMetadata, GetModelMetadataRequest,
                                     metadata_field=["signature_def"]))

    def predict(self, inputs: Mapping[str, Any], signature_name: str) -> dict[str, Any]:
        import tensorflow as tf
        from tensorflow_serving.apis.predict_pb2 import PredictRequest

        tensors = {name: tf.make_tensor_proto(value) for name, value in inputs.items()}
        response = self._call(self._predict.Predict, PredictRequest, signature_name, inputs=tensors)
        outputs = {name: tf.make_ndarray(proto) for name, proto in response.outputs.items()}
        return {k: list(v) if v.dtype == object else v for k, v in outputs.items()}

    def _call(self, method, request_type, signature_name: str = "", **fields):
        """``method(request_type(...))`` for this model; errors as :class:`ServingError`."""
        spec = {**self._spec, "signature_name": signature_name}
        request = request_type(model_spec=spec, **fields)
        try:
            return method(request, timeout=self.timeout)
        except self._grpc.RpcError as e:
            code, details = e.code(), e.details() or ""
            if code == self._grpc.StatusCode.UNAVAILABLE and "connect" in details:
                raise ServingError(f"cannot reach {self.url}: {details}") from None
            if code == self._grpc.StatusCode.DEADLINE_EXCEEDED and details == "Deadline Exceeded":
                message = f"timed out after {self.timeout:g}s waiting for {self.url}"
                raise ServingError(message) from None
            raise ServingError(details or str(code), code.name) from None


def _rest_json(response) -> dict[str, Any]:
    """A status or metadata response as REST's JSON, by the server's own formatter."""
    from serving.grpc_api import to_json

    return orjson.loads(to_json(response))


class ServingClient(contextlib.AbstractContextManager):
    """One model (version) of a TF Serving server at ``http(s)://`` (REST) or ``grpc://``."""

    def __init__(self, url: str, model: str, version: int | None = None, timeout: float = 30):
        if not url.startswith(("http://", "https://", "grpc://")):
            raise ValueError(f"url must start with http:// or https://. Received: url={url!r}. "
                             "For gRPC: grpc://host:port")  # fmt: skip
        if not model:
            raise ValueError(f"model must be a non-empty name. Received: model={model!r}")
        if version is not None and version < 0:
            raise ValueError(f"version must be >= 0. Received: version={version}")
        if not 0 < timeout < math.inf:
            raise ValueError(f"timeout must be a finite number > 0. Received: timeout={timeout}")
        self.model, self.version, self.timeout = model, version, timeout
        self.protocol = "grpc" if url.startswith("grpc://") else "rest"
        transport = _Grpc if self.protocol == "grpc" else _Rest
        self._transport = transport(url.removeprefix("grpc://"), model, version, timeout)
        self.url = self._transport.url

    def close(self) -> None:
        self._transport.close()

    def __exit__(self, *exc_info) -> None:
        self.close()

    def status(self) -> dict[str, Any]:
        """The model's version states (``GetModelStatus``), as REST's JSON."""
        return self._transport.status()

    def metadata(self) -> dict[str, Any]:
        """Model spec and the SignatureDef map (``GetModelMetadata``), as REST's JSON."""
        return self._transport.metadata()

    def predict(self, inputs: Mapping[str, Any], signature_name: str = "") -> dict[str, Any]:
        """Named input values -> named outputs (arrays; strings as lists of bytes)."""
        return self._transport.predict(inputs, signature_name)

    def sample_outputs(self, num: int, seed: int, signature_name: str = "sample") -> dict:
        """A sampling signature's raw outputs (``z``, ``images``, ``png_bytes``)."""
        inputs = {"num_samples": np.int32(num), "seed": np.int64(seed)}
        return self.predict(inputs, signature_name)

    def sample(self, num: int, seed: int, signature_name: str = "sample") -> np.ndarray:
        """``num`` images drawn with ``seed``: [num, H, W, C] float32 in [0, 1]."""
        return images_from_outputs(self.sample_outputs(num, seed, signature_name))

    def decode_outputs(self, z: np.ndarray) -> dict[str, Any]:
        """``serving_default`` outputs for latents ``z`` [N, latent_dim] (shape checked there)."""
        return self.predict({"z": np.asarray(z, dtype=np.float32)})

    def decode(self, z: np.ndarray) -> np.ndarray:
        """Images for latents ``z`` [N, latent_dim]: [N, H, W, C] float32 in [0, 1]."""
        return images_from_outputs(self.decode_outputs(z))


def images_from_outputs(outputs: Mapping[str, Any]) -> np.ndarray:
    """[N, H, W, C] float32 in [0, 1] from ``png_bytes`` (or else ``images``)."""
    if "png_bytes" not in outputs:
        if "images" in outputs:
            return np.asarray(outputs["images"], dtype=np.float32)
        raise ServingError(f"bad response: no 'png_bytes' or 'images' in {sorted(outputs)}", 200)
    try:
        return np.stack([decode_png(png) for png in outputs["png_bytes"]])
    except Exception as e:
        raise ServingError(f"bad response: png_bytes are not PNG images: {e}", 200) from None


def _build_parser() -> argparse.ArgumentParser:
    description = "Sample (or decode latents) from a served decoder and write a PNG grid."
    parser = argparse.ArgumentParser(prog="python -m serving.client", description=description)
    add = parser.add_argument
    add("--url", default="http://localhost:8501", help="REST URL, or grpc://host:port")
    add("--grpc", metavar="HOST:PORT", default=None, help="use gRPC at this address")
    add("--model", default="evae", help="model name")
    add("--version", type=int, default=None, help="pin a model version")
    add("--signature", default="sample", help="sampling signature (e.g. sample_prior)")
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--num", type=positive(int), default=16, help="samples to draw (16)")
    what.add_argument("--latent", type=Path, default=None,
                      help="decode these latents (.npy, [N, latent_dim]) instead of sampling")
    add("--seed", type=int, default=0, help="sampling seed")
    add("--out", type=Path, default=Path("samples.png"), help="grid PNG path")
    add("--ncols", type=positive(int), default=None, help="grid columns (default: square)")
    add("--individual-dir", type=Path, default=None, help="also write one PNG per image here")
    add("--timeout", type=positive(float), default=30.0, help="seconds per request")
    return parser


def _load_latents(path: Path) -> np.ndarray:
    try:
        z = np.atleast_2d(np.load(path))
    except (OSError, ValueError) as e:
        raise ServingError(f"cannot read --latent {str(path)!r}: {e}") from None
    if z.ndim != 2 or len(z) == 0:
        raise ServingError(f"--latent must hold a [N, latent_dim] array, got shape {z.shape}")
    return z


def main(argv: list[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    if not args.signature:
        parser.error("--signature must not be empty")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # gRPC imports TensorFlow: keep it quiet
    url = f"grpc://{args.grpc}" if args.grpc else args.url
    try:
        client = ServingClient(url, args.model, args.version, timeout=args.timeout)
    except ValueError as e:
        parser.error(str(e))
    try:
        with client:
            if args.latent is not None:
                outputs = client.decode_outputs(_load_latents(args.latent))
            else:
                outputs = client.sample_outputs(args.num, args.seed, args.signature)
        images = images_from_outputs(outputs)
        write_bytes_atomic(args.out, encode_png(grid(images, args.ncols)))
        if args.individual_dir is not None:
            pngs = outputs.get("png_bytes") or [encode_png(image) for image in images]
            for index, data in enumerate(pngs):
                write_bytes_atomic(args.individual_dir / f"{index:04d}.png", data)
    except (errors.EvaeError, OSError) as e:  # a request's error: the message without its status
        return fail(e.message if isinstance(e, errors.EvaeError) else f"cannot write output: {e}")
    except KeyboardInterrupt:  # Ctrl-C: a file being written is left as it was
        return EXIT_INTERRUPTED
    height, width = images.shape[1:3]
    print(f"wrote {args.out} ({len(images)} images, {width}x{height} each)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
