"""What every hub-talking command shares: the global ``--hub``/``--token`` options, a `HubClient`, one-line
errors (exit status 1) and printing either JSON (``--json``) or a table."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import typer

from hub.cli.client import HubCallError, HubClient, connection

__all__ = ["JSON_OPTION", "emit", "hub_session", "set_target"]

JSON_OPTION = typer.Option(False, "--json", help="print JSON")
_target: dict[str, str | None] = {"hub": None, "token": None}


def set_target(hub: str | None, token: str | None) -> None:
    """Remember the global ``--hub`` and ``--token`` options for the command that runs."""
    _target.update(hub=hub, token=token)


@contextmanager
def hub_session() -> Iterator[HubClient]:
    """A client of the hub the options, environment or config file name; a `HubCallError` inside becomes
    ``error: ...`` on stderr and exit status 1."""
    try:
        client = HubClient(connection(_target["hub"], _target["token"]))
    except HubCallError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    try:
        yield client
    except HubCallError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    finally:
        client.close()


def emit(data: Any, as_json: bool, render: Callable[[Any], None]) -> None:
    """Print ``data`` as JSON with ``--json``, else through ``render``."""
    if as_json:
        typer.echo(json.dumps(data, indent=2))
    else:
        render(data)
