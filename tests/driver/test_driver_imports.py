"""The driver package's imports: no circle, nothing of the server wing, each module importable alone.

The graph is read from the source with ``ast`` (every import, also those inside functions, which
is where the one circle used to hide: ``cli`` → ``pack`` → ``cli``).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / "drivers" / "dynamat_driver"
NAME = "dynamat_driver"


def _module_name(path: Path) -> str:
    parts = [NAME, *path.relative_to(PKG).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def _imports(mod: str, path: Path) -> set[str]:
    """The package's modules that ``mod`` imports (a ``from .x import y`` of a submodule y counts y)."""
    package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            out.add(base)
            out.update(f"{base}.{a.name}" for a in node.names)
    return {m for m in out if m in MODULES and m != mod}


GRAPH = {m: _imports(m, p) for m, p in MODULES.items()}


def _cycle_from(start: str) -> list[str] | None:
    """A path start → … → start in GRAPH, if any (depth-first)."""
    stack, seen = [(start, [start])], set()
    while stack:
        node, path = stack.pop()
        for nxt in GRAPH[node]:
            if nxt == start:
                return path + [start]
            if nxt not in seen and nxt != NAME:  # every module imports the package itself
                seen.add(nxt)
                stack.append((nxt, path + [nxt]))
    return None


def test_the_graph_is_read():
    """The reader sees the imports that are there (so an empty graph cannot pass the next test)."""
    assert "dynamat_driver.protocol" in GRAPH["dynamat_driver.pack"]
    assert "dynamat_driver.timing" in GRAPH["dynamat_driver.pack"]  # an import inside a function
    assert "dynamat_driver.models" in GRAPH["dynamat_driver.cli"]


@pytest.mark.parametrize("mod", sorted(MODULES))
def test_no_import_circle(mod):
    assert _cycle_from(mod) is None, " → ".join(_cycle_from(mod))


def test_driver_never_imports_the_server_wing():
    for mod, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            assert not any(n == "dynamat" or n.startswith("dynamat.") for n in names), (mod, names)


@pytest.mark.parametrize("mod", sorted(MODULES))
def test_each_module_imports_alone(mod):
    """In a fresh interpreter: no module works only because another imported something first."""
    out = subprocess.run([sys.executable, "-c", f"import {mod}"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
