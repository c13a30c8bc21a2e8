"""Where a dataset is found: explicit directories, local IDX / npz copies, TFDS.

The places are tried in this order by :func:`find_source`:

1. an explicit directory (``data_dir=`` / ``--data-dir``, else the ``EVAE_DATA_DIR``
   environment variable): the four MNIST IDX files if it holds them, otherwise a TFDS
   ``data_dir``;
2. local IDX files for the MNIST-style datasets (Debian's ``dataset-fashion-mnist``
   package installs them in ``/usr/share/datasets/fashion-mnist``; Keras caches them in
   ``~/.keras/datasets``), see :data:`IDX_SEARCH_PATHS` and :data:`NPZ_SEARCH_PATHS`;
3. a TFDS copy already prepared in the default TFDS data directory;
4. a TFDS download, only when ``storage.googleapis.com`` answers within a few seconds
   (:func:`evae_tf.data.network.reachable`).

When none applies, :class:`~evae_tf.errors.DataNotFoundError` says what was searched and
how to get the data. Tests replace the search paths here and the probe in ``network``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from evae_tf.data import network
from evae_tf.data.idx import has_idx_files
from evae_tf.data.registry import MNIST_STYLE, check_name
from evae_tf.errors import DataNotFoundError

__all__ = [
    "ENV_DATA_DIR",
    "IDX_SEARCH_PATHS",
    "NPZ_SEARCH_PATHS",
    "PROBE_ADDRESS",
    "Source",
    "SourceKind",
    "find_source",
    "resolve_source",
]

logger = logging.getLogger(__name__)

ENV_DATA_DIR = "EVAE_DATA_DIR"

# Directories searched for the four IDX files (step 2 of find_source). Tests replace these.
IDX_SEARCH_PATHS: dict[str, tuple[str, ...]] = {
    "mnist": ("~/.keras/datasets/mnist",),
    "fashion_mnist": (
        "/usr/share/datasets/fashion-mnist",  # Debian package dataset-fashion-mnist
        "~/.keras/datasets/fashion-mnist",  # keras.datasets.fashion_mnist.load_data()
    ),
}

# Keras' own MNIST format: one .npz with x_train, y_train, x_test, y_test.
NPZ_SEARCH_PATHS: dict[str, tuple[str, ...]] = {
    "mnist": ("~/.keras/datasets/mnist.npz",),
}

PROBE_ADDRESS: tuple[str, int] = ("storage.googleapis.com", 443)  # where TFDS downloads from

SourceKind = Literal["dir", "idx", "npz", "tfds_prepared", "tfds_download"]


@dataclasses.dataclass(frozen=True)
class Source:
    """Where a dataset's images come from.

    Attributes:
      kind: ``"idx"`` (a directory with the four IDX files), ``"npz"`` (Keras'
        ``mnist.npz``), ``"dir"`` (a TFDS copy prepared in an explicitly given
        directory), ``"tfds_prepared"`` (a TFDS copy prepared in the default TFDS
        directory) or ``"tfds_download"`` (TFDS will download into ``path``).
      path: the directory (or file, for ``"npz"``); for the TFDS kinds the TFDS
        ``data_dir`` root, ``None`` meaning TFDS' default.
    """

    kind: SourceKind
    path: Path | None = None

    @property
    def is_tfds(self) -> bool:
        return self.kind in ("dir", "tfds_prepared", "tfds_download")


def tfds() -> Any:
    """The ``tensorflow_datasets`` module, imported on first use (it is slow to import)."""
    import tensorflow_datasets

    return tensorflow_datasets


def _default_tfds_dir() -> Path:
    """TFDS' default data directory, read at call time (TFDS itself reads it at import)."""
    return Path(os.environ.get("TFDS_DATA_DIR", "~/tensorflow_datasets")).expanduser()


def _tfds_prepared(name: str, data_dir: Path) -> bool:
    return bool(tfds().builder(name, data_dir=str(data_dir)).is_prepared())


def _not_found(name: str, searched: Sequence[str]) -> DataNotFoundError:
    """The error for a dataset found nowhere: what was searched, and (the hint) what to do.

    Message and hint each stay under ``errors.MAX_LINE`` characters, the most kept of each.
    """
    ways = []
    if name == "fashion_mnist":
        ways.append("install dataset-fashion-mnist (`make data`; IDX files in "
                    "/usr/share/datasets/fashion-mnist)")
    holding = "the IDX files or a TFDS copy" if name in MNIST_STYLE else "a prepared TFDS copy"
    ways.append(f"pass --data-dir (or set {ENV_DATA_DIR}) to a directory holding {holding}")
    ways.append(
        f"connect to the internet so TFDS can download it ({PROBE_ADDRESS[0]} is unreachable)"
    )
    return DataNotFoundError(
        f"No local copy of {name} was found and it cannot be downloaded; "
        f"searched {'; '.join(searched)}",
        hint=", or ".join(ways),
    )


def _explicit_source(name: str, directory: Path, *, allow_local: bool) -> Source:
    if not directory.is_dir():
        raise DataNotFoundError(
            f"Data directory {directory} (from --data-dir / {ENV_DATA_DIR}) does not exist "
            f"or is not a directory."
        )
    if not os.access(directory, os.R_OK | os.X_OK):
        raise DataNotFoundError(f"Data directory {directory} is not readable.")
    searched = []
    if allow_local and name in MNIST_STYLE:
        for candidate in (directory / name.replace("_", "-"), directory / name, directory):
            if has_idx_files(candidate):
                return Source("idx", candidate)
        searched.append(f"IDX files in {directory}")
        if name in NPZ_SEARCH_PATHS and (directory / f"{name}.npz").is_file():
            return Source("npz", directory / f"{name}.npz")
    if _tfds_prepared(name, directory):
        return Source("dir", directory)
    searched.append(f"a prepared TFDS copy in {directory}")
    if network.reachable(PROBE_ADDRESS):
        return Source("tfds_download", directory)
    raise _not_found(name, searched)


def _local_source(name: str, searched: list[str]) -> Source | None:
    """Step 2: the first IDX directory or npz file found for ``name``; appends misses."""
    for directory in map(Path, IDX_SEARCH_PATHS.get(name, ())):
        directory = directory.expanduser()
        if has_idx_files(directory):
            logger.info("%s: reading IDX files from %s", name, directory)
            return Source("idx", directory)
        searched.append(f"IDX files in {directory}")
    for file in map(Path, NPZ_SEARCH_PATHS.get(name, ())):
        file = file.expanduser()
        if file.is_file():
            logger.info("%s: reading %s", name, file)
            return Source("npz", file)
        searched.append(str(file))
    return None


def find_source(
    name: str,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    allow_local: bool = True,
) -> Source:
    """Finds where ``name`` can be read from, in the order given in the module docstring.

    An explicit directory is used for MNIST-style data when it (or its subdirectory named
    after the dataset, e.g. ``fashion-mnist``) holds the four IDX files; IDX files carry no
    dataset name, so pointing ``mnist`` at Fashion-MNIST files reads them as MNIST.

    Args:
      name: one of :data:`~evae_tf.data.DATASETS`.
      data_dir: an explicit directory; defaults to ``$EVAE_DATA_DIR`` when set.
      allow_local: when False, skip IDX / npz files and use TFDS only.

    Raises:
      ValueError: unknown dataset name.
      DataNotFoundError: the explicit directory is missing or unreadable, or nothing was
        found and the network is unreachable.
    """
    check_name(name)
    explicit = data_dir if data_dir is not None else os.environ.get(ENV_DATA_DIR) or None
    if explicit is not None:
        source = _explicit_source(name, Path(explicit).expanduser(), allow_local=allow_local)
        logger.info("%s: reading from %s (%s)", name, source.path, source.kind)
        return source

    searched: list[str] = []
    local = _local_source(name, searched) if allow_local else None
    if local is not None:
        return local

    tfds_dir = _default_tfds_dir()
    if _tfds_prepared(name, tfds_dir):
        logger.info("%s: reading the TFDS copy prepared in %s", name, tfds_dir)
        return Source("tfds_prepared", tfds_dir)
    searched.append(f"a prepared TFDS copy in {tfds_dir}")

    if network.reachable(PROBE_ADDRESS):
        logger.info("%s: no local copy; TFDS will download it into %s", name, tfds_dir)
        return Source("tfds_download", tfds_dir)
    raise _not_found(name, searched)


def resolve_source(
    name: str, data_dir: str | os.PathLike[str] | None, source: str | Source
) -> Source:
    """The :class:`Source` that ``source`` (``"auto"``, ``"tfds"`` or a Source) means."""
    if isinstance(source, Source):
        return source
    if source not in ("auto", "tfds"):
        raise ValueError(
            f"Unknown source {source!r}; expected 'auto', 'tfds' or a Source instance."
        )
    return find_source(name, data_dir, allow_local=source == "auto")
