"""``python -m export.cleanup``: leftovers of killed exports go, nothing else does."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from export.cleanup import export_leftovers, main

REPO = Path(__file__).resolve().parents[1]


def _dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def _tree(path: Path, mtime: float, pb: bool = True) -> Path:
    (path / "variables").mkdir(parents=True)
    files = [path / "variables" / "variables.index"]
    if pb:
        files.append(path / "saved_model.pb")
    for file in files:
        file.write_bytes(b"x")
    for item in [*files, path / "variables", path]:
        os.utime(item, (mtime, mtime))
    return path


def test_removes_only_dead_leftovers_older_than_the_newest_version(tmp_path, capsys):
    now = time.time()
    dead = _dead_pid()
    _tree(tmp_path / "1", now - 300)
    _tree(tmp_path / "2", now - 100)
    old = _tree(tmp_path / f".tmp-export-{dead}-ab12cd34", now - 200, pb=False)
    older = _tree(tmp_path / f".tmp-export-{dead}-0000ffff", now - 1000)
    newer = _tree(tmp_path / f".tmp-export-{dead}-1234abcd", now - 50, pb=False)  # after v2
    running = _tree(tmp_path / f".tmp-export-{os.getpid()}-deadbeef", now - 200, pb=False)
    other = _tree(tmp_path / ".tmp-2", now - 1000)  # not an export's directory
    assert export_leftovers(tmp_path) == [older, old]

    assert main([str(tmp_path), "--dry-run"]) == 0
    assert old.exists() and older.exists()
    assert main([str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["1", "2", newer.name, running.name, other.name]
    )
    out = capsys.readouterr().out.splitlines()
    assert out == [f"would remove {older}", f"would remove {old}", f"removed {older}",
                   f"removed {old}"]  # fmt: skip


def test_nothing_is_removed_without_a_finished_version(tmp_path):
    leftover = _tree(tmp_path / f".tmp-export-{_dead_pid()}-ab12cd34", time.time() - 1000)
    _tree(tmp_path / "3", time.time(), pb=False)  # no saved_model.pb: not finished
    assert export_leftovers(tmp_path) == []
    assert main([str(tmp_path)]) == 0 and leftover.exists()


def test_cli_rejects_a_missing_base_path(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "export.cleanup", str(tmp_path / "nope")],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    assert f"error: base path '{tmp_path / 'nope'}' is not a directory" in result.stderr
    assert "Traceback" not in result.stderr
