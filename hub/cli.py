"""The ``edgefleet`` command line. Each area adds its commands from its own ``cli_*`` module."""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="edgefleet",
    help="EdgeFleet: convert models per target, ship signed bundles to device fleets, watch them.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

# Modules exposing ``register(app: typer.Typer) -> None``. Each area owns one entry.
COMMAND_MODULES: tuple[str, ...] = (
    "hub.cli_hub",
    "hub.cli_serve",
    "hub.cli_convert",
    "hub.cli_rollout",
    "hub.cli_monitor",
)


def _register_all() -> None:
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(app)


_register_all()


def main() -> None:
    """Entry point of the ``edgefleet`` console script."""
    app()
