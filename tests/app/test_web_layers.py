"""The web app's layers import one way: routes use presenters and crud, presenters use crud, crud uses neither,
and no route imports another (shared request parameters live in app/deps.py)."""

import ast
from pathlib import Path

import pytest

APP = Path(__file__).resolve().parents[2] / "app"


def app_imports(path: Path) -> set[str]:
    """The app modules a file imports, as dotted names under app (relative imports resolved)."""
    package = ["app", *path.relative_to(APP).parent.parts]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *(node.module.split(".") if node.module else [])])
            found |= {module} | {f"{module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return {name for name in found if name == "app" or name.startswith("app.")}


def files(package: str) -> list[Path]:
    return sorted((APP / package).glob("*.py"))


@pytest.mark.parametrize("path", files("routes"), ids=lambda p: p.name)
def test_a_route_imports_no_other_route(path):
    if path.name == "__init__.py":  # it gathers the routers
        return
    assert {m for m in app_imports(path) if m.startswith("app.routes")} == set()


@pytest.mark.parametrize("path", files("crud") + files("presenters"), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_crud_and_presenters_import_no_route_and_crud_no_presenter(path):
    forbidden = ("app.routes", "app.presenters") if path.parent.name == "crud" else ("app.routes",)
    assert {m for m in app_imports(path) if m.startswith(forbidden)} == set()
