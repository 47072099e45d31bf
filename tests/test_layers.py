"""The shape of the house, read from the source: no import cycle among kdmech's modules (imports
inside functions counted), `models/` imports only `tasks/` and `errors`, nothing below the CLI
imports a command, and no function body is over 60 lines."""

import ast
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "kdmech"


def _module(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


MODULES = {_module(p): p for p in PACKAGE.rglob("*.py")}


def _imported(name: str, node) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    base = node.module or ""
    if node.level:
        package = name.split(".") if MODULES[name].name == "__init__.py" else name.split(".")[:-1]
        base = ".".join(package[:len(package) - node.level + 1] + ([node.module] if node.module else []))
    return [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]


def _owner(target: str) -> str | None:
    while target and target not in MODULES:
        target = target.rpartition(".")[0]
    return target or None


@pytest.fixture(scope="module")
def graph():
    g = nx.DiGraph()
    for name, path in MODULES.items():
        g.add_node(name)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in _imported(name, node):
                    owner = _owner(target) if target.startswith("kdmech") else None
                    # a package's __init__ re-exporting its children is not an edge of theirs
                    if owner and owner != name and not name.startswith(owner + "."):
                        g.add_edge(name, owner)
    return g


def test_no_import_cycle(graph):
    assert list(nx.simple_cycles(graph)) == []


def test_models_import_only_tasks_and_errors(graph):
    for name in MODULES:
        if name.startswith("kdmech.models"):
            up = [d for d in graph.successors(name)
                  if not d.startswith(("kdmech.models", "kdmech.tasks", "kdmech.errors")) and d != "kdmech"]
            assert up == [], name


def test_only_the_cli_imports_commands(graph):
    for name in MODULES:
        if not name.startswith("kdmech.commands") and name not in ("kdmech.cli", "kdmech.__main__"):
            assert not [d for d in graph.successors(name) if d.startswith("kdmech.commands")], name


def test_no_function_body_over_60_lines():
    long = []
    for path in MODULES.values():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                body = node.body
                if isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant):
                    body = body[1:]
                if body and node.end_lineno - body[0].lineno + 1 > 60:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}")
    assert long == []
