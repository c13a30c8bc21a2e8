"""Atomic file writes: nothing the user made is ever left half-written.

Every writer goes through :func:`replace_atomic`: the content is written to a temporary
file beside the target (``.tmp-<pid>-<thread>-<name>``, keeping the target's suffix, which
Keras requires), flushed to disk, then renamed over the target. On any failure the
temporary file is removed and the target is left as it was. Files get ordinary
permissions (the umask's), unlike ``tempfile.mkstemp``'s 0600.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_atomic(path: str | os.PathLike, write: Callable[[Path], Any]) -> Path:
    """Calls ``write(tmp_path)``, flushes the file, then renames it onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{os.getpid()}-{threading.get_ident()}-{path.name}")
    try:
        write(tmp)
        _fsync(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    return replace_atomic(path, lambda tmp: tmp.write_bytes(data))


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    return replace_atomic(path, lambda tmp: tmp.write_text(text))


def write_json_atomic(path: str | os.PathLike, obj: Any) -> Path:
    """Writes ``obj`` as indented, key-sorted JSON."""
    return write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")
