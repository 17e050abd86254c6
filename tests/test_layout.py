"""The shape the code keeps (docs/architecture.md): imports go one way, and architectures own their differences."""

import ast

import pytest

from sae_core.saes import ARCHITECTURES
from tests.imports import ROOT, cycles, imported_names, modules


def test_the_import_graph_has_no_cycle():
    assert cycles() == []


@pytest.mark.parametrize("name", [m for m in modules() if m.startswith("sae_core")])
def test_the_library_never_imports_the_app_or_the_web_stack(name):
    outside = {m.split(".")[0] for m in imported_names(modules()[name])}
    assert outside.isdisjoint({"app", "fastapi", "sqlalchemy", "starlette", "jinja2", "alembic"})


def architecture_comparisons(path) -> list[int]:
    """Lines that compare something with an architecture's name (==, !=, in, not in)."""
    names = set(ARCHITECTURES)
    lines = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Compare):
            parts = [node.left, *node.comparators]
            constants = [c for p in parts for c in ([p] if isinstance(p, ast.Constant) else getattr(p, "elts", []))]
            if any(isinstance(c, ast.Constant) and c.value in names for c in constants):
                lines.append(node.lineno)
    return lines


@pytest.mark.parametrize("path", [p for name, p in modules().items() if not name.startswith("sae_core.saes")]
                         + sorted((ROOT / "bench").glob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_architecture_name_is_compared_outside_saes(path):
    assert architecture_comparisons(path) == []
