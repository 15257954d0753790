"""The package layering holds: no import circle between modules, and none between packages.

Every `import` in miam_cli counts, those inside functions too (a lazy import is still a dependency).
A package is a folder of miam_cli (`engine`, `runs`, ...) or one of its top-level modules (`errors`,
`shards`, ...). Two packages that import each other, or any longer loop, would make "which stage
owns this" ambiguous again: `runs` sits below `engine` and `evaluate`, which do not import each
other both ways.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "miam_cli"


def _modules() -> dict[str, Path]:
    mods = {}
    for f in ROOT.rglob("*.py"):
        parts = f.relative_to(ROOT.parent).with_suffix("").parts
        mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return mods


def _imports(name: str, path: Path, mods: dict[str, Path]) -> set[str]:
    """The miam_cli modules `name` imports (`from pkg import mod` counts as importing pkg.mod)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        found |= {t for t in targets if t in mods and t != name}
    return found


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in list(graph):
        if v not in index:
            visit(v)
    return out


@pytest.fixture(scope="module")
def module_graph() -> dict[str, set[str]]:
    mods = _modules()
    return {name: _imports(name, path, mods) for name, path in mods.items()}


def test_no_module_imports_itself_back(module_graph):
    assert _cycles(module_graph) == []


def test_no_two_packages_depend_on_each_other(module_graph):
    edges = defaultdict(set)  # package -> {(package, "module -> module")}
    for a, targets in module_graph.items():
        for b in targets:
            if _package(a) != _package(b):
                edges[_package(a)].add((_package(b), f"{a} -> {b}"))
    graph = {p: {q for q, _ in e} for p, e in edges.items()}
    loops = _cycles(graph)
    detail = [line for loop in loops for p in loop for q, line in sorted(edges[p]) if q in loop]
    assert loops == [], "\n".join(detail)


def test_runs_sits_below_the_stages_that_write_and_read_runs(module_graph):
    """engine writes run dirs and evaluate reads them: both through `runs`, which imports neither."""
    imported = defaultdict(set)
    for a, targets in module_graph.items():
        imported[_package(a)] |= {_package(b) for b in targets}
    assert {"runs"} <= imported["engine"] and {"runs"} <= imported["evaluate"]
    assert not imported["runs"] & {"engine", "evaluate", "attribution", "predict", "maps", "cli", "api"}
    assert "engine" not in imported["evaluate"]


def test_the_check_sees_a_circle(tmp_path):
    """The cycle finder itself: a loop of three is reported, a chain is not."""
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": {"c"}}) == []
