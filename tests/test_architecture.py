"""The house's shape: the package's import graph, type-checking imports included."""

from __future__ import annotations

import ast
from pathlib import Path

import asgimon

ROOT = Path(asgimon.__file__).parent


def modules() -> dict[str, Path]:
    found = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the asgimon modules it imports (anywhere in it, ``TYPE_CHECKING`` too)."""
    mods = modules()

    def known(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {name: set() for name in mods}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join([*anchor, *([node.module] if node.module else [])])
                targets = [f"{base}.{a.name}" for a in node.names]
            for target in targets:
                found = known(target)
                if found is not None and found != name and found.startswith("asgimon"):
                    graph[name].add(found)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_graph_sees_a_known_import() -> None:
    graph = import_graph()
    assert "asgimon.pipeline.recorder" in graph["asgimon.monitor"]
    assert "asgimon.storage.base" in graph["asgimon.storage.sql.writes"]


def test_the_import_graph_has_no_circle() -> None:
    assert cycles(import_graph()) == []


def test_the_lower_layers_never_import_the_web_layer_or_the_owner() -> None:
    """Storage, analytics, the pipeline, rate limiting and the events sit below the
    middleware, the dashboard and the Monitor that owns them all."""
    upper = ("asgimon.dashboard", "asgimon.monitor", "asgimon.middleware")
    graph = import_graph()
    for name, imported in graph.items():
        if name.startswith(("asgimon.storage", "asgimon.analytics", "asgimon.ratelimit")):
            assert not [m for m in imported if m.startswith(upper)], name
    for name, imported in graph.items():
        if name.startswith(("asgimon.pipeline", "asgimon.events", "asgimon.fields")):
            assert not [m for m in imported if m.startswith(upper)], name


def test_the_core_never_imports_a_plugin_by_name() -> None:
    """Plugins are found through entry points (``asgimon.channels``,
    ``asgimon.integrations``), asgimon's own as a third party's."""
    graph = import_graph()
    assert "asgimon.plugins.queries" in graph["asgimon.plugins.sqlalchemy"]  # the graph sees them
    importers = {
        name
        for name, imported in graph.items()
        if not name.startswith("asgimon.plugins")
        and any(m.startswith("asgimon.plugins.") for m in imported)
    }
    assert importers == set()
