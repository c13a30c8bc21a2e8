"""Client for a decoder served by TensorFlow Serving (or ``serving.server``), REST or gRPC.

Library::

    client = ServingClient("http://localhost:8501", "evae")   # or "grpc://localhost:8500"
    client.status()                      # {"model_version_status": [...]}
    images = client.sample(16, seed=0)   # [16, H, W, C] float32 in [0, 1]
    images = client.sample(16, 0, signature_name="sample_prior")
    images = client.decode(z)            # z: [N, latent_dim] -> [N, H, W, C]
    grid = make_grid(images)             # near-square [rows*H, cols*W, C]

Command line (writes a grid PNG atomically, optionally one PNG per sample)::

    python -m serving.client --url http://localhost:8501 --model evae --num 16 --seed 0 \\
        --out samples.png [--grpc localhost:8500] [--signature sample] [--version N]

``sample`` calls a sampling signature (``sample`` by default) with its two scalars;
``decode`` sends latents ``z`` to ``serving_default``. Over REST both use the columnar
format; over gRPC tensors travel as ``TensorProto`` (``tf.make_tensor_proto``). Images
come from the ``png_bytes`` output. Any failure raises :class:`ServingError` with the
HTTP status (REST) or gRPC status code name, the canonical ``code`` and the server's
message; the command line prints the message and exits with status 1.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import logging
import math
import os
import socket
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import orjson
import requests

from evae_tf.files import write_bytes_atomic
from evae_tf.images import encode_png, grid

logger = logging.getLogger(__name__)
# HTTP status -> canonical code (the first of several: 400 is also FAILED_PRECONDITION).
_CODE_BY_HTTP = {
    400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
    409: "ABORTED", 413: "RESOURCE_EXHAUSTED", 429: "RESOURCE_EXHAUSTED", 499: "CANCELLED",
    500: "INTERNAL", 501: "UNIMPLEMENTED", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED",
}  # fmt: skip


class ServingError(Exception):
    """A failed request. ``status``: HTTP status (REST) or gRPC code name, None if no
    answer came; ``code``: the canonical code name (``"NOT_FOUND"``) for both."""

    def __init__(self, message: str, status: int | str | None = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = _CODE_BY_HTTP.get(status, "UNKNOWN") if isinstance(status, int) else status

    def __str__(self) -> str:
        if self.status is None:
            return self.message
        protocol = "HTTP" if isinstance(self.status, int) else "gRPC"
        return f"{protocol} {self.status}: {self.message}"


class _Rest:
    """TF Serving's REST API: JSON with ``requests``."""

    def __init__(self, url: str, timeout: float):
        self.url, self.timeout = url.rstrip("/"), timeout
        self._session = requests.Session()

    def close(self) -> None:
        self._session.close()

    def _model_url(self, model: str, version: int | None) -> str:
        url = f"{self.url}/v1/models/{quote(model, safe='')}"
        return url if version is None else f"{url}/versions/{version}"

    def call(self, method: str, url: str, body: Any = None) -> dict[str, Any]:
        data = None if body is None else rest_json_dumps(body)
        try:
            response = self._session.request(method, url, data=data, timeout=self.timeout)
        except requests.exceptions.Timeout:
            raise ServingError(f"timed out after {self.timeout:g}s waiting for {url}") from None
        except requests.exceptions.ConnectionError as e:
            raise ServingError(f"cannot reach {self.url}: {_connection_reason(e)}") from None
        except requests.exceptions.RequestException as e:
            raise ServingError(f"request to {url} failed: {e}") from None
        try:
            answer = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            try:  # NaN / Infinity tokens, which TF Serving writes
                answer = response.json()
            except ValueError:
                snippet = response.text[:200].strip()
                raise ServingError(
                    f"bad response from {url}: not JSON: {snippet!r}", response.status_code
                ) from None
        if response.status_code != 200:
            message = answer.get("error") if isinstance(answer, dict) else None
            if not isinstance(message, str):
                message = f"unexpected error response: {response.text[:200]!r}"
            raise ServingError(message, response.status_code)
        if not isinstance(answer, dict):
            raise ServingError(f"bad response from {url}: expected a JSON object", 200)
        return answer

    def status(self, model: str, version: int | None) -> dict[str, Any]:
        return self.call("GET", self._model_url(model, version))

    def metadata(self, model: str, version: int | None) -> dict[str, Any]:
        return self.call("GET", self._model_url(model, version) + "/metadata")

    def predict(self, model, version, body: dict[str, Any]) -> dict[str, Any]:
        return self.call("POST", self._model_url(model, version) + ":predict", body)

    def predict_columns(self, model, version, inputs: Mapping, signature_name: str) -> dict:
        body = {"signature_name": signature_name, "inputs": _to_json(inputs)}
        outputs = self.predict(model, version, body).get("outputs")
        if not isinstance(outputs, dict):
            raise ServingError(f"bad response: no 'outputs' object, got {outputs!r:.80}", 200)
        return from_json_value(outputs)


class _Grpc:
    """TF Serving's gRPC API: ``PredictionService`` / ``ModelService`` stubs."""

    def __init__(self, address: str, timeout: float):
        import grpc
        from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

        self.url, self.timeout, self._grpc = f"grpc://{address}", timeout, grpc
        options = [("grpc.max_receive_message_length", -1)]
        self._channel = grpc.insecure_channel(address, options=options)
        self._predict = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self._model = model_service_pb2_grpc.ModelServiceStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def _call(self, method, request):
        try:
            return method(request, timeout=self.timeout)
        except self._grpc.RpcError as e:
            code = e.code()
            if code == self._grpc.StatusCode.UNAVAILABLE and "connect" in (e.details() or ""):
                raise ServingError(f"cannot reach {self.url}: {e.details()}") from None
            if code == self._grpc.StatusCode.DEADLINE_EXCEEDED and e.details() == "Deadline Exceeded":
                message = f"timed out after {self.timeout:g}s waiting for {self.url}"
                raise ServingError(message) from None
            raise ServingError(e.details() or str(code), code.name) from None

    @staticmethod
    def _spec(request, model: str, version: int | None, signature_name: str = ""):
        request.model_spec.name = model
        if version is not None:
            request.model_spec.version.value = version
        if signature_name:
            request.model_spec.signature_name = signature_name
        return request

    def status(self, model: str, version: int | None) -> dict[str, Any]:
        from tensorflow_serving.apis import get_model_status_pb2

        request = self._spec(get_model_status_pb2.GetModelStatusRequest(), model, version)
        return _to_dict(self._call(self._model.GetModelStatus, request))

    def metadata(self, model: str, version: int | None) -> dict[str, Any]:
        from tensorflow_serving.apis import get_model_metadata_pb2 as pb

        request = self._spec(pb.GetModelMetadataRequest(), model, version)
        request.metadata_field.append("signature_def")
        response = self._call(self._predict.GetModelMetadata, request)
        signatures = pb.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signatures)
        spec = _to_dict(response.model_spec)
        return {"model_spec": spec, "metadata": {"signature_def": _to_dict(signatures)}}

    def predict_columns(self, model, version, inputs: Mapping, signature_name: str) -> dict:
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2

        request = self._spec(predict_pb2.PredictRequest(), model, version, signature_name)
        for name, value in inputs.items():
            request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
        response = self._call(self._predict.Predict, request)
        outputs = {name: tf.make_ndarray(proto) for name, proto in response.outputs.items()}
        return {k: list(v) if v.dtype == object else v for k, v in outputs.items()}


def _to_dict(message) -> dict[str, Any]:
    from google.protobuf import json_format

    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


class ServingClient:
    """Client for one model (optionally one version) of a TF Serving server.

    ``url``: ``http(s)://host:port`` for REST or ``grpc://host:port`` for gRPC.
    """

    def __init__(self, url: str, model: str, version: int | None = None, timeout: float = 30):
        if not url.startswith(("http://", "https://", "grpc://")):
            raise ValueError(
                f"url must start with http:// or https://. Received: url={url!r}. "
                "For gRPC: grpc://host:port"
            )
        if not model:
            raise ValueError(f"model must be a non-empty name. Received: model={model!r}")
        if version is not None and version < 0:
            raise ValueError(f"version must be >= 0. Received: version={version}")
        if not (isinstance(timeout, int | float) and math.isfinite(timeout) and timeout > 0):
            raise ValueError(f"timeout must be a finite number > 0. Received: timeout={timeout}")
        self.model, self.version, self.timeout = model, version, timeout
        if url.startswith("grpc://"):
            self.protocol, self._transport = "grpc", _Grpc(url.removeprefix("grpc://"), timeout)
        else:
            self.protocol, self._transport = "rest", _Rest(url, timeout)
        self.url = self._transport.url

    def close(self) -> None:
        self._transport.close()

    def __enter__(self) -> ServingClient:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def status(self) -> dict[str, Any]:
        """The model's version states (``GetModelStatus``), as REST's JSON."""
        return self._transport.status(self.model, self.version)

    def metadata(self) -> dict[str, Any]:
        """Model spec and the SignatureDef map (``GetModelMetadata``), as REST's JSON."""
        return self._transport.metadata(self.model, self.version)

    def predict(self, inputs: Mapping[str, Any], signature_name: str = "") -> dict[str, Any]:
        """Named input values -> named outputs (arrays; strings as lists of bytes)."""
        return self._transport.predict_columns(self.model, self.version, inputs, signature_name)

    def sample_outputs(self, num: int, seed: int, signature_name: str = "sample") -> dict:
        """A sampling signature's raw outputs (``z``, ``images``, ``png_bytes``)."""
        inputs = {"num_samples": np.int32(num), "seed": np.int64(seed)}
        return self.predict(inputs, signature_name)

    def sample(self, num: int, seed: int, signature_name: str = "sample") -> np.ndarray:
        """``num`` images drawn with ``seed``: [num, H, W, C] float32 in [0, 1]."""
        return images_from_outputs(self.sample_outputs(num, seed, signature_name))

    def decode_outputs(self, z: np.ndarray) -> dict[str, Any]:
        """``serving_default`` outputs for latents ``z`` [N, latent_dim]."""
        z = np.asarray(z, dtype=np.float32)
        if z.ndim != 2 or len(z) == 0:
            raise ValueError(
                f"z must be a non-empty [N, latent_dim] array. Received: shape={z.shape}"
            )
        return self.predict({"z": z})

    def decode(self, z: np.ndarray) -> np.ndarray:
        """Images for latents ``z`` [N, latent_dim]: [N, H, W, C] float32 in [0, 1]."""
        return images_from_outputs(self.decode_outputs(z))


def rest_json_dumps(body: Any) -> bytes:
    """JSON with NaN / Infinity tokens allowed (TF Serving accepts them)."""
    return json.dumps(body, allow_nan=True).encode()


def _to_json(value: Any) -> Any:
    """Arrays / bytes / numpy scalars -> JSON-ready Python values (bytes as ``{"b64"}``)."""
    if isinstance(value, bytes):
        return {"b64": base64.b64encode(value).decode("ascii")}
    if isinstance(value, Mapping):
        return {k: _to_json(v) for k, v in value.items()}
    if isinstance(value, np.ndarray) and value.dtype.kind in "OS":
        return [_to_json(v) for v in value] if value.ndim else _to_json(value.item())
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    if isinstance(value, list | tuple):
        return [_to_json(v) for v in value]
    return value


def from_json_value(value: Any) -> Any:
    """Undo b64 encoding in a response value: ``{"b64": s}`` -> bytes, recursively."""
    if isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str):
        return base64.b64decode(value["b64"])
    if isinstance(value, list):
        return [from_json_value(v) for v in value]
    if isinstance(value, dict):
        return {k: from_json_value(v) for k, v in value.items()}
    return value


def _connection_reason(error: requests.exceptions.ConnectionError) -> str:
    """'connection refused' / 'unknown host' / requests' message, from the cause chain."""
    pending: list[BaseException] = [error]
    seen: set[int] = set()
    while pending:
        cause = pending.pop()
        if id(cause) in seen:
            continue
        seen.add(id(cause))
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, socket.gaierror):
            return "unknown host"
        linked = [cause.__cause__, cause.__context__, getattr(cause, "reason", None), *cause.args]
        pending.extend(c for c in linked if isinstance(c, BaseException))
    return str(error)


def decode_png(data: bytes) -> np.ndarray:
    """One PNG -> [H, W, C] uint8 (C = 1 for grayscale)."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        array = np.asarray(image)
    return array[..., None] if array.ndim == 2 else array


def images_from_outputs(outputs: Mapping[str, Any]) -> np.ndarray:
    """[N, H, W, C] float32 in [0, 1] from ``png_bytes`` (or else ``images``)."""
    if "png_bytes" in outputs:
        try:
            pixels = np.stack([decode_png(data) for data in outputs["png_bytes"]])
        except Exception as e:
            raise ServingError(f"bad response: png_bytes are not PNG images: {e}", 200) from None
        return pixels.astype(np.float32) / 255.0
    if "images" in outputs:
        return np.asarray(outputs["images"], dtype=np.float32)
    raise ServingError(f"bad response: no 'png_bytes' or 'images' output in {sorted(outputs)}", 200)


def make_grid(images: np.ndarray, ncols: int | None = None, padding: int = 0) -> np.ndarray:
    """Tile [N, H, W, C] images into one image, near-square by default
    (:func:`evae_tf.images.grid`; empty cells and gaps are 0)."""
    return grid(images, ncols, padding=padding)


def write_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, then rename it over ``path``."""
    write_bytes_atomic(path, data)


# --------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m serving.client",
        description="Sample (or decode latents) from a served decoder and write a PNG grid.",
    )
    add = parser.add_argument
    add("--url", default="http://localhost:8501", help="REST URL, or grpc://host:port")
    add("--grpc", metavar="HOST:PORT", default=None, help="use gRPC at this address")
    add("--model", default="evae", help="model name")
    add("--version", type=int, default=None, help="pin a model version")
    add("--signature", default="sample", help="sampling signature (e.g. sample_prior)")
    add("--num", type=int, default=None, help="samples to draw (default 16)")
    add("--seed", type=int, default=0, help="sampling seed")
    add("--latent", type=Path, default=None,
        help="decode these latents (.npy, [N, latent_dim]) instead of sampling")  # fmt: skip
    add("--out", type=Path, default=Path("samples.png"), help="grid PNG path")
    add("--ncols", type=int, default=None, help="grid columns (default: square)")
    add("--individual-dir", type=Path, default=None, help="also write one PNG per image here")
    add("--timeout", type=float, default=30.0, help="seconds per request")
    return parser


def _check_args(parser: argparse.ArgumentParser, args) -> int:
    if args.latent is not None and args.num is not None:
        parser.error("--num and --latent are mutually exclusive")
    num = 16 if args.num is None else args.num
    if args.latent is None and num < 1:
        parser.error(f"--num must be >= 1, got {num}")
    if args.ncols is not None and args.ncols < 1:
        parser.error(f"--ncols must be >= 1, got {args.ncols}")
    if not (math.isfinite(args.timeout) and args.timeout > 0):
        parser.error(f"--timeout must be a finite number > 0, got {args.timeout:g}")
    if not args.signature:
        parser.error("--signature must not be empty")
    return num


def _load_latents(path: Path) -> np.ndarray:
    try:
        z = np.load(path)
    except (OSError, ValueError) as e:
        raise ServingError(f"cannot read --latent {str(path)!r}: {e}") from None
    z = z[None] if z.ndim == 1 else z
    if z.ndim != 2 or len(z) == 0:
        raise ServingError(f"--latent must hold a [N, latent_dim] array, got shape {z.shape}")
    return z


def main(argv: list[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    num = _check_args(parser, args)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # gRPC imports TensorFlow: keep it quiet
    url = f"grpc://{args.grpc}" if args.grpc else args.url
    try:
        client = ServingClient(url, args.model, args.version, timeout=args.timeout)
    except ValueError as e:
        parser.error(str(e))
    try:
        if args.latent is not None:
            outputs = client.decode_outputs(_load_latents(args.latent))
        else:
            outputs = client.sample_outputs(num, args.seed, args.signature)
        images = images_from_outputs(outputs)
        write_atomic(args.out, encode_png(make_grid(images, args.ncols)))
        if args.individual_dir is not None:
            pngs = outputs.get("png_bytes") or [encode_png(image) for image in images]
            for index, data in enumerate(pngs):
                write_atomic(args.individual_dir / f"{index:04d}.png", data)
    except ServingError as e:
        print(f"error: {e.message}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"error: cannot write output: {e}", file=sys.stderr)
        return 1
    finally:
        client.close()
    height, width = images.shape[1:3]
    logger.info("wrote %s (%d images, %dx%d each)", args.out, len(images), width, height)
    return 0


if __name__ == "__main__":
    sys.exit(main())
