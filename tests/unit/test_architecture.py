"""The import graph: no cycles among project modules, and an import inside a function only where
it keeps start-up cheap (pyspark, streamlit, a client library a runtime never uses), with a
comment saying so. (The layer contracts are import-linter's, in ``make lint``.)"""

from __future__ import annotations

import ast
import os
from pathlib import Path

import grimp

import fleetsim

ROOT = Path(fleetsim.__file__).parent


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child)))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_import_cycle_among_project_modules() -> None:
    graph = grimp.build_graph("fleetsim", exclude_type_checking_imports=True)
    assert len(graph.modules) > 100  # the runtimes behind the fleetsim/ links are in the graph
    assert "fleetsim.edge.device" in graph.modules and "fleetsim.cloud.dashboard.app" in graph.modules
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = grimp.ImportGraph()
    for module in ("p", "p.a", "p.b", "p.c"):
        graph.add_module(module)
    graph.add_import(importer="p.a", imported="p.b")
    graph.add_import(importer="p.b", imported="p.a")
    graph.add_import(importer="p.b", imported="p.c")
    assert _cycles(graph) == [["p.a", "p.b"]]


def _commented(lines: list[str], i: int) -> bool:
    """A comment on the import's line, or above the run of import lines it belongs to."""
    while True:
        line = lines[i].strip()
        if "#" in line:
            return True
        if not line.startswith(("import ", "from ")) or i == 0:
            return False
        i -= 1


def _function_imports(path: Path) -> list[tuple[int, str, bool]]:
    """(line, imported module, commented) of every import inside a function body."""
    source = path.read_text()
    lines = source.splitlines()
    out = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for sub in ast.walk(node):
            if isinstance(sub, ast.Import):
                names = [a.name for a in sub.names]
            elif isinstance(sub, ast.ImportFrom) and sub.module and not sub.level:
                names = [sub.module]
            else:
                continue
            out.extend((sub.lineno, name, _commented(lines, sub.lineno - 1)) for name in names)
    return out


def test_imports_inside_functions_only_keep_start_up_cheap_and_say_so() -> None:
    # os.walk, not Path.rglob: the runtimes are behind links (fleetsim/edge -> ../edge).
    files = sorted(
        Path(d, f) for d, _, names in os.walk(ROOT, followlinks=True) for f in names if f.endswith(".py")
    )
    assert any(p.parts[-2:] == ("edge", "device.py") for p in files)  # links followed
    offenders = [
        f"{path.relative_to(ROOT.parent)}:{line} {name}"
        for path in files
        for line, name, commented in _function_imports(path)
        if not commented
    ]
    assert offenders == []
