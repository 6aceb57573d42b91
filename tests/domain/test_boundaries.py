"""The package boundaries of services/: the services (API, builder, executor, notifier,
projector) are peers over services/domain and never import each other; the domain
imports none of them."""

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


_SERVICES = ("api", "builder", "executor", "notifier", "projector")


@pytest.mark.parametrize("package", [*_SERVICES, "domain"])
def test_a_package_does_not_import_its_peers(package: str) -> None:
    forbidden = [f"services.{peer}" for peer in _SERVICES if peer != package]
    crossing = sorted(
        (name, module)
        for name, module in _imports(package)
        if any(module == f or module.startswith(f + ".") for f in forbidden)
    )
    assert crossing == []
