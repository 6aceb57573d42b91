"""The package boundaries of services/: the API and the notifier are peers over
services/domain and never import each other; the domain imports neither."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SERVICES = Path(__file__).resolve().parents[2] / "services"


def _imports(package: str) -> set[tuple[str, str]]:
    """(module file, imported module) for every import under services/<package>."""
    found: set[tuple[str, str]] = set()
    for path in (SERVICES / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.ImportFrom) and node.module is not None:
                found.add((path.name, node.module))
            elif isinstance(node, ast.Import):
                found.update((path.name, alias.name) for alias in node.names)
    return found


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("api", ("services.notifier",)),
        ("notifier", ("services.api",)),
        ("domain", ("services.api", "services.notifier", "services.builder", "services.executor")),
    ],
)
def test_a_package_does_not_import_its_peers(package: str, forbidden: tuple[str, ...]) -> None:
    crossing = sorted(
        (name, module)
        for name, module in _imports(package)
        if any(module == f or module.startswith(f + ".") for f in forbidden)
    )
    assert crossing == []
