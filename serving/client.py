"""Client for a decoder served by TensorFlow Serving (or ``serving.server``) over REST.

Library::

    client = ServingClient("http://localhost:8501", "evae")
    client.status()                      # {"model_version_status": [...]}
    images = client.sample(16, seed=0)   # [16, H, W, C] float32 in [0, 1]
    images = client.decode(z)            # z: [N, latent_dim] -> [N, H, W, C]
    grid = make_grid(images)             # near-square [rows*H, cols*W, C]

Command line (writes a grid PNG atomically, optionally one PNG per sample)::

    python -m serving.client --url http://localhost:8501 --model evae --num 16 --seed 0 \\
        --out samples.png [--individual-dir DIR] [--version N] [--latent z.npy]

``sample`` asks the model's ``sample`` signature in the columnar format (its inputs are
scalars); ``decode`` sends latents to ``serving_default`` in the row format. Images
come from the ``png_bytes`` output (PNGs, 8 bits per channel). Any failure raises
:class:`ServingError` with the HTTP status and the server's ``error`` message; the
command line prints that message and exits with status 1.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import math
import os
import socket
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import requests

from evae_tf.files import write_bytes_atomic
from serving import rest

logger = logging.getLogger(__name__)


class ServingError(Exception):
    """A request that failed: ``status`` is the HTTP status (None if none came back)."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.message = message
        self.status = status

    def __str__(self) -> str:
        return self.message if self.status is None else f"HTTP {self.status}: {self.message}"


class ServingClient:
    """REST client for one model (optionally one version) of a TF Serving server."""

    def __init__(self, url: str, model: str, version: int | None = None, timeout: float = 30):
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https://. Received: url={url!r}")
        if not model:
            raise ValueError(f"model must be a non-empty name. Received: model={model!r}")
        if version is not None and version < 0:
            raise ValueError(f"version must be >= 0. Received: version={version}")
        if not (isinstance(timeout, int | float) and math.isfinite(timeout) and timeout > 0):
            raise ValueError(f"timeout must be a finite number > 0. Received: timeout={timeout}")
        self.url = url.rstrip("/")
        self.model = model
        self.version = version
        self.timeout = timeout
        self._session = requests.Session()

    @property
    def model_url(self) -> str:
        url = f"{self.url}/v1/models/{quote(self.model, safe='')}"
        return url if self.version is None else f"{url}/versions/{self.version}"

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> ServingClient:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _request(self, method: str, url: str, body: Any = None) -> dict[str, Any]:
        data = None
        if body is not None:
            data = rest_json_dumps(body)
        try:
            response = self._session.request(
                method,
                url,
                data=data,
                headers={"Content-Type": "application/json"} if data is not None else None,
                timeout=self.timeout,
            )
        except requests.exceptions.Timeout:
            raise ServingError(f"timed out after {self.timeout:g}s waiting for {url}") from None
        except requests.exceptions.ConnectionError as e:
            raise ServingError(f"cannot reach {self.url}: {_connection_reason(e)}") from None
        except requests.exceptions.RequestException as e:
            raise ServingError(f"request to {url} failed: {e}") from None
        try:
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

    def status(self) -> dict[str, Any]:
        """``GET /v1/models/{model}[/versions/{v}]``."""
        return self._request("GET", self.model_url)

    def metadata(self) -> dict[str, Any]:
        """``GET .../metadata``: model spec and the SignatureDef map."""
        return self._request("GET", f"{self.model_url}/metadata")

    def predict(
        self,
        inputs: Any = None,
        *,
        instances: Sequence[Any] | np.ndarray | None = None,
        signature_name: str | None = None,
    ) -> Any:
        """``POST ...:predict`` with columnar ``inputs`` or row ``instances`` (one of them).

        Returns ``outputs`` (columnar) or ``predictions`` (row), with ``{"b64": ...}``
        values decoded to bytes.
        """
        if (inputs is None) == (instances is None):
            raise ValueError("Pass exactly one of inputs or instances.")
        body: dict[str, Any] = {}
        if signature_name:
            body["signature_name"] = signature_name
        if inputs is not None:
            body["inputs"] = _to_json(inputs)
            key = "outputs"
        else:
            body["instances"] = _to_json(instances)
            key = "predictions"
        answer = self._request("POST", f"{self.model_url}:predict", body)
        if key not in answer:
            raise ServingError(f"bad response: no {key!r} key in {sorted(answer)}", 200)
        return rest.from_json_value(answer[key])

    def sample_outputs(self, num: int, seed: int) -> dict[str, Any]:
        """The ``sample`` signature's raw outputs (``z``, ``images``, ``png_bytes``)."""
        outputs = self.predict(
            {"num_samples": int(num), "seed": int(seed)}, signature_name="sample"
        )
        if not isinstance(outputs, dict):
            raise ServingError("bad response: the sample signature returned a single output", 200)
        return outputs

    def sample(self, num: int, seed: int) -> np.ndarray:
        """``num`` images drawn with ``seed``: [num, H, W, C] float32 in [0, 1]."""
        return images_from_outputs(self.sample_outputs(num, seed))

    def decode_outputs(self, z: np.ndarray) -> dict[str, Any]:
        """``serving_default`` outputs for latents ``z`` [N, latent_dim], stacked by name."""
        z = np.asarray(z, dtype=np.float32)
        if z.ndim != 2 or len(z) == 0:
            raise ValueError(
                f"z must be a non-empty [N, latent_dim] array. Received: shape={z.shape}"
            )
        rows = self.predict(instances=z)
        return _stack_rows(rows)

    def decode(self, z: np.ndarray) -> np.ndarray:
        """Images for latents ``z`` [N, latent_dim]: [N, H, W, C] float32 in [0, 1]."""
        return images_from_outputs(self.decode_outputs(z))


def rest_json_dumps(body: Any) -> str:
    """JSON with NaN / Infinity tokens allowed (TF Serving accepts them)."""
    return json.dumps(body, allow_nan=True)


def _to_json(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: rest.to_json_value(v) for k, v in value.items()}
    return rest.to_json_value(value)


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


def _stack_rows(rows: Any) -> dict[str, Any]:
    """Row-format predictions (a list of {name: value}) -> {name: list of values}."""
    if not isinstance(rows, list) or not rows:
        raise ServingError("bad response: expected a non-empty list of predictions", 200)
    if not isinstance(rows[0], dict):
        raise ServingError("bad response: the signature returned a single output", 200)
    return {name: [row[name] for row in rows] for name in rows[0]}


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
    """Tile [N, H, W, C] images into one [rows*H, cols*W, C] image (near-square layout).

    ``ncols`` defaults to ``ceil(sqrt(N))``; empty cells and ``padding`` pixels between
    cells are 0.
    """
    images = np.asarray(images)
    if images.ndim != 4 or len(images) == 0:
        raise ValueError(
            f"images must be a non-empty [N, H, W, C] array. Received: shape={images.shape}"
        )
    n, height, width, channels = images.shape
    if ncols is None:
        ncols = math.ceil(math.sqrt(n))
    if ncols < 1:
        raise ValueError(f"ncols must be >= 1. Received: ncols={ncols}")
    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    grid = np.zeros(
        (nrows * height + (nrows - 1) * padding, ncols * width + (ncols - 1) * padding, channels),
        dtype=images.dtype,
    )
    for index, image in enumerate(images):
        row, col = divmod(index, ncols)
        top, left = row * (height + padding), col * (width + padding)
        grid[top : top + height, left : left + width] = image
    return grid


def encode_png(image: np.ndarray) -> bytes:
    """[H, W, C] image (float in [0, 1] or uint8) -> PNG bytes."""
    from PIL import Image

    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


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
    parser.add_argument("--url", default="http://localhost:8501", help="server base URL")
    parser.add_argument("--model", default="evae", help="model name")
    parser.add_argument("--version", type=int, default=None, help="pin a model version")
    parser.add_argument("--num", type=int, default=None, help="samples to draw (default 16)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed")
    parser.add_argument(
        "--latent",
        type=Path,
        default=None,
        help="decode these latents (.npy, [N, latent_dim]) instead of sampling",
    )
    parser.add_argument("--out", type=Path, default=Path("samples.png"), help="grid PNG path")
    parser.add_argument("--ncols", type=int, default=None, help="grid columns (default: square)")
    parser.add_argument(
        "--individual-dir", type=Path, default=None, help="also write one PNG per image here"
    )
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.latent is not None and args.num is not None:
        parser.error("--num and --latent are mutually exclusive")
    num = 16 if args.num is None else args.num
    if args.latent is None and num < 1:
        parser.error(f"--num must be >= 1, got {num}")
    if args.ncols is not None and args.ncols < 1:
        parser.error(f"--ncols must be >= 1, got {args.ncols}")
    if not (math.isfinite(args.timeout) and args.timeout > 0):
        parser.error(f"--timeout must be a finite number > 0, got {args.timeout:g}")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        client = ServingClient(args.url, args.model, args.version, timeout=args.timeout)
    except ValueError as e:
        parser.error(str(e))
    try:
        if args.latent is not None:
            try:
                z = np.load(args.latent)
            except (OSError, ValueError) as e:
                raise ServingError(f"cannot read --latent {str(args.latent)!r}: {e}") from None
            z = z[None] if z.ndim == 1 else z
            if z.ndim != 2 or len(z) == 0:
                raise ServingError(
                    f"--latent must hold a [N, latent_dim] array, got shape {z.shape}"
                )
            outputs = client.decode_outputs(z)
        else:
            outputs = client.sample_outputs(num, args.seed)
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
    logger.info(
        "wrote %s (%d images, %dx%d each)", args.out, len(images), images.shape[2], images.shape[1]
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
