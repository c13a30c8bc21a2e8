"""Image-quality metrics: sharpness and FID with a named feature network.

Definitions: docs/math.md, 'Metrics: sharpness and FID'.

Sharpness (:func:`sharpness`) is the variance of the Laplace-filter response.

FID compares Gaussian fits of features of two image sets (:func:`frechet_distance`),
accumulated batch by batch (:class:`GaussianStats`). The feature network is named in
every result, because FIDs from different networks are different numbers:

| name              | network                                                       |
|-------------------|---------------------------------------------------------------|
| ``inception2015`` | the 2015 Inception graph of TTUR / pytorch-fid / clean-fid: the published FIDs |
| ``keras_inception`` | ``keras.applications.InceptionV3`` ImageNet weights: a labelled alternative |
| ``domain``        | a small CNN trained on the dataset's labels: a domain FID      |

No weights are in the repository. :func:`fid_network` finds them or raises
:class:`FIDUnavailableError` saying how to provide them.

    network = fid_network("inception2015", weights="classify_image_graph_def.pb")
    fid(holdout_batches, reconstruction_batches, network)
    # {"fid": 11.9, "network": "inception2015", "num_images": 10000, ...}
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tarfile
import tempfile
import urllib.parse
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import keras
import numpy as np
import tensorflow as tf
from scipy import linalg

from evae_tf import data, labels, network
from evae_tf.config import FID_NETWORKS
from evae_tf.files import replace_atomic, write_json_atomic

logger = logging.getLogger(__name__)

LUMA_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R 601
LAPLACE_FILTER = ((0.0, 1.0, 0.0), (1.0, -4.0, 1.0), (0.0, 1.0, 0.0))


def sharpness_per_image(images) -> tf.Tensor:
    """Variance of the Laplace-filter response of each image (WAE's sharpness).

    Args:
      images: ``[batch, H, W, C]`` in [0, 1], C = 1 (grayscale) or 3 (RGB, converted
        to grayscale with the ITU-R 601 luma weights).

    Returns:
      ``[batch]`` float32: the variance over pixels of the 3×3 Laplace response,
      valid padding.
    """
    images = tf.convert_to_tensor(images)
    images = tf.cast(images, tf.float32)
    if images.shape.rank != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(
            f"`images` must be [batch, H, W, 1 or 3]. Received: shape={images.shape}"
        )
    if images.shape[-1] == 3:
        images = tf.reduce_sum(images * tf.constant(LUMA_WEIGHTS), axis=-1, keepdims=True)
    kernel = tf.reshape(tf.constant(LAPLACE_FILTER), [3, 3, 1, 1])
    response = tf.nn.conv2d(images, kernel, strides=1, padding="VALID")
    return tf.math.reduce_variance(response, axis=[1, 2, 3])


def sharpness(images) -> tf.Tensor:
    """Mean over images of :func:`sharpness_per_image` (larger is sharper)."""
    return tf.reduce_mean(sharpness_per_image(images))


# =========================================================================== Fréchet distance

# Images per side; fewer bias the FID upwards (docs/math.md, 'Metrics: sharpness and FID').
RECOMMENDED_FID_IMAGES = 10_000
IMAGINARY_TOLERANCE = 1e-3


def _sqrtm(matrix: np.ndarray) -> np.ndarray:
    """``scipy.linalg.sqrtm`` without its singular-matrix warning (handled by the caller)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        return linalg.sqrtm(matrix)


def _gaussians(mu1, sigma1, mu2, sigma2) -> tuple[np.ndarray, ...]:
    """The two Gaussians' parameters as float64 arrays, with their shapes and values checked."""
    mu1 = np.atleast_1d(np.asarray(mu1, np.float64))
    mu2 = np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1 = np.atleast_2d(np.asarray(sigma1, np.float64))
    sigma2 = np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.ndim != 1 or mu1.shape != mu2.shape:
        raise ValueError(
            f"The means must be vectors of the same length. Received: mu1.shape={mu1.shape}, "
            f"mu2.shape={mu2.shape}"
        )
    dim = mu1.shape[0]
    for name, sigma in (("sigma1", sigma1), ("sigma2", sigma2)):
        if sigma.shape != (dim, dim):
            raise ValueError(
                f"`{name}` must be [{dim}, {dim}] to match the means. Received: "
                f"{name}.shape={sigma.shape}"
            )
    for name, value in (("mu1", mu1), ("mu2", mu2), ("sigma1", sigma1), ("sigma2", sigma2)):
        if not np.isfinite(value).all():
            raise ValueError(f"`{name}` has non-finite entries.")
    return mu1, sigma1, mu2, sigma2


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """Fréchet distance between ``N(mu1, sigma1)`` and ``N(mu2, sigma2)``.

        d^2 = |mu1 - mu2|^2 + Tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2))

    Computed in float64 with ``scipy.linalg.sqrtm``. When the product is (nearly)
    singular and its root comes out non-finite, ``eps * I`` is added to both
    covariances and the root is taken again (as TTUR and pytorch-fid do). Imaginary
    parts of the root from round-off are dropped; larger ones (``> 1e-3``) raise.

    Args:
      mu1, mu2: means, shape ``[D]``.
      sigma1, sigma2: covariances, shape ``[D, D]``.
      eps: the diagonal offset of the retry.

    Raises:
      ValueError: mismatched or malformed shapes, non-finite inputs, or a root with an
        imaginary part above 1e-3 (the covariances are not positive semi-definite).
    """
    mu1, sigma1, mu2, sigma2 = _gaussians(mu1, sigma1, mu2, sigma2)
    dim = mu1.shape[0]
    diff = mu1 - mu2
    covmean = _sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        logger.warning("Fréchet distance: the covariance product is singular; adding %g to the "
                       "diagonals and retrying.", eps)
        offset = np.eye(dim) * eps
        covmean = _sqrtm((sigma1 + offset) @ (sigma2 + offset))
        if not np.isfinite(covmean).all():
            raise ValueError(
                f"The square root of the covariance product is not finite even with eps={eps} "
                "added to the diagonals."
            )
    if np.iscomplexobj(covmean):
        largest = float(np.abs(covmean.imag).max())
        if largest > IMAGINARY_TOLERANCE:
            raise ValueError(
                f"The square root of the covariance product has an imaginary component of "
                f"{largest:.3g} (> {IMAGINARY_TOLERANCE}): the covariances are not positive "
                "semi-definite."
            )
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


class GaussianStats:
    """Streaming mean and covariance of feature vectors, in float64.

    Keeps the count, the sum and the sum of outer products of the features (each
    shifted by the first batch's mean, which keeps the covariance accurate when the
    mean is large next to the spread), never the features themselves.

    >>> stats = GaussianStats()
    >>> for batch in batches:            # each [B, D]
    ...     stats.update(network(batch))
    >>> stats.mean.shape, stats.covariance.shape   # (D,), (D, D)
    """

    def __init__(self):
        self.count = 0
        self._shift: np.ndarray | None = None
        self._sum: np.ndarray | None = None
        self._outer: np.ndarray | None = None

    @property
    def dim(self) -> int | None:
        return None if self._shift is None else int(self._shift.shape[0])

    def update(self, features) -> GaussianStats:
        """Adds a batch ``[B, D]`` of features; returns ``self``."""
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2:
            raise ValueError(f"`features` must be [batch, dim]. Received: shape={x.shape}")
        if self.dim is not None and x.shape[1] != self.dim:
            raise ValueError(
                f"Features of dimension {x.shape[1]} do not match the earlier {self.dim}."
            )
        if not np.isfinite(x).all():
            raise ValueError("`features` has non-finite entries.")
        if len(x) == 0:
            return self
        if self._shift is None:
            self._shift = x.mean(axis=0)
            self._sum = np.zeros_like(self._shift)
            self._outer = np.zeros((x.shape[1], x.shape[1]))
        centred = x - self._shift
        self._sum += centred.sum(axis=0)
        self._outer += centred.T @ centred
        self.count += len(x)
        return self

    @property
    def mean(self) -> np.ndarray:
        if self.count == 0:
            raise ValueError("No features were added.")
        return self._shift + self._sum / self.count

    @property
    def covariance(self) -> np.ndarray:
        """The unbiased sample covariance (``numpy.cov(features, rowvar=False)``)."""
        if self.count < 2:
            raise ValueError(f"A covariance needs at least 2 feature vectors; have {self.count}.")
        centred_mean = self._sum / self.count
        return (self._outer - self.count * np.outer(centred_mean, centred_mean)) / (self.count - 1)


# =========================================================================== feature networks

ENV_FID_WEIGHTS = "EVAE_FID_WEIGHTS"
ENV_CACHE_DIR = "EVAE_CACHE_DIR"

INCEPTION2015_URL = "https://download.tensorflow.org/models/image/imagenet/inception-2015-12-05.tgz"
INCEPTION2015_GRAPH = "classify_image_graph_def.pb"
INCEPTION2015_CACHE = "inception-2015-12-05"
KERAS_INCEPTION_WEIGHTS = "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5"
INCEPTION_SIZE = 299
DOWNLOAD_TIMEOUT_S = 60.0


class FIDUnavailableError(RuntimeError):
    """The requested FID network cannot be used here; the message says why and what to do."""


@runtime_checkable
class FIDNetwork(Protocol):
    """A named feature extractor for FID.

    ``network(images)`` maps a batch ``[B, H, W, C]`` of images in [0, 1] to features
    ``[B, D]`` (a NumPy array). ``name`` goes into every FID it produces;
    ``description`` says in a sentence what the network is.
    """

    name: str
    description: str

    def __call__(self, images) -> np.ndarray: ...


def default_cache_dir() -> Path:
    """``$EVAE_CACHE_DIR``, else ``~/.cache/evae_tf`` (read at call time)."""
    return Path(os.environ.get(ENV_CACHE_DIR) or "~/.cache/evae_tf").expanduser()


def to_rgb(images) -> tf.Tensor:
    """``[B, H, W, 1]`` grayscale replicated to three channels; RGB passes through."""
    images = tf.cast(tf.convert_to_tensor(images), tf.float32)
    if images.shape.rank != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f"`images` must be [batch, H, W, 1 or 3]. Received: shape={images.shape}")
    return tf.repeat(images, 3, axis=-1) if images.shape[-1] == 1 else images


def _chunks(images: tf.Tensor, size: int):
    for start in range(0, int(images.shape[0]), size):
        yield images[start:start + size]


class Inception2015Graph:
    """pool_3 features (2048-d) of the 2015 Inception graph, the network of TTUR's FID.

    Reads the frozen GraphDef ``classify_image_graph_def.pb`` of
    ``inception-2015-12-05.tgz``. Like TTUR's ``fid.py``, images are fed to the tensor
    ``ExpandDims:0`` as float pixel values in [0, 255] (ours are scaled from [0, 1] and
    rounded to integers, as saving them to PNG would); the graph itself then resizes to
    299×299 bilinearly (its ``ResizeBilinear`` op) and scales to [-1, 1] (``Sub``,
    ``Mul``). Grayscale images are replicated to RGB. A graph without ``ExpandDims`` is
    fed at ``Mul:0`` instead, after the same resize and scaling done here (TF-GAN's
    ``preprocess_image``).

    The graph runs in a ``tf.compat.v1.Session`` on its own ``tf.Graph`` rather than in
    a ``tf.compat.v1.wrap_function``: the 2015 graph uses the op
    ``BatchNormWithGlobalNormalization``, removed in GraphDef version 9, which a graph
    imported into a function refuses to run (the function is built at the current
    GraphDef version), while a plain graph keeps the old version of the import.
    """

    name = "inception2015"
    description = ("Inception-v3 pool_3 features of the 2015 graph (inception-2015-12-05, "
                   "the network of TTUR, pytorch-fid and clean-fid)")

    def __init__(self, path: str | os.PathLike[str], batch_size: int = 50):
        self.path = Path(path)
        self.batch_size = batch_size
        graph_def = tf.compat.v1.GraphDef()
        try:
            graph_def.ParseFromString(_read_graph_bytes(self.path))
        except (OSError, tarfile.TarError) as e:
            raise FIDUnavailableError(f"Cannot read the Inception graph {self.path}: {e}") from None
        except Exception as e:  # protobuf's DecodeError
            raise FIDUnavailableError(f"{self.path} is not a frozen TensorFlow graph ({e}).") from None
        nodes = {node.name for node in graph_def.node}
        if "pool_3" not in nodes:
            raise FIDUnavailableError(
                f"{self.path} has no node 'pool_3': it is not the 2015 Inception graph "
                f"({INCEPTION2015_GRAPH} from inception-2015-12-05.tgz)."
            )
        if "ExpandDims" in nodes:
            self.input_name, self.own_preprocessing = "ExpandDims:0", False
        elif "Mul" in nodes:
            self.input_name, self.own_preprocessing = "Mul:0", True
        else:
            raise FIDUnavailableError(f"{self.path} has neither an 'ExpandDims' nor a 'Mul' input node.")
        graph = tf.Graph()
        with graph.as_default():
            self._images = tf.compat.v1.placeholder(tf.float32, [None, None, None, 3], name="evae_images")
            (self._pool,) = tf.graph_util.import_graph_def(
                graph_def, input_map={self.input_name: self._images},
                return_elements=["pool_3:0"], name="inception",
            )
        self._session = tf.compat.v1.Session(graph=graph)

    def __call__(self, images) -> np.ndarray:
        pixels = tf.round(tf.clip_by_value(to_rgb(images), 0.0, 1.0) * 255.0)
        if self.own_preprocessing:
            pixels = tf.compat.v1.image.resize_bilinear(pixels, [INCEPTION_SIZE, INCEPTION_SIZE])
            pixels = (pixels - 128.0) / 128.0
        out = [self._session.run(self._pool, {self._images: chunk.numpy()})
               for chunk in _chunks(pixels, self.batch_size)]
        if not out:
            return np.zeros((0, 2048), np.float32)
        features = np.concatenate(out)
        return features.reshape(len(features), -1)


class Inception2015SavedModel:
    """pool_3 features from a SavedModel of the 2015 Inception network.

    For TF-GAN's TF-Hub module ``tfgan/eval/inception/1`` (downloaded and unpacked) or
    any SavedModel with the same contract: called with ``[B, 299, 299, 3]`` float32
    images in [-1, 1], it returns ``{"pool_3": [B, 2048], ...}`` or the features. The
    images are resized bilinearly and scaled as TF-GAN's ``preprocess_image`` does
    (``(x - 128) / 128`` of [0, 255] values).
    """

    name = "inception2015"
    description = ("Inception-v3 pool_3 features of the 2015 network from a SavedModel "
                   "(TF-GAN's tfgan/eval/inception/1)")

    def __init__(self, path: str | os.PathLike[str], batch_size: int = 50):
        self.path = Path(path)
        self.batch_size = batch_size
        try:
            loaded = tf.saved_model.load(str(self.path))
        except Exception as e:  # TF raises many types for an unreadable SavedModel
            raise FIDUnavailableError(f"Cannot load the SavedModel {self.path}: {e}") from None
        self._loaded = loaded
        if callable(loaded):
            self._fn = loaded
        else:
            signatures = getattr(loaded, "signatures", {})
            key = next((k for k in ("serving_default", "default") if k in signatures), None)
            if key is None:
                raise FIDUnavailableError(f"The SavedModel {self.path} is not callable and has no "
                                          "'serving_default' or 'default' signature.")
            signature = signatures[key]
            inputs = signature.structured_input_signature[1]
            if len(inputs) != 1:
                raise FIDUnavailableError(f"The SavedModel {self.path}'s {key!r} signature takes "
                                          f"{sorted(inputs)}; expected one image input.")
            arg = next(iter(inputs))
            self._fn = lambda x: signature(**{arg: x})

    def __call__(self, images) -> np.ndarray:
        pixels = tf.round(tf.clip_by_value(to_rgb(images), 0.0, 1.0) * 255.0)
        pixels = tf.compat.v1.image.resize_bilinear(pixels, [INCEPTION_SIZE, INCEPTION_SIZE])
        pixels = (pixels - 128.0) / 128.0
        out = []
        for chunk in _chunks(pixels, self.batch_size):
            result = self._fn(chunk)
            if isinstance(result, dict):
                result = result["pool_3"] if "pool_3" in result else next(iter(result.values()))
            out.append(np.asarray(result).reshape(int(chunk.shape[0]), -1))
        return np.concatenate(out) if out else np.zeros((0, 2048), np.float32)


class KerasFeatures:
    """Features of a Keras model (images [0, 1] → ``model(preprocess(images))``)."""

    def __init__(self, model: keras.Model, name: str, description: str, preprocess=None,
                 batch_size: int = 100):
        self.model = model
        self.name = name
        self.description = description
        self.batch_size = batch_size
        self._preprocess = preprocess
        self._features = tf.function(self._apply, reduce_retracing=True, autograph=False)

    def _apply(self, images):
        if self._preprocess is not None:
            images = self._preprocess(images)
        return self.model(images, training=False)

    def __call__(self, images) -> np.ndarray:
        images = tf.cast(tf.convert_to_tensor(images), tf.float32)
        out = [self._features(chunk).numpy() for chunk in _chunks(images, self.batch_size)]
        return np.concatenate(out).reshape(int(images.shape[0]), -1) if out else np.zeros((0, 0))


def _read_graph_bytes(path: Path) -> bytes:
    """The GraphDef bytes of a .pb file, or of the graph member of inception-2015-12-05.tgz."""
    if path.name.endswith((".tgz", ".tar.gz", ".tar")):
        with tarfile.open(path) as archive:
            member = next((m for m in archive.getmembers()
                           if Path(m.name).name == INCEPTION2015_GRAPH), None)
            if member is None:
                raise tarfile.TarError(f"no {INCEPTION2015_GRAPH} in the archive")
            stream = archive.extractfile(member)
            if stream is None:
                raise tarfile.TarError(f"{member.name} in the archive is not a file")
            return stream.read()
    return path.read_bytes()


def _fetch_inception2015(target: Path) -> Path:
    """Downloads inception-2015-12-05.tgz and caches its graph at ``target``, atomically.

    Written for machines with internet access; never run where this project was
    developed (it had none).
    """
    import urllib.request

    target.parent.mkdir(parents=True, exist_ok=True)
    logger.info("Downloading the 2015 Inception graph from %s into %s", INCEPTION2015_URL, target)
    fd, archive = tempfile.mkstemp(prefix=".tmp-", suffix=".tgz", dir=target.parent)
    tmp = target.with_name(f".tmp-{os.getpid()}-{target.name}")
    try:
        with os.fdopen(fd, "wb") as f, urllib.request.urlopen(
            INCEPTION2015_URL, timeout=DOWNLOAD_TIMEOUT_S
        ) as response:
            shutil.copyfileobj(response, f)
        tmp.write_bytes(_read_graph_bytes(Path(archive)))
        Inception2015Graph(tmp)  # check it before it replaces anything
        os.replace(tmp, target)
    except (OSError, tarfile.TarError) as e:
        raise FIDUnavailableError(f"Downloading {INCEPTION2015_URL} failed: {e}") from None
    finally:
        for leftover in (Path(archive), tmp):
            if leftover.exists():
                leftover.unlink()
    return target


def inception2015(weights: str | os.PathLike[str] | None = None, *,
                  cache_dir: str | os.PathLike[str] | None = None,
                  allow_download: bool = True) -> FIDNetwork:
    """The 2015 Inception network of the standard FID (docs/math.md, 'Metrics: sharpness
    and FID'), from the first of:

    1. ``weights`` (``--fid-weights``), else ``$EVAE_FID_WEIGHTS``: the frozen graph
       ``classify_image_graph_def.pb``, the archive ``inception-2015-12-05.tgz``, a
       directory holding either, or a SavedModel directory (TF-Hub's
       ``tfgan/eval/inception/1``);
    2. the cached graph ``<cache_dir>/inception-2015-12-05/classify_image_graph_def.pb``;
    3. a download into that cache, when ``allow_download`` and download.tensorflow.org
       answers within a few seconds.

    Raises:
      FIDUnavailableError: none of these applies, or the file is not the 2015 graph.
    """
    given = weights if weights is not None else os.environ.get(ENV_FID_WEIGHTS) or None
    if given is not None:
        path = Path(given).expanduser()
        if not path.exists():
            raise FIDUnavailableError(f"Inception weights {path} (--fid-weights / {ENV_FID_WEIGHTS}) "
                                      "do not exist.")
        if path.is_dir():
            if (path / "saved_model.pb").exists():
                return Inception2015SavedModel(path)
            for candidate in (path / INCEPTION2015_GRAPH, path / f"{INCEPTION2015_CACHE}.tgz"):
                if candidate.exists():
                    return Inception2015Graph(candidate)
            raise FIDUnavailableError(f"{path} holds neither {INCEPTION2015_GRAPH}, "
                                      f"{INCEPTION2015_CACHE}.tgz nor a SavedModel.")
        return Inception2015Graph(path)
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    cached = cache / INCEPTION2015_CACHE / INCEPTION2015_GRAPH
    if cached.exists():
        return Inception2015Graph(cached)
    host = urllib.parse.urlsplit(INCEPTION2015_URL).hostname or ""
    if allow_download and network.reachable((host, 443)):
        return Inception2015Graph(_fetch_inception2015(cached))
    raise FIDUnavailableError(
        f"no weights for the 2015 Inception network: pass --fid-weights PATH ({INCEPTION2015_GRAPH} "
        f"from {INCEPTION2015_CACHE}.tgz, the .tgz, or TF-Hub's tfgan/eval/inception/1 SavedModel) "
        f"or set {ENV_FID_WEIGHTS}; with internet access it is fetched once into {cached} "
        f"({host} is unreachable here)"
    )


def _keras_home() -> Path:
    return Path(os.environ.get("KERAS_HOME") or "~/.keras").expanduser()


def _keras_inception_preprocess(images):
    x = tf.image.resize(to_rgb(images), (INCEPTION_SIZE, INCEPTION_SIZE), method="bilinear")
    return x * 2.0 - 1.0  # keras.applications.inception_v3.preprocess_input of [0, 255] values


def keras_inception(weights: str | os.PathLike[str] | None = None, *,
                    allow_download: bool = True) -> FIDNetwork:
    """``keras.applications.InceptionV3`` (ImageNet, no top, average pooling: 2048-d).

    A labelled alternative: a different network from the 2015 graph, so its FIDs differ
    from the published ones. Images are replicated to RGB, resized to 299×299
    bilinearly and scaled to [-1, 1] (Keras' ``inception_v3.preprocess_input``).
    Weights from ``weights``, else Keras' cache (``~/.keras/models`` or
    ``$KERAS_HOME/models``), else a Keras download when storage.googleapis.com answers.

    Raises:
      FIDUnavailableError: no weights, or a weights file Keras cannot load.
    """
    if weights is not None:
        source = Path(weights).expanduser()
        if not source.is_file():
            raise FIDUnavailableError(f"Keras InceptionV3 weights {source} (--fid-weights) do not exist.")
        source = str(source)
    else:
        cached = _keras_home() / "models" / KERAS_INCEPTION_WEIGHTS
        if cached.is_file():
            source = str(cached)
        elif allow_download and network.reachable(("storage.googleapis.com", 443)):
            source = "imagenet"
        else:
            raise FIDUnavailableError(
                f"no weights for keras.applications.InceptionV3: pass --fid-weights PATH "
                f"({KERAS_INCEPTION_WEIGHTS}) or put it in {cached.parent}; "
                "storage.googleapis.com is unreachable here"
            )
    try:
        model = keras.applications.InceptionV3(
            include_top=False, pooling="avg", weights=source,
            input_shape=(INCEPTION_SIZE, INCEPTION_SIZE, 3),
        )
    except (OSError, ValueError) as e:
        raise FIDUnavailableError(f"Cannot load Keras InceptionV3 weights {source}: {e}") from None
    return KerasFeatures(
        model, "keras_inception",
        "keras.applications.InceptionV3 ImageNet features (2048-d average pool); a different "
        "network from the 2015 graph, so not comparable to published FIDs",
        preprocess=_keras_inception_preprocess, batch_size=25,
    )


# --------------------------------------------------------------------------- domain network

DOMAIN_EPOCHS = 5
DOMAIN_FEATURES = "features"  # the penultimate layer, whose output the domain FID uses


def build_domain_classifier(image_shape, num_classes: int, seed: int = 0) -> keras.Model:
    """A small CNN classifier; its penultimate ``features`` layer (128-d) feeds the domain FID."""
    init = keras.initializers.GlorotUniform
    inputs = keras.Input(tuple(image_shape), name="images")
    x = inputs
    for i, filters in enumerate((32, 64, 128)):
        x = keras.layers.Conv2D(filters, 3, strides=2, padding="same", activation="relu",
                                kernel_initializer=init(seed + i), name=f"conv{i}")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = keras.layers.Dense(128, activation="relu", kernel_initializer=init(seed + 3),
                           name=DOMAIN_FEATURES)(x)
    outputs = keras.layers.Dense(num_classes, kernel_initializer=init(seed + 4), name="logits")(x)
    return keras.Model(inputs, outputs, name="domain_classifier")


def domain_classifier(dataset: str, *, data_dir: str | os.PathLike[str] | None = None,
                      cache_dir: str | os.PathLike[str] | None = None,
                      epochs: int = DOMAIN_EPOCHS, batch_size: int = 128, seed: int = 0,
                      ) -> tuple[keras.Model, dict[str, Any]]:
    """The domain classifier of ``dataset`` and facts about it, trained once and cached.

    Cached at ``<cache_dir>/domain_fid/<dataset>.keras`` (beside it ``<dataset>.json``:
    epochs, training images, hold-out accuracy), both written atomically and reused by
    later calls, unless the training split found now has a different size from the one
    the cached classifier learned from (a classifier trained on a small test copy of the
    data is not reused for the real data). Trained with Adam on the training split's
    labels (:func:`evae_tf.labels.load_labelled`); the accuracy is on the hold-out split.
    """
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    directory = cache / "domain_fid"
    model_path, info_path = directory / f"{dataset}.keras", directory / f"{dataset}.json"
    classes = data.num_classes(dataset)
    num_train = int(data.num_examples(dataset, "train", data_dir))
    if model_path.exists() and info_path.exists():
        info = json.loads(info_path.read_text())
        if info.get("num_train") == num_train:
            return keras.models.load_model(model_path), info
        logger.warning("The cached %s domain classifier learned from %s training images, the data "
                       "found now has %d: training it again.", dataset, info.get("num_train"), num_train)
    logger.info("Training the %s domain classifier for FID (%d epochs); cached at %s",
                dataset, epochs, model_path)
    train = labels.load_labelled(dataset, "train", batch_size=batch_size, shuffle=True, seed=seed,
                                 data_dir=data_dir)
    holdout = labels.load_labelled(dataset, "holdout", batch_size=batch_size, data_dir=data_dir)
    model = build_domain_classifier(data.image_shape(dataset), classes, seed=seed)
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    history = model.fit(train, epochs=epochs, verbose=0, shuffle=False)
    _, accuracy = model.evaluate(holdout, verbose=0)
    info = {
        "dataset": dataset, "epochs": epochs, "batch_size": batch_size, "seed": seed,
        "num_train": num_train,
        "train_accuracy": float(history.history["accuracy"][-1]),
        "holdout_accuracy": float(accuracy), "feature_layer": DOMAIN_FEATURES,
        "feature_dim": int(model.get_layer(DOMAIN_FEATURES).units),
    }
    replace_atomic(model_path, model.save)
    write_json_atomic(str(info_path), info)
    return model, info


def domain_network(dataset: str, **kwargs) -> FIDNetwork:
    """The domain FID network of ``dataset``: the penultimate layer of
    :func:`domain_classifier` (arguments as there). Its FIDs measure distance in a
    space learned from the dataset's own labels, not comparable with Inception FIDs.

    Raises:
      FIDUnavailableError: the dataset has no class labels or its data cannot be found.
    """
    try:
        classifier, info = domain_classifier(dataset, **kwargs)
    except (ValueError, data.DataNotFoundError) as e:
        raise FIDUnavailableError(f"no domain classifier for {dataset}: {e}") from None
    features = keras.Model(classifier.inputs, classifier.get_layer(DOMAIN_FEATURES).output)
    accuracy = info.get("holdout_accuracy")
    accuracy = f", hold-out accuracy {accuracy:.3f}" if accuracy is not None else ""
    network = KerasFeatures(
        features, "domain",
        f"domain FID: 128-d penultimate features of a small CNN classifier trained on "
        f"{dataset}'s labels ({info.get('epochs', '?')} epochs{accuracy}); not comparable "
        "with Inception FIDs",
    )
    network.info = info
    return network


def fid_network(name: str, *, weights: str | os.PathLike[str] | None = None,
                dataset: str | None = None, data_dir: str | os.PathLike[str] | None = None,
                cache_dir: str | os.PathLike[str] | None = None,
                allow_download: bool = True) -> FIDNetwork:
    """The FID network called ``name`` (one of :data:`FID_NETWORKS`).

    Raises:
      ValueError: unknown name, or ``"domain"`` without a ``dataset``.
      FIDUnavailableError: the network's weights are not available (the message says
        how to provide them).
    """
    if name == "inception2015":
        return inception2015(weights, cache_dir=cache_dir, allow_download=allow_download)
    if name == "keras_inception":
        return keras_inception(weights, allow_download=allow_download)
    if name == "domain":
        if dataset is None:
            raise ValueError("The domain FID network needs the `dataset` it was trained on.")
        return domain_network(dataset, data_dir=data_dir, cache_dir=cache_dir)
    raise ValueError(f"Unknown FID network {name!r}; expected one of: {', '.join(FID_NETWORKS)}.")


# --------------------------------------------------------------------------- FID


def feature_stats(batches: Iterable, network: FIDNetwork) -> GaussianStats:
    """Streams image batches ``[B, H, W, C]`` in [0, 1] through ``network``."""
    stats = GaussianStats()
    for batch in batches:
        stats.update(network(batch))
    return stats


def fid_from_stats(real: GaussianStats, fake: GaussianStats, network: FIDNetwork | str,
                   *, min_images: int = RECOMMENDED_FID_IMAGES) -> dict[str, Any]:
    """``{"fid", "network", "num_images", "num_real", "num_fake"[, "warning"]}``.

    ``num_images`` is the smaller side. Fewer than ``min_images`` per side logs a
    warning and records it under ``"warning"``: small samples bias FID upwards.
    """
    name = network if isinstance(network, str) else network.name
    result: dict[str, Any] = {
        "fid": frechet_distance(real.mean, real.covariance, fake.mean, fake.covariance),
        "network": name,
        "num_images": min(real.count, fake.count),
        "num_real": real.count,
        "num_fake": fake.count,
    }
    if result["num_images"] < min_images:
        result["warning"] = (
            f"FID from {result['num_images']} images per side (fewer than {min_images:,}): "
            "biased upwards, not comparable with published FIDs"
        )
        logger.warning("%s (network %s).", result["warning"], name)
    return result


def fid(real_batches: Iterable, fake_batches: Iterable, network: FIDNetwork,
        *, min_images: int = RECOMMENDED_FID_IMAGES) -> dict[str, Any]:
    """FID between two streams of image batches ``[B, H, W, C]`` in [0, 1].

    >>> fid(holdout_batches, reconstruction_batches, inception2015("classify_image_graph_def.pb"))
    {'fid': 11.9, 'network': 'inception2015', 'num_images': 10000, ...}
    """
    return fid_from_stats(feature_stats(real_batches, network),
                          feature_stats(fake_batches, network), network, min_images=min_images)
