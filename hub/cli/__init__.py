"""The ``edgefleet`` command line: one module per command group, each adding its commands to `app`.

Every command that manages hub state talks to the hub's REST API (`hub.cli.remote`); only the bootstrap commands
``hub serve`` and ``hub migrate`` (`hub.cli.hub`) open the hub's database. Local tools (convert, gate, contract,
targets, serve, pki, keys, demo) work on files. Every command takes ``--json`` (`hub.cli.output`).
"""

from __future__ import annotations

import typer

from hub.cli import (
    broker,
    capture,
    contract,
    convert,
    demo,
    devices,
    gate,
    keys,
    models,
    monitor,
    pki,
    policy,
    rollout,
    serve,
    tokens,
)
from hub.cli import hub as hub_commands
from hub.cli.output import OneLineErrors
from hub.cli.remote import set_target

__all__ = ["app", "main"]

app = typer.Typer(
    name="edgefleet",
    help="EdgeFleet: convert models per target, ship signed bundles to device fleets, watch them.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    cls=OneLineErrors,
)


@app.callback()
def _hub_options(
    hub: str | None = typer.Option(
        None, "--hub", help="the hub's URL (else $EDGEFLEET_HUB, ~/.config/edgefleet/cli.toml, http://127.0.0.1:8600)"
    ),
    token: str | None = typer.Option(
        None, "--token", help="API token (else $EDGEFLEET_TOKEN or the config file)", show_default=False
    ),
) -> None:
    """EdgeFleet: convert models per target, ship signed bundles to device fleets, watch them."""
    set_target(hub, token)


for _group in (
    hub_commands,
    models,
    broker,
    demo,
    devices,
    serve,
    convert,
    contract,
    gate,
    rollout,
    policy,
    monitor,
    capture,
    pki,
    keys,
    tokens,
):
    _group.register(app)


def main() -> None:
    """Entry point of the ``edgefleet`` console script."""
    app()
