"""The package rules of docs/architecture.md, checked on the source: no import cycles, arrows point down,
and the agent imports nothing hub-only (its install has no FastAPI, SQL or scipy)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("targets", "fleet", "agent", "hub", "converters")
#: What each top-level package (or subpackage) may import from first-party code.
ALLOWED: dict[str, tuple[str, ...]] = {
    "targets": ("targets",),
    "converters": ("converters", "targets"),
    "fleet.wire": ("fleet.wire", "fleet.errors"),
    "fleet": ("fleet", "targets"),
    "agent": ("agent", "fleet.wire", "fleet.errors", "targets"),
    "hub": ("hub", "fleet", "targets", "converters", "agent"),
}


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


MODULES = _modules()


def _imports(path: Path) -> Iterator[str]:
    """Every first-party module ``path`` imports, at module level or inside functions."""
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            submodules = [f"{node.module}.{alias.name}" for alias in node.names]
            names = [name if name in MODULES else node.module for name in submodules]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        for name in names:
            while name and name not in MODULES:
                name = name.rpartition(".")[0]
            if name:
                yield name


GRAPH = {name: set(_imports(path)) - {name} for name, path in MODULES.items()}


def _rule_for(module: str) -> tuple[str, ...]:
    owner = max((key for key in ALLOWED if module == key or module.startswith(key + ".")), key=len)
    return ALLOWED[owner]


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down(module: str) -> None:
    allowed = _rule_for(module)
    wrong = sorted(dep for dep in GRAPH[module] if not any(dep == ok or dep.startswith(ok + ".") for ok in allowed))
    assert not wrong, f"{module} may import only {allowed}, imports {wrong}"


def test_no_import_cycles() -> None:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for dep in GRAPH[node]:
            if dep not in index:
                visit(dep)
                low[node] = min(low[node], low[dep])
            elif dep in on_stack:
                low[node] = min(low[node], index[dep])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in sorted(GRAPH):
        if module not in index:
            visit(module)
    assert not cycles, f"import cycles: {cycles}"


HUB_ONLY = (
    "hub", "converters", "fastapi", "sqlalchemy", "sqlmodel", "scipy", "torch", "openvino", "uvicorn", "msgspec",
)  # fmt: skip


def test_the_agent_loads_without_any_hub_only_module() -> None:
    """Import every agent module in a fresh interpreter: none of the hub-only packages may come along."""
    import subprocess
    import sys

    agent_modules = sorted(name for name in MODULES if name == "agent" or name.startswith("agent."))
    code = (
        "import importlib, sys\n"
        f"for name in {agent_modules!r}:\n"
        "    importlib.import_module(name)\n"
        f"loaded = sorted({{m.split('.')[0] for m in sys.modules}} & set({HUB_ONLY!r}))\n"
        "print(','.join(loaded))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert result.stdout.strip() == "", f"the agent imports hub-only packages: {result.stdout.strip()}"
