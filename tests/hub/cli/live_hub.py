"""A hub's REST API served over real HTTP for CLI tests: the CLI talks to it as to any hub, with a token."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from hub.api import create_app
from hub.app import Hub
from hub.auth import Role
from tests.http_server import running_server
from tests.hub.auth.clients import token_for


@contextmanager
def serving(hub: Hub, role: Role = Role.ADMIN) -> Iterator[list[str]]:
    """Serve ``hub``'s REST API on an ephemeral port; yield the CLI's ``--hub URL --token T`` for it."""
    with running_server(create_app(hub)) as address:
        yield ["--hub", f"http://{address}", "--token", token_for(hub, role)]
