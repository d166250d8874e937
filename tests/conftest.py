"""Shared fixtures: real brokers (embedded amqtt and Mosquitto) and real databases (SQLite and PostgreSQL)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from tests.pg_schema import fresh_schema

if TYPE_CHECKING:
    from fleet.wire.mqtt import BrokerAddress

MOSQUITTO = ("127.0.0.1", 1883)


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1.0)
        return sock.connect_ex((host, port)) == 0


@pytest.fixture(params=["embedded", "mosquitto"])
def broker_url(request: pytest.FixtureRequest) -> str | None:
    """None selects the hub's embedded broker; otherwise the machine's Mosquitto."""
    if request.param == "embedded":
        return None
    if not _port_open(*MOSQUITTO):
        pytest.fail("Mosquitto is not running on 127.0.0.1:1883 (.ci/run starts it)")
    return f"mqtt://{MOSQUITTO[0]}:{MOSQUITTO[1]}"


@pytest.fixture
def mqtt_address(broker_url: str | None) -> Iterator[BrokerAddress]:
    """A running broker for tests that play the hub and devices themselves (`tests.mqtt_broker`): a fresh embedded
    one that checks logins and ACLs, or Mosquitto."""
    from tests.mqtt_broker import running_broker  # imports amqtt: only for the tests that need a broker

    with running_broker(broker_url) as address:
        yield address


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A fresh SQLite file, or a fresh schema in PostgreSQL's ``test`` database (dropped afterwards)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('db') / 'registry.db'}"
        return
    with fresh_schema() as url:
        yield url
