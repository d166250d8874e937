"""Rules every ``edgefleet`` command keeps: it takes ``--json``, its ``--help`` renders, and only the bootstrap
commands reach the hub's database. The last is checked on the source, like tests/test_architecture.py: a command
module and everything it imports, at any depth and inside functions too (but not under ``if TYPE_CHECKING``), stays
clear of the registry, the `Hub`, the hub's settings and SQL."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

from hub.cli import app

ROOT = Path(__file__).resolve().parents[3]
#: Command modules that may open the hub's database, and why.
BOOTSTRAP = {
    "hub.cli.hub": "hub serve and hub migrate run the hub on its database",
    "hub.cli.demo": "the demo runs a throwaway hub of its own in a temporary directory",
}
DATABASE = ("hub.registry", "hub.app", "hub.config", "sqlalchemy", "sqlmodel", "alembic", "psycopg")


def _commands(group: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, Any]]:
    for name, command in sorted(group.commands.items()):
        here = (*path, name)
        if hasattr(command, "commands"):
            if command.invoke_without_command:  # a group that is also a command (`serve`)
                yield " ".join(here), command
            yield from _commands(command, here)
        else:
            yield " ".join(here), command


COMMANDS = dict(_commands(typer.main.get_command(app)))


def test_the_walk_finds_every_group() -> None:
    groups = {name.split()[0] for name in COMMANDS}
    assert {"hub", "models", "devices", "rollout", "tokens", "policy", "capture", "broker", "keys", "pki"} <= groups
    assert len(COMMANDS) > 45


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_takes_json(name: str) -> None:
    options = {opt for param in COMMANDS[name].params for opt in getattr(param, "opts", [])}
    assert "--json" in options, f"`edgefleet {name}` has no --json"


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_renders_its_help(name: str) -> None:
    """Help texts go through rich markup: a bracketed part (``s3://bucket[/prefix]``) made ``--help`` crash."""
    result = CliRunner().invoke(app, [*name.split(), "--help"])
    assert result.exit_code == 0 and "Usage:" in result.output, result.output


def _module_path(name: str) -> Path | None:
    base = ROOT.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports when it runs: module level and inside functions, not for type checking;
    an imported module's parent packages too (importing runs their ``__init__``)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    parents = {name.rsplit(".", i)[0] for name in found for i in range(name.count(".") + 1)}
    return found | parents


def _reaches_database(module: str) -> list[str] | None:
    """The import chain from ``module`` to a database module, or None."""
    chains = {module: [module]}
    queue = [module]
    while queue:
        current = queue.pop()
        path = _module_path(current)
        if path is None:
            continue
        for name in sorted(_imports(path)):
            if name in chains or name == "hub.cli":  # the package only assembles the app from the groups
                continue
            chains[name] = [*chains[current], name]
            if any(name == bad or name.startswith(bad + ".") for bad in DATABASE):
                return chains[name]
            if _module_path(name) is not None:
                queue.append(name)
    return None


CLI_MODULES = sorted(f"hub.cli.{path.stem}" for path in (ROOT / "hub" / "cli").glob("*.py") if path.stem != "__init__")


@pytest.mark.parametrize("module", [m for m in CLI_MODULES if m not in BOOTSTRAP])
def test_only_bootstrap_commands_reach_the_database(module: str) -> None:
    chain = _reaches_database(module)
    assert chain is None, f"{module} reaches the database: {' -> '.join(chain or [])}"


def test_the_check_sees_a_bootstrap_module_reach_the_database() -> None:
    chain = _reaches_database("hub.cli.hub")
    assert chain is not None and chain[0] == "hub.cli.hub"


def test_the_cli_starts_without_the_heavy_libraries() -> None:
    """`edgefleet devices list` should not pay for scipy, SQL or numpy: commands import them when they run."""
    import subprocess
    import sys

    heavy = ("scipy", "sqlalchemy", "sqlmodel", "numpy", "torch", "fastapi", "cryptography", "onnxruntime")
    probe = f"import sys, hub.cli; print(','.join(m for m in {heavy!r} if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == ""
