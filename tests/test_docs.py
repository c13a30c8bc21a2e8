"""The documentation is the project's own: no file points outside the repository, every
citation of a docs page names a section that exists, every relative link resolves, the
README stays a short front door, the docs index lists every page, and the architecture
page names every module of the product packages."""

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
    for page in ("README.md", "math.md", "serving.md", "architecture.md", "operations.md", "results.md"):
        assert (DOCS / page).is_file(), page


def test_the_readme_is_a_front_door_of_at_most_150_lines():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 150, f"README.md has {len(lines)} lines; move detail to docs/"


def test_the_docs_index_lists_every_page():
    index = (DOCS / "README.md").read_text(encoding="utf-8")
    pages = [p.name for p in sorted(DOCS.glob("*.md")) if p.name != "README.md"]
    assert len(pages) >= 5
    for page in pages:
        assert f"]({page})" in index, f"docs/README.md does not link {page}"
    assert "](../bench/NOTES.md)" in index


MARKDOWN_LINK = re.compile(r"\]\(([^)\s]+)\)")


def test_every_relative_link_of_the_docs_resolves():
    pages = [ROOT / "README.md", ROOT / "bench" / "NOTES.md", *sorted(DOCS.glob("*.md"))]
    checked = 0
    for page in pages:
        for target in MARKDOWN_LINK.findall(page.read_text(encoding="utf-8")):
            path = target.split("#", 1)[0]
            if not path or "://" in target or target.startswith("mailto:"):
                continue
            assert (page.parent / path).exists(), f"{page.relative_to(ROOT)} links {target}, which does not exist"
            checked += 1
    assert checked >= 20  # the pages do link each other


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


def architecture_rows(text: str) -> dict[str, str]:
    """The architecture table's rows, keyed by the subpackage their first cell names
    (``| `evae_tf/data/` | ... |`` -> ``{"evae_tf/data/": the row}``)."""
    rows = {}
    for line in text.splitlines():
        match = re.match(r"\| `([\w/]+/)` \|", line)
        if match:
            rows[match.group(1)] = line
    return rows


def test_the_architecture_page_names_every_module():
    """Every module of evae_tf (top-level and in its subpackages) and of the CLI packages,
    computed from the tree: by its path or dotted name, or, for a subpackage's module, by
    its file name in that subpackage's row of the table."""
    text = (DOCS / "architecture.md").read_text(encoding="utf-8")
    rows = architecture_rows(text)
    modules = [m for package in PRODUCT_PACKAGES for m in sorted((ROOT / package).rglob("*.py"))
               if m.name != "__init__.py" and "__pycache__" not in m.parts]
    assert len(modules) >= 30
    missing = []
    for module in modules:
        relative = module.relative_to(ROOT)
        dotted = ".".join(relative.with_suffix("").parts)
        row = rows.get(relative.parent.as_posix() + "/", "")
        if relative.as_posix() not in text and dotted not in text and f"`{module.name}`" not in row:
            missing.append(relative.as_posix())
    assert missing == [], f"not on docs/architecture.md: {missing}"


def test_serving_stays_within_its_line_budget():
    """Both protocols, the registry and the client in at most 1,400 lines (``wc -l``):
    serving re-uses TF Serving's protos and well-kept libraries instead of re-writing them."""
    lines = {path.name: len(path.read_text().splitlines()) for path in (ROOT / "serving").glob("*.py")}
    assert sum(lines.values()) <= 1400, lines
