"""Input pipelines: float32 image batches in [0, 1] for the four EVAE datasets.

One concept per module, imported one way (registry ← idx ← sources ← raw ← pipeline ← labels):

| module     | holds                                                                 |
|------------|-----------------------------------------------------------------------|
| `registry` | the dataset table: names, stored / delivered shapes, splits, classes  |
| `idx`      | the IDX file format (MNIST's) and the four-file directory layout      |
| `network`  | the one network probe, asked before any download                      |
| `sources`  | where a dataset is found: explicit dir, local copies, TFDS (`find_source`) |
| `raw`      | a source's stored uint8 images (and labels); `num_examples`           |
| `pipeline` | preprocessing and the batched pipelines `load`, `load_arrays`         |
| `labels`   | `(images, labels)` batches for the domain FID (`load_labelled`)       |

Every public name is re-exported here (``from evae_tf import data; data.load(...)``); the
TensorFlow ones (pipelines, ``num_examples``, ``load_labelled``) on first use, so the table
and the source search import no TensorFlow. The search paths are read from
:mod:`evae_tf.data.sources` at call time: patch them there.

    ds = load("fashion_mnist", "train", batch_size=100, shuffle=True, seed=0)
    next(iter(ds)).shape  # [100, 32, 32, 1], float32 in [0, 1]
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# TensorFlow-free: the table, the IDX reader, the search for a source (a CLI checks its
# flags with these before TensorFlow is imported).
from evae_tf.data.idx import IDX_FILES, read_idx
from evae_tf.data.registry import (
    CROP_SIZES,
    DATASETS,
    HOLDOUT_SPLIT,
    IMAGE_SHAPES,
    KNOWN_NUM_EXAMPLES,
    MNIST_STYLE,
    NUM_CLASSES,
    RAW_SHAPES,
    image_shape,
    num_classes,
    resolve_split,
)
from evae_tf.data.sources import (
    ENV_DATA_DIR,
    IDX_SEARCH_PATHS,
    NPZ_SEARCH_PATHS,
    PROBE_ADDRESS,
    Source,
    SourceKind,
    find_source,
    resolve_source,
)
from evae_tf.errors import DataNotFoundError, IdxFormatError

# The pipelines import TensorFlow: loaded on first use (PEP 562).
_LAZY: dict[str, str] = {
    "CACHE_MAX_BYTES": "pipeline",
    "SHUFFLE_BUFFER_BYTES": "pipeline",
    "batch_pipeline": "pipeline",
    "center_crop": "pipeline",
    "load": "pipeline",
    "load_arrays": "pipeline",
    "pipeline_options": "pipeline",
    "preprocess": "pipeline",
    "num_examples": "raw",
    "raw_dataset": "raw",
    "load_labelled": "labels",
}

if TYPE_CHECKING:
    from evae_tf.data.labels import load_labelled
    from evae_tf.data.pipeline import (
        CACHE_MAX_BYTES,
        SHUFFLE_BUFFER_BYTES,
        batch_pipeline,
        center_crop,
        load,
        load_arrays,
        pipeline_options,
        preprocess,
    )
    from evae_tf.data.raw import num_examples, raw_dataset


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "CACHE_MAX_BYTES",
    "CROP_SIZES",
    "DATASETS",
    "DataNotFoundError",
    "ENV_DATA_DIR",
    "HOLDOUT_SPLIT",
    "IDX_FILES",
    "IDX_SEARCH_PATHS",
    "IMAGE_SHAPES",
    "IdxFormatError",
    "KNOWN_NUM_EXAMPLES",
    "MNIST_STYLE",
    "NPZ_SEARCH_PATHS",
    "NUM_CLASSES",
    "PROBE_ADDRESS",
    "RAW_SHAPES",
    "SHUFFLE_BUFFER_BYTES",
    "Source",
    "SourceKind",
    "batch_pipeline",
    "center_crop",
    "find_source",
    "image_shape",
    "load",
    "load_arrays",
    "load_labelled",
    "num_classes",
    "num_examples",
    "pipeline_options",
    "preprocess",
    "raw_dataset",
    "read_idx",
    "resolve_source",
    "resolve_split",
]
