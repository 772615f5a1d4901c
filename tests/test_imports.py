"""The import graph of ``capt``, drawn from its source with ``ast`` (imports inside functions included):
no circles, and every module on its floor (a lower floor never imports a higher one)."""

from __future__ import annotations

import ast
from pathlib import Path

import capt

PACKAGE = Path(capt.__file__).resolve().parent


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The capt modules ``path`` imports, anywhere in the file (``from . import x`` names module x)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")
                up = up[:len(up) - node.level + 1]
                base = ".".join([*up, *([base] if base else [])])
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in modules:
                t = t.rpartition(".")[0]
            if t and t != name:
                out.add(t)
    return out


def import_graph() -> dict[str, set[str]]:
    files = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(f) for f in files}
    return {module_name(f): imports_of(f, modules) for f in files}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), or a module importing itself."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_graph_is_read_from_source():
    """The reader sees imports inside functions and relative imports (else the next test proves nothing)."""
    g = import_graph()
    assert "capt.runner" in g["capt.cli"]  # imported inside a function
    assert "capt.data.registry" in g["capt.data"]  # from .registry import ...
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_circles():
    found = cycles(import_graph())
    assert not found, f"import circles in capt: {found}"


# The floors of capt, lowest first: a module imports only from its own floor or below. (Within a floor
# the cycle test above keeps the order.)
FLOORS = [
    ("ground: where things are, checks, atomic files, the chapter table",
     {"paths", "validation", "io", "results", "chapters", "apgd", "data.base"}),
    ("data", {"data", "data.registry", "data.splits", "data.fewshot", "data.transfer", "data.disk_cache",
              "data.miniworld", "data.real", "data.folder", "data.download", "data.status", "data.cli"}),
    ("model core", {"objectives", "prompts", "attacks", "methods", "mini_model", "models", "train", "evaluate",
                    "stats"}),
    ("experiments", {"experiments", ""}),
    ("values: profiles and Settings", {"profiles", "notebook"}),
    ("what chapters compute and show", {"plans", "report", "plots", "reported", "phenomena"}),
    ("running: papermill and the sweep", {"runner", "sweep", "sweep.tasks", "sweep.cost", "sweep.done",
                                          "sweep.worker", "sweep.engines", "sweep.pool", "sweep.dispatch",
                                          "execution", "papermill_hook"}),
    ("the command", {"cli"}),
]


def test_every_import_goes_down_or_across():
    floor = {f"capt.{m}".rstrip("."): i for i, (_, mods) in enumerate(FLOORS) for m in mods}
    graph = import_graph()
    assert set(graph) == set(floor), f"modules without a floor: {sorted(set(graph) ^ set(floor))}"
    up = [f"{a} ({FLOORS[floor[a]][0]}) -> {b} ({FLOORS[floor[b]][0]})"
          for a in graph for b in graph[a] if floor[b] > floor[a]]
    assert not up, "imports that climb a floor:\n" + "\n".join(sorted(up))
