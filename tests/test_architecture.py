"""The shape of the code base: who imports whom (read from the sources with ast, nothing imported).

    python tests/test_architecture.py      # prints the project's import graph
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

REPO_DIR = Path(__file__).resolve().parent.parent
PACKAGES = ("banclfp", "bench", "tests")


def module_name(path: Path) -> str:
    """"ui" for ui.py, "bench.common" for bench/common.py."""
    relative = path.relative_to(REPO_DIR).with_suffix("")
    return ".".join(relative.parts)


def project_modules() -> dict[str, Path]:
    """Every module of the project: the top-level ones and those of bench/, tests/, testkit/."""
    found = {module_name(p): p for p in REPO_DIR.glob("*.py")}
    for package in PACKAGES:
        found.update({module_name(p): p for p in (REPO_DIR / package).rglob("*.py") if p.name != "__init__.py"})
    return found


def imports_of(path: Path, known: set[str]) -> set[str]:
    """Project modules imported by a file, at any depth of the file (lazy imports count too)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in names if name in known}


def import_graph() -> dict[str, set[str]]:
    """module -> the project modules it imports."""
    modules = project_modules()
    known = set(modules)
    return {name: imports_of(path, known) - {name} for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle of the graph, or [] (depth-first search)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return stack[stack.index(target):] + [target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return []

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return []


def test_the_project_has_no_import_cycle() -> None:
    assert find_cycle(import_graph()) == []


@pytest.mark.parametrize("graph,cycle", [
    ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
    ({"a": {"b"}, "b": {"a"}}, ["a", "b", "a"]),
    ({"a": {"b"}, "b": {"c"}, "c": {"b"}}, ["b", "c", "b"]),
])
def test_find_cycle_finds_cycles(graph: dict[str, set[str]], cycle: list[str]) -> None:
    assert find_cycle(graph) == cycle


@pytest.mark.parametrize("importer,forbidden", [
    ("bench", "tests"),  # benchmarks and tests share banclfp.testkit, never each other's files
    ("banclfp", "tests"),
    ("banclfp", "bench"),
])
def test_package_boundaries(importer: str, forbidden: str) -> None:
    offenders = {name: sorted(t for t in targets if t.startswith(forbidden + "."))
                 for name, targets in import_graph().items() if name.startswith(importer + ".")}
    assert {name: targets for name, targets in offenders.items() if targets} == {}


@pytest.mark.parametrize("module", ["banclfp/kiosk/state", "banclfp/kiosk/scan_workflow", "banclfp/recording/record",
                                    "banclfp/history/business_hours", "banclfp/analysis/measures",
                                    "banclfp/verdict/grading", "banclfp/lab/sync"])
def test_pure_cores_import_no_toolkit_and_no_io_shell(module: str) -> None:
    """The pure modules never import Tk, the MQTT client, the kiosk or banc.py."""
    tree = ast.parse((REPO_DIR / f"{module}.py").read_text(encoding="utf-8"))
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert imported.isdisjoint({"tkinter", "customtkinter", "paho", "matplotlib", "ui", "ui_components", "banc",
                                "kiosk_worker", "subprocess", "psutil"})


def main() -> int:
    """Print the top-level modules' import graph (bench/, tests/, testkit/ summarised)."""
    graph = import_graph()
    for name in sorted(graph):
        if "." in name:
            continue
        print(f"{name:15} -> {', '.join(sorted(graph[name])) or '—'}")
    for package in PACKAGES:
        targets = sorted({t.split(".")[0] if "." in t else t for n, ts in graph.items() if n.startswith(package + ".")
                          for t in ts} - {package})
        print(f"{package + '/':15} -> {', '.join(targets)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
