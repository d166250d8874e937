"""Shared fixtures: real brokers (embedded amqtt and Mosquitto) and real databases (SQLite and PostgreSQL)."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator

import pytest

MOSQUITTO = ("127.0.0.1", 1883)
POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


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


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A fresh SQLite file, or a fresh schema in PostgreSQL's ``test`` database (dropped afterwards)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('db') / 'registry.db'}"
        return
    import sqlalchemy

    if not _port_open("127.0.0.1", 5432):
        pytest.fail("PostgreSQL is not running on 127.0.0.1:5432 (.ci/run starts it)")
    schema = f"t_{uuid.uuid4().hex[:10]}"
    admin = sqlalchemy.create_engine(POSTGRES_URL)
    with admin.begin() as conn:
        conn.execute(sqlalchemy.text(f"CREATE SCHEMA {schema}"))
    try:
        yield f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(sqlalchemy.text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()
