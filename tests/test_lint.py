"""The code's shape rules, as the linters of `make lint` state them, so CI fails when one
breaks: ruff (style, and C901 / PLR0915 for short functions in the product packages),
pylint's too-many-lines (no module of evae_tf over 400 lines) and import-linter's
contracts in pyproject.toml (one-way imports, no cycles, lazy imports included)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def run(*command: str) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_ruff_passes():
    result = run(str(BIN / "ruff"), "check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_module_of_evae_tf_is_over_400_lines():
    result = run(sys.executable, "-m", "pylint", "evae_tf")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_import_contracts_are_kept():
    result = run(str(BIN / "lint-imports"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 kept, 0 broken" in result.stdout, result.stdout


def test_the_contracts_catch_a_forbidden_lazy_import(tmp_path):
    """A function-level import of the config from the mathematics breaks a contract: the
    contracts can fail, and lazy imports count."""
    import shutil

    copy = tmp_path / "repo"
    for name in ("evae_tf", "trainers", "export", "serving", "pyproject.toml"):
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, copy / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, copy / name)
    with open(copy / "evae_tf" / "models" / "vae.py", "a") as f:
        f.write("\n\ndef _lazy():\n    from evae_tf import config  # noqa: F401\n")
    result = subprocess.run([str(BIN / "lint-imports")], cwd=copy, capture_output=True, text=True,
                            timeout=600, env={"PYTHONPATH": str(copy), "PATH": str(BIN)})
    assert result.returncode != 0
    assert "evae_tf.models.vae -> evae_tf.config" in result.stdout, result.stdout
