"""The FID feature networks, named in every FID they produce, and their weights.

FIDs from different networks are different numbers (docs/math.md, 'Metrics: sharpness
and FID'):

| name                | network                                                       |
|---------------------|---------------------------------------------------------------|
| ``inception2015``   | the 2015 Inception graph of TTUR / pytorch-fid / clean-fid: the published FIDs |
| ``keras_inception`` | ``keras.applications.InceptionV3`` ImageNet weights: a labelled alternative |
| ``domain``          | a small CNN trained on the dataset's labels (:mod:`.classifier`): a domain FID |

No weights are in the repository. :func:`fid_network` finds them (argument, environment,
cache ``$EVAE_CACHE_DIR`` or ``~/.cache/evae_tf``, download) or raises
:class:`~evae_tf.errors.FIDUnavailableError` saying how to provide them.
    fid_network("inception2015", weights="classify_image_graph_def.pb")(images)  # [B, 2048]
"""

from __future__ import annotations

import logging
import os
import shutil
import tarfile
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from evae_tf.config import FID_NETWORKS
from evae_tf.data import network
from evae_tf.errors import DataNotFoundError, FIDUnavailableError
from evae_tf.evaluation import classifier
from evae_tf.evaluation.frechet import FIDNetwork
from evae_tf.files import replace_atomic

logger = logging.getLogger(__name__)

ENV_FID_WEIGHTS = "EVAE_FID_WEIGHTS"
ENV_CACHE_DIR = "EVAE_CACHE_DIR"

INCEPTION2015_URL = "https://download.tensorflow.org/models/image/imagenet/inception-2015-12-05.tgz"
INCEPTION2015_GRAPH = "classify_image_graph_def.pb"
INCEPTION2015_CACHE = "inception-2015-12-05"
KERAS_INCEPTION_WEIGHTS = "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5"
INCEPTION_SIZE = 299
DOWNLOAD_TIMEOUT_S = 60.0


def default_cache_dir() -> Path:
    """``$EVAE_CACHE_DIR``, else ``~/.cache/evae_tf`` (read at call time)."""
    return Path(os.environ.get(ENV_CACHE_DIR) or "~/.cache/evae_tf").expanduser()


def to_rgb(images) -> tf.Tensor:
    """``[B, H, W, 1]`` grayscale replicated to three channels; RGB passes through."""
    images = tf.cast(tf.convert_to_tensor(images), tf.float32)
    if images.shape.rank != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f"`images` must be [batch, H, W, 1 or 3]. Received: shape={images.shape}")
    return tf.image.grayscale_to_rgb(images) if images.shape[-1] == 1 else images


def _pixels(images) -> tf.Tensor:
    """RGB pixel values in [0, 255], rounded to integers as saving a PNG would."""
    return tf.round(tf.clip_by_value(to_rgb(images), 0.0, 1.0) * 255.0)


def _tfgan_preprocess(pixels: tf.Tensor) -> tf.Tensor:
    """TF-GAN's ``preprocess_image``: bilinear resize to 299×299, then [-1, 1]."""
    pixels = tf.compat.v1.image.resize_bilinear(pixels, [INCEPTION_SIZE, INCEPTION_SIZE])
    return (pixels - 128.0) / 128.0


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
        pixels = _pixels(images)
        if self.own_preprocessing:
            pixels = _tfgan_preprocess(pixels)
        out = [self._session.run(self._pool, {self._images: chunk.numpy()})
               for chunk in _chunks(pixels, self.batch_size)]
        return np.concatenate(out).reshape(len(pixels), -1) if out else np.zeros((0, 2048), np.float32)


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
        pixels = _tfgan_preprocess(_pixels(images))
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


def _fetch_inception2015(target: Path, url: str = INCEPTION2015_URL) -> Path:
    """Downloads ``url`` (inception-2015-12-05.tgz) and caches its graph at ``target``,
    checked before it is renamed into place; the archive is not kept."""
    target.parent.mkdir(parents=True, exist_ok=True)
    logger.info("Downloading the 2015 Inception graph from %s into %s", url, target)
    try:
        with tempfile.TemporaryDirectory(prefix=".tmp-", dir=target.parent) as scratch:
            archive = Path(scratch) / f"{INCEPTION2015_CACHE}.tgz"
            with archive.open("wb") as f, urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
                shutil.copyfileobj(response, f)
            graph = _read_graph_bytes(archive)
    except (OSError, tarfile.TarError) as e:
        raise FIDUnavailableError(f"Downloading {url} failed: {e}") from None

    def write_checked(tmp: Path) -> None:
        tmp.write_bytes(graph)
        Inception2015Graph(tmp)  # refused before it replaces anything

    return replace_atomic(target, write_checked)


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
        return Inception2015Graph(_fetch_inception2015(cached, INCEPTION2015_URL))
    raise FIDUnavailableError(
        f"no weights for the 2015 Inception network: pass --fid-weights PATH or set {ENV_FID_WEIGHTS} "
        f"(PATH: {INCEPTION2015_GRAPH}, {INCEPTION2015_CACHE}.tgz or TF-Hub's tfgan/eval/inception/1 "
        "SavedModel)",
        hint=f"{host} is unreachable here; with internet access the graph is fetched once into {cached}",
    )


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
        cached = Path(os.environ.get("KERAS_HOME") or "~/.keras").expanduser() / "models" / KERAS_INCEPTION_WEIGHTS
        if cached.is_file():
            source = str(cached)
        elif allow_download and network.reachable(("storage.googleapis.com", 443)):
            source = "imagenet"
        else:
            raise FIDUnavailableError(
                f"no weights for keras.applications.InceptionV3: pass --fid-weights PATH or put "
                f"the file in {cached.parent}",
                hint=f"{KERAS_INCEPTION_WEIGHTS}; storage.googleapis.com is unreachable here",
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


def domain_network(dataset: str, *, data_dir: str | os.PathLike[str] | None = None,
                   cache_dir: str | os.PathLike[str] | None = None, **kwargs) -> FIDNetwork:
    """The domain FID network of ``dataset``: the penultimate layer of its
    :func:`~evae_tf.evaluation.classifier.domain_classifier`, cached in
    ``<cache_dir>/domain_fid/`` (other arguments as there). Its FIDs measure distance in
    a space learned from the dataset's own labels, not comparable with Inception FIDs.

    Raises:
      FIDUnavailableError: the dataset has no class labels or its data cannot be found.
    """
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    try:
        model, info = classifier.domain_classifier(dataset, cache / "domain_fid", data_dir=data_dir, **kwargs)
    except (ValueError, DataNotFoundError) as e:
        raise FIDUnavailableError(f"no domain classifier for {dataset}: {getattr(e, 'message', e)}",
                                  hint=getattr(e, "hint", None)) from None
    accuracy = info.get("holdout_accuracy")
    accuracy = f", hold-out accuracy {accuracy:.3f}" if accuracy is not None else ""
    features = KerasFeatures(
        classifier.feature_model(model), "domain",
        f"domain FID: {info.get('feature_dim', '?')}-d penultimate features of a small CNN classifier "
        f"trained on {dataset}'s labels ({info.get('epochs', '?')} epochs{accuracy}); not comparable "
        "with Inception FIDs",
    )
    features.info = info
    return features


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
