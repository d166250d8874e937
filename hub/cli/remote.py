"""What every hub-talking command shares: the global ``--hub``/``--token`` options and a `HubClient` whose
failures end the command with one line (`hub.cli.output.fail`)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from hub.cli.client import HubCallError, HubClient, connection
from hub.cli.output import fail

__all__ = ["hub_session", "set_target"]

_target: dict[str, str | None] = {"hub": None, "token": None}


def set_target(hub: str | None, token: str | None) -> None:
    """Remember the global ``--hub`` and ``--token`` options for the command that runs."""
    _target.update(hub=hub, token=token)


@contextmanager
def hub_session() -> Iterator[HubClient]:
    """A client of the hub the options, environment or config file name; a `HubCallError` inside ends the
    command with one line on stderr and exit status 1."""
    try:
        client = HubClient(connection(_target["hub"], _target["token"]))
    except HubCallError as exc:
        fail(exc)
    try:
        yield client
    except HubCallError as exc:
        fail(exc)
    finally:
        client.close()
