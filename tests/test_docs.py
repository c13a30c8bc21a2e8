"""The documentation is the project's own: no file points outside the repository, every
citation of a docs page names a section that exists, and the architecture page names
every module of the product packages."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
# "docs/math.md, 'The EVAE posterior'" (the title may wrap over lines in a docstring,
# and may hold an apostrophe: 'Sampling from the paper's prior').
CITATION = re.compile(r"docs/([\w-]+\.md),? '")
PRODUCT_PACKAGES = ("evae_tf", "trainers", "export", "serving")


def tracked_files() -> list[Path]:
    names = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True)
    paths = [ROOT / name for name in names.stdout.splitlines()]
    return [p for p in paths if p.is_file() and p.suffix in {".py", ".md", ".toml", ".sh", ""}]


def headings(page: str) -> set[str]:
    text = (DOCS / page).read_text(encoding="utf-8")
    return {line.lstrip("#").strip() for line in text.splitlines() if line.startswith("#")}


def test_the_pages_exist():
    for page in ("README.md", "math.md", "serving.md", "architecture.md", "results.md"):
        assert (DOCS / page).is_file(), page


def test_no_file_refers_outside_the_repository():
    outside = re.compile(r"\.\./shared|shared/spec|shared/paper|\bspec §")
    offenders = [f"{p.relative_to(ROOT)}:{n}" for p in tracked_files() if p.name != "test_docs.py"
                 for n, line in enumerate(p.read_text(encoding="utf-8", errors="replace").splitlines(), 1)
                 if outside.search(line)]
    assert offenders == []


def test_every_cited_section_exists():
    cited = 0
    for path in tracked_files():
        text = " ".join(path.read_text(encoding="utf-8", errors="replace").split())
        for match in CITATION.finditer(text):
            page, rest = match.group(1), text[match.end():]
            assert (DOCS / page).is_file(), f"{path}: cites docs/{page}, which does not exist"
            assert any(rest.startswith(title + "'") for title in headings(page)), \
                f"{path}: cites docs/{page} '{rest[:60]}...', not a heading there"
            cited += 1
    assert cited >= 10  # the code does cite the docs


def test_the_architecture_page_names_every_module():
    text = (DOCS / "architecture.md").read_text(encoding="utf-8")
    for package in PRODUCT_PACKAGES:
        for module in sorted((ROOT / package).glob("*.py")):
            if module.name != "__init__.py":
                assert f"{package}/{module.name}" in text or f"{package}.{module.stem}" in text, module


def test_no_function_of_the_product_packages_is_over_60_lines():
    import ast

    long = []
    for package in PRODUCT_PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    lines = node.end_lineno - node.lineno + 1
                    if lines > 60:
                        long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines} lines)")
    assert long == []


def test_serving_stays_within_its_line_budget():
    """Both protocols, the registry and the client in at most 1,400 lines (``wc -l``):
    serving re-uses TF Serving's protos and well-kept libraries instead of re-writing them."""
    lines = {path.name: len(path.read_text().splitlines()) for path in (ROOT / "serving").glob("*.py")}
    assert sum(lines.values()) <= 1400, lines
