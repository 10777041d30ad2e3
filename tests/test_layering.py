"""The house's layers (issue 31): no import cycle between the parts of the `fruits` package, counting
every import (at module level, inside functions, and under TYPE_CHECKING), and the rule that keeps
it so: config imports no other part of fruits but the backends' registry (fruits/registry.py), so
the backends, the lake, the tools and the task bodies all stand above it."""

import ast
import graphlib
from pathlib import Path

import pytest

from airflow_fixtures import REPO

PACKAGE = REPO / "plugins" / "fruits"


def part_of(module: str) -> str | None:
    """fruits.<part>...: the part (a subpackage or a top-level module), None outside fruits."""
    names = module.split(".")
    return names[1] if names[0] == "fruits" and len(names) > 1 else None


def imported(path: Path, module: str) -> set[str]:
    """Every module path imports, wherever the import statement is (relative ones made absolute)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # from . import x, from ..y import z: relative to the module's package
                package = module if path.name == "__init__.py" else module.rpartition(".")[0]
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            found |= {base, *(f"{base}.{alias.name}" for alias in node.names)}
    return found


def part_graph(package: Path) -> dict[str, set[str]]:
    """{part: the other parts it imports}, over every .py file of the package."""
    graph: dict[str, set[str]] = {}
    for path in package.rglob("*.py"):
        rel = path.relative_to(package.parent).with_suffix("")
        module = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        part = part_of(module) or "__init__"
        targets = {part_of(name) for name in imported(path, module)} - {None, part}
        graph.setdefault(part, set()).update(t for t in targets if t)
    return graph


def test_the_parts_of_fruits_import_each_other_without_a_cycle():
    graph = part_graph(PACKAGE)
    assert {"config", "backends", "lake", "tools", "registry", "pipeline"} <= set(graph)
    order = list(graphlib.TopologicalSorter(graph).static_order())  # CycleError names the cycle
    assert order.index("config") < order.index("backends")


def test_config_imports_nothing_of_fruits_but_the_registry():
    assert part_graph(PACKAGE)["config"] <= {"registry"}, part_graph(PACKAGE)["config"]
    assert part_graph(PACKAGE)["registry"] == set()


def test_the_check_sees_a_cycle_made_by_a_lazy_or_type_checking_import(tmp_path):
    """A check of module-level imports alone would pass this package: each back edge hides in a function
    or under TYPE_CHECKING."""
    fruits = tmp_path / "fruits"
    for part, text in {
        "config": "def f():\n    from fruits.backends import x\n",
        "backends": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from fruits.config.run import y\n",
    }.items():
        (fruits / part).mkdir(parents=True)
        (fruits / part / "__init__.py").write_text(text)
    (fruits / "__init__.py").write_text("")
    with pytest.raises(graphlib.CycleError):
        list(graphlib.TopologicalSorter(part_graph(fruits)).static_order())
