"""The source tree is grouped by concern and the tests mirror it: a newcomer finds a feature
from folder names (docs/layout.md lists them)."""

from __future__ import annotations

from tests.helpers import ROOT

PACKAGE = ROOT / "trainer"
# The public entry points stay at the top of the package; everything else sits in a folder.
TOP_LEVEL = {"__init__.py", "__main__.py", "api.py", "compat.py", "errors.py", "tasks.py"}


def test_the_framework_is_grouped_into_folders():
    assert {p.name for p in PACKAGE.glob("*.py")} == TOP_LEVEL
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"}
    layout = (ROOT / "docs" / "layout.md").read_text()
    assert all(f"  {name}/" in layout for name in folders), folders


def test_the_tests_mirror_the_tree():
    tests = {p.name for p in (ROOT / "tests").iterdir()
             if p.is_dir() and p.name not in ("helpers", "__pycache__")}
    mirrored = {p.name for p in PACKAGE.iterdir() if p.is_dir()} | {"recipes"}
    assert tests <= mirrored, tests - mirrored
    # Only whole-package checks (packaging, imports, lint, docs, layout) stay at the top.
    top = {p.stem for p in (ROOT / "tests").glob("test_*.py")}
    assert top == {"test_compat", "test_docker", "test_docs", "test_extending", "test_imports",
                   "test_layout", "test_lint", "test_package"}
