"""The code's layering: no import cycles between tuneloop's modules (counting imports inside
functions and under TYPE_CHECKING), and config and core at the bottom."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.helpers import ROOT

PACKAGES = ("flows", "tasks")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Each of our modules -> our modules it imports anywhere in its file."""
    modules = {module_name(path): path for package in PACKAGES for path in (ROOT / package).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        imported: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                continue
            imported |= {target for target in targets if target in modules and target != name}
        graph[name] = imported
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path of module names, or None."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node], _ = "open", stack.append(node)
        for child in sorted(graph[node]):
            if state.get(child) == "open":
                return [*stack[stack.index(child) :], child]
            if child not in state and (found := visit(child)):
                return found
        state[node], _ = "done", stack.pop()
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def package(module: str) -> str:
    """`tasks.sweep.rounds` -> `tasks.sweep`; `flows.train` -> `flows`."""
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "tasks" and len(parts) > 2 else parts[0]


def test_the_finder_sees_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_module_import_cycles() -> None:
    assert find_cycle(import_graph()) is None


def test_no_cycles_between_the_concern_folders() -> None:
    graph = import_graph()
    folders: dict[str, set[str]] = {}
    for module, imported in graph.items():
        folders.setdefault(package(module), set()).update(package(other) for other in imported)
    for folder, imported in folders.items():
        imported.discard(folder)
    assert find_cycle(folders) is None


def test_config_and_core_import_nothing_above_them() -> None:
    graph = import_graph()
    for module, imported in graph.items():
        if module.startswith("tasks.core"):
            assert all(other.startswith("tasks.core") for other in imported), (module, imported)
        if module.startswith("tasks.config"):
            assert all(other.startswith(("tasks.config", "tasks.core")) for other in imported), (module, imported)


def test_tasks_never_import_flows() -> None:
    graph = import_graph()
    assert not [
        (m, o) for m, imported in graph.items() if m.startswith("tasks") for o in imported if o.startswith("flows")
    ]
