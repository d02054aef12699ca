"""The house as docs/architecture.md draws it: every module in one layer, imports only from its layer or below, no cycle.

The layer table is read from docs/architecture.md itself (the backticked names of its "modules" column; ``x.*``
is every module under ``x``), so the drawing and the code cannot drift apart. Imports are parsed with ``ast``,
including those inside functions and under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).parents[1]
PACKAGES = {"mms_manifolds": ROOT / "mms_manifolds", "mms_manifolds.adapters": ROOT / "adapters"}


def _modules() -> dict[str, Path]:
    modules = {}
    for prefix, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join([prefix, *parts])] = path
    return modules


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """The package's modules that ``name`` imports (a package's ``__init__`` where a package is imported)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets = []
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            # ``from .linalg import limits`` imports a module; ``from .linalg import GramOperator`` the package
            targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in MODULES else module for a in node.names]
        elif isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        found.update(target for target in targets if target in MODULES and target != name)
    return found


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _layers() -> list[tuple[str, set[str]]]:
    """``(layer, modules)`` from the table of docs/architecture.md, bottom first."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    table = text.split("| layer | modules | owns |", 1)[1].split("\n\n", 1)[0]
    layers = []
    for row in table.strip().splitlines()[1:]:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        members = set()
        for token in re.findall(r"`([^`]+)`", cells[1]):
            full = "mms_manifolds" if token == "mms_manifolds" else f"mms_manifolds.{token}"
            if full.endswith(".*"):
                members.update(m for m in MODULES if m == full[:-2] or m.startswith(full[:-1]))
            else:
                members.add(full)
        layers.append((cells[0], members))
    return layers


LAYERS = _layers()


def test_every_module_is_in_exactly_one_layer_of_the_drawing():
    placed = [module for _, members in LAYERS for module in members]
    assert sorted(set(placed)) == sorted(placed), "a module is drawn in two layers"
    assert set(placed) - set(MODULES) == set(), "the drawing names modules that do not exist"
    assert set(MODULES) - set(placed) == set(), "modules missing from docs/architecture.md's layer table"


def test_no_module_imports_from_a_layer_above_its_own():
    level = {module: index for index, (_, members) in enumerate(LAYERS) for module in members}
    upward = [
        f"{module} ({LAYERS[level[module]][0]}) imports {target} ({LAYERS[level[target]][0]})"
        for module, targets in GRAPH.items()
        for target in targets
        if level[target] > level[module]
    ]
    assert upward == []


def test_the_import_graph_has_no_cycle():
    state: dict[str, int] = {}  # 1 on the current path, 2 done

    def visit(module: str, path: list[str]) -> list[str] | None:
        state[module] = 1
        for target in sorted(GRAPH[module]):
            if state.get(target) == 1:
                return [*path, module, target]
            if target not in state and (cycle := visit(target, [*path, module])):
                return cycle
        state[module] = 2
        return None

    for module in sorted(GRAPH):
        if module not in state:
            assert visit(module, []) is None, "import cycle"


def test_the_parser_sees_imports_it_must_see():
    """Guards the test itself: known edges are found, so an empty result is not a parser that finds nothing."""
    assert "mms_manifolds.linalg.limits" in GRAPH["mms_manifolds.linalg.operator"]
    assert "mms_manifolds.subproblem" in GRAPH["mms_manifolds.solvers.gauss_newton"]
    assert "mms_manifolds.energies" in GRAPH["mms_manifolds.distributed"]
    assert "mms_manifolds.linalg" in GRAPH["mms_manifolds.manifold"]
