"""The package's layers: each module imports only from its own layer and those below, and no
module imports itself back through others. Read from the import statements (module level and
inside functions alike), so an upward import fails here before it can make a circle.

Layers, bottom to top: the foundation (io, the config and its schema, the allocator, vertex
partitions), the simulation, the readers of the papers' public data sets, the machine-learning
pieces, the studies, and the commands (the
CLI, each package's ``commands`` module, the run's config across studies, the tiny data set
of the tests and ``pipeline inspect``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

LAYERS = ("foundation", "simulation", "datasets", "ml", "studies", "commands")
COMMANDS = {"pipeline.cli", "pipeline.__main__", "pipeline.commands", "pipeline.run_config", "pipeline.tiny",
            "pipeline.inspect"}


def layer(module: str) -> str:
    """The layer of a ``pipeline`` module."""
    parts = module.split(".")
    if module in COMMANDS or parts[-1] == "commands":
        return "commands"
    if len(parts) > 1 and parts[1] in ("simulation", "datasets", "ml", "studies"):
        return parts[1]
    return "foundation"


def modules() -> dict[str, Path]:
    found = {}
    for path in (SRC / "pipeline").rglob("*.py"):
        parts = path.relative_to(SRC).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(name: str, path: Path) -> set[str]:
    """The ``pipeline`` modules (or packages) a module imports."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    known = modules()
    return {module for module in found if module in known and module != name}


MODULES = modules()


@pytest.mark.parametrize("name", sorted(MODULES))
def test_a_module_imports_nothing_from_a_layer_above_it(name):
    own = LAYERS.index(layer(name))
    upward = sorted(m for m in imports(name, MODULES[name]) if LAYERS.index(layer(m)) > own and m != "pipeline")
    assert not upward, f"{name} ({layer(name)}) imports from above: {upward}"


def test_a_study_imports_another_only_where_it_declares_reading_it():
    from pipeline.studies import study

    for name, path in MODULES.items():
        parts = name.split(".")
        if len(parts) < 4 or parts[1] != "studies":
            continue
        for module in imports(name, path):
            other = module.split(".")
            if len(other) >= 3 and other[1] == "studies" and other[2] not in (parts[2], "descriptor"):
                assert other[2] in study(parts[2]).reads, f"{name} imports {module}, undeclared in its study's reads"


def test_no_import_circles():
    graph = {name: {m for m in imports(name, path)} for name, path in MODULES.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for target in graph[node]:
            if state.get(target) == 1:
                raise AssertionError("import circle: " + " -> ".join(stack[stack.index(target):] + [target]))
            if target not in state:
                visit(target)
        stack.pop()
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name)


def test_the_layers_are_read_as_declared():
    assert layer("pipeline.io.hdf5") == "foundation" and layer("pipeline.config") == "foundation"
    assert layer("pipeline.simulation.tracker") == "simulation" and layer("pipeline.simulation.commands") == "commands"
    assert layer("pipeline.studies.vertexing.models") == "studies"
    assert layer("pipeline.studies.vertexing.commands") == "commands"
    assert imports("pipeline.studies", MODULES["pipeline.studies"]) == {"pipeline.studies.descriptor", "pipeline.config"}
