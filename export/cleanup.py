"""Remove what a killed export left behind in a model base path.

``export.saved_model`` writes each version into ``<base_path>/.tmp-export-<pid>-<hex>``
and renames it to ``<version>`` when it is complete; a killed export leaves the
temporary directory (TF Serving ignores it). This removes such leftovers, safely::

    python -m export.cleanup models/evae [models/vae ...] [--dry-run]

A leftover is removed only if the export that wrote it is not running (no live process
has its pid) and nothing in it changed after the newest finished version was written,
so an export still in progress is never touched. See ``docs/serving.md``.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
from pathlib import Path

from evae_tf.cli import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK, HelpFormatter, fail
from evae_tf.errors import EvaeError, one_line
from export.saved_model import TEMP_PREFIX

_LEFTOVER = re.compile(re.escape(TEMP_PREFIX) + r"([0-9]+)-[0-9a-f]+")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _last_change(path: Path) -> float:
    """The newest mtime of ``path`` and everything under it."""
    newest = path.lstat().st_mtime
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            try:
                newest = max(newest, os.lstat(os.path.join(root, name)).st_mtime)
            except OSError:
                continue
    return newest


def export_leftovers(base_path: str | os.PathLike) -> list[Path]:
    """The ``.tmp-export-*`` directories of ``base_path`` that are safe to remove."""
    versions = [p for p in Path(base_path).iterdir()
                if p.name.isdigit() and (p / "saved_model.pb").is_file()]
    if not versions:
        return []  # no finished version to compare with: keep everything
    newest = max(_last_change(path) for path in versions)
    leftovers = []
    for entry in sorted(Path(base_path).iterdir()):
        match = _LEFTOVER.fullmatch(entry.name)
        if not match or not entry.is_dir() or entry.is_symlink():
            continue
        if not _pid_alive(int(match.group(1))) and _last_change(entry) < newest:
            leftovers.append(entry)
    return leftovers


def _remove(base_path: Path, dry_run: bool) -> bool:
    """Removes (or lists) the leftovers of one base path; False if any could not go."""
    ok = True
    for leftover in export_leftovers(base_path):
        try:
            if not dry_run:
                shutil.rmtree(leftover)
        except OSError as e:
            fail(f"cannot remove {leftover}: {one_line(e)}")
            ok = False
            continue
        print(f"{'would remove' if dry_run else 'removed'} {leftover}")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m export.cleanup", formatter_class=HelpFormatter,
        description="Remove .tmp-export-* leftovers of killed exports from model base paths.",
    )
    parser.add_argument("base_paths", nargs="+", type=Path, metavar="BASE_PATH")
    parser.add_argument("--dry-run", action="store_true", help="only list what would go")
    args = parser.parse_args(argv)
    for base_path in args.base_paths:
        if not base_path.is_dir():
            parser.error(f"base path {str(base_path)!r} is not a directory")
    try:
        results = [_remove(base_path, args.dry_run) for base_path in args.base_paths]
    except (EvaeError, OSError) as e:  # a base path that cannot be listed
        return fail(e)
    except KeyboardInterrupt:
        print("Interrupted; leftovers not yet removed are still there.", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_OK if all(results) else EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
