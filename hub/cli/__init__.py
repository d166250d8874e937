"""The ``edgefleet`` command line: one module per command group, each adding its commands to `app`."""

from __future__ import annotations

import typer

from hub.cli import capture, contract, convert, gate, keys, monitor, pki, policy, rollout, serve, tokens
from hub.cli import hub as hub_commands

__all__ = ["app", "main"]

app = typer.Typer(
    name="edgefleet",
    help="EdgeFleet: convert models per target, ship signed bundles to device fleets, watch them.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

for _group in (hub_commands, serve, convert, contract, gate, rollout, policy, monitor, capture, pki, keys, tokens):
    _group.register(app)


def main() -> None:
    """Entry point of the ``edgefleet`` console script."""
    app()
