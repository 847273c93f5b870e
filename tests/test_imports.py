"""The package's import graph: the framework never imports the shipped recipes (they are a
user of it like any other), and no modules import each other in a circle, counting imports
inside functions too (a deferred import hides a circle, it does not remove it)."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.helpers import ROOT

PACKAGE = ROOT / "trainer"
PACKAGES = (PACKAGE, ROOT / "trainer_recipes")


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, top_level_only: bool) -> set[str]:
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return found


def _graph(top_level_only: bool) -> dict[str, set[str]]:
    modules = {_module(p): p for package in PACKAGES for p in package.rglob("*.py")}
    return {name: {m for m in _imports(path, top_level_only) if m in modules} - {name}
            for name, path in modules.items()}


def test_the_framework_never_imports_the_recipes():
    offenders = {_module(p): sorted(i for i in _imports(p, top_level_only=False)
                                    if i.split(".")[0] in ("trainer_recipes", "recipes"))
                 for p in PACKAGE.rglob("*.py")}
    assert not {m: i for m, i in offenders.items() if i}


def test_no_import_cycles():
    graph = _graph(top_level_only=False)
    # A package imports its own submodules to re-export them; that is not a cycle.
    edges = {m: {d for d in deps if not m.startswith(d + ".")} for m, deps in graph.items()}
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(edges[node]):
            if state.get(dep) == 1:
                cycles.append([*path[path.index(dep):], dep] if dep in path else [node, dep])
            elif dep not in state:
                visit(dep, [*path, dep])
        state[node] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    assert not cycles, cycles
