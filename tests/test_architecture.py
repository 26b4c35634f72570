"""The shape of the package: imports flow one way, modules stay small, no private name crosses modules.

The import graph is read from the source (every ``import`` statement, at the top or inside a
function), so a lazy import that closes a cycle is caught as well.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "aegmm"
MAX_MODULE_LINES = 400
# lower layers never import higher ones: data -> preprocess -> nn -> train -> mixture -> pipeline ...
LOWER_LAYERS = {
    "aegmm.data": (
        "aegmm.nn",
        "aegmm.train",
        "aegmm.mixture",
        "aegmm.pipeline",
        "aegmm.evaluation",
        "aegmm.cli",
    ),
    "aegmm.preprocess": ("aegmm.data", "aegmm.nn", "aegmm.pipeline", "aegmm.evaluation", "aegmm.cli"),
    "aegmm.nn": ("aegmm.data", "aegmm.train", "aegmm.pipeline", "aegmm.evaluation", "aegmm.cli"),
    "aegmm.mixture": ("aegmm.data", "aegmm.nn", "aegmm.train", "aegmm.pipeline", "aegmm.evaluation"),
    "aegmm.candidates": ("aegmm.data", "aegmm.nn", "aegmm.train", "aegmm.mixture", "aegmm.pipeline"),
    "aegmm.embedding": ("aegmm.data", "aegmm.nn", "aegmm.train", "aegmm.mixture", "aegmm.pipeline"),
    "aegmm.scaling": ("aegmm.data", "aegmm.nn", "aegmm.train", "aegmm.mixture", "aegmm.pipeline"),
    "aegmm.mixture_arrays": ("aegmm.data", "aegmm.nn", "aegmm.train", "aegmm.mixture", "aegmm.pipeline"),
    "aegmm.pipeline": ("aegmm.evaluation", "aegmm.cli", "aegmm.runs"),
    "aegmm.evaluation": ("aegmm.cli",),
}


def _modules() -> dict[str, Path]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


MODULES = _modules()


def _imports(name: str) -> list[tuple[str, str]]:
    """(imported module, imported name) for every import statement of module ``name``."""
    path = MODULES[name]
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(alias.name, "") for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:
                submodule = f"{module}.{alias.name}"
                found.append((submodule, "") if submodule in MODULES else (module, alias.name))
    return found


def _graph() -> dict[str, set[str]]:
    return {
        name: {target for target, _ in _imports(name) if target in MODULES and target != name}
        for name in MODULES
    }


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path, or None."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return path[path.index(target) :] + [node, target] if target in path else [node, target]
            if target not in state and (found := visit(target, path + [node])):
                return found
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start, [])):
            return found
    return None


def test_the_cycle_check_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) is not None
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_module_imports_itself_back_through_others():
    assert MODULES and _cycle(_graph()) is None, " -> ".join(_cycle(_graph()) or [])


@pytest.mark.parametrize("lower", sorted(LOWER_LAYERS))
def test_lower_layers_never_import_higher_ones(lower):
    graph = _graph()
    members = [name for name in graph if name == lower or name.startswith(lower + ".")]
    wrong = {
        (name, target)
        for name in members
        for target in graph[name]
        if any(target == high or target.startswith(high + ".") for high in LOWER_LAYERS[lower])
    }
    assert members and not wrong


def test_no_private_name_is_imported_from_another_module():
    private = {
        (name, f"{module}.{imported}")
        for name in MODULES
        for module, imported in _imports(name)
        if module.startswith("aegmm") and imported.startswith("_") and not imported.startswith("__")
    }
    assert not private


def test_modules_stay_under_the_size_limit():
    sizes = {name: len(path.read_text().splitlines()) for name, path in MODULES.items()}
    assert {name: n for name, n in sizes.items() if n > MAX_MODULE_LINES} == {}
