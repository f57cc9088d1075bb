"""The package boundaries (issue #10), read from the code itself.

``manifests/`` is the contract both sides share: pure data, encoding, hashing and verification.
``transport/`` does the network I/O (the OCI distribution client) and may use only the
contract. ``bundler/`` (the hub) and ``importer/`` (the edge) build on both, never on each
other; ``ferry/`` is the command line and the only place that may use typer or rich.
Every import statement of every module counts, including ones inside functions.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("manifests", "transport", "bundler", "importer", "ferry")

#: What each package must not import (top-level module names).
FORBIDDEN: dict[str, frozenset[str]] = {
    "manifests": frozenset({"bundler", "importer", "ferry", "transport", "typer", "rich",
                            "requests", "urllib3", "socket", "subprocess", "http", "kubernetes"}),
    "transport": frozenset({"bundler", "importer", "ferry", "typer", "rich"}),
    "bundler": frozenset({"importer", "ferry", "typer", "rich"}),
    "importer": frozenset({"bundler", "ferry", "typer", "rich"}),
    "ferry": frozenset(),
}


def imported_modules(tree: ast.AST, module: str) -> list[tuple[int, str]]:
    """(line, absolute dotted name) of every import in ``tree``; relative imports resolved
    against ``module`` (the importing module's dotted name)."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")[: -node.level]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            found.append((node.lineno, name))
    return found


def modules() -> list[tuple[str, Path]]:
    out = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).with_suffix("")
            parts = list(rel.parts)
            if parts[-1] == "__init__":
                parts.append("__init__")  # relative imports in a package resolve against the package
            out.append((".".join(parts), path))
    return out


def violations(module: str, source: str) -> list[str]:
    """Every import in ``source`` that breaks the boundary of the package ``module`` is in."""
    package = module.split(".")[0]
    tree = ast.parse(source)
    return [f"{module}:{line} imports {name}" for line, name in imported_modules(tree, module)
            if name.split(".")[0] in FORBIDDEN[package]]


@pytest.mark.parametrize("module, path", modules(), ids=lambda v: v if isinstance(v, str) else "")
def test_module_keeps_to_its_package_boundary(module: str, path: Path) -> None:
    assert violations(module, path.read_text(encoding="utf-8")) == []


def test_transport_imports_only_the_contract() -> None:
    for module, path in modules():
        if module.startswith("transport."):
            ours = {name.split(".")[0] for _, name in imported_modules(ast.parse(path.read_text()), module)}
            assert ours & set(PACKAGES) <= {"manifests", "transport"}, module


def test_every_package_is_checked() -> None:
    found = {m.split(".")[0] for m, _ in modules()}
    assert found == set(PACKAGES)
    assert len(modules()) > 40


@pytest.mark.parametrize("module, source, bad", [
    ("manifests.kube", "from bundler.sources import kube\n", "bundler.sources"),
    ("manifests.model", "def f():\n    import subprocess\n", "subprocess"),
    ("manifests.oci", "from http import client\n", "http"),
    ("manifests.registry", "import requests\n", "requests"),
    ("manifests.x", "from transport.registry import RegistryClient\n", "transport.registry"),
    ("bundler.sources.kube", "from ..export import x\nfrom importer.state import y\n", "importer.state"),
    ("importer.apply.kube", "from bundler.sources.kube import parse_documents\n", "bundler.sources.kube"),
    ("importer.run", "from ferry.ui import human_bytes\n", "ferry.ui"),
    ("bundler.export", "from rich.console import Console\n", "rich.console"),
    ("transport.registry", "from importer import state\n", "importer"),
])
def test_the_check_catches_each_kind_of_breach(module: str, source: str, bad: str) -> None:
    """The rule itself: a breach written any of these ways is reported (so the test can fail)."""
    assert any(v.endswith(f"imports {bad}") for v in violations(module, source))


def test_relative_imports_resolve_inside_the_package() -> None:
    assert imported_modules(ast.parse("from . import SourceArtifact\n"), "bundler.sources.kube") == [
        (1, "bundler.sources")]
    assert imported_modules(ast.parse("from ..state import open_dir\n"), "importer.apply.kube") == [
        (1, "importer.state")]
    assert violations("ferry.ui", "import rich\nfrom bundler.export import export\n") == []
