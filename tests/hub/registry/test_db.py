"""The SQLite database holds credential hashes: its file is created owner-only, by any code path. A hub started
on a database the first release made migrates it at open and serves the old data."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from sqlalchemy import text

from fleet.wire.mqtt import PahoBroker
from hub.app import Hub
from hub.config import HubSettings
from hub.errors import HubError
from hub.registry import Database, Registry
from hub.registry.migrations import head_revision
from tests.hub.auth.clients import api_client
from tests.hub.registry.conftest import FIRST_RELEASE_SECRETS
from tests.pg_schema import fresh_schema


def test_sqlite_file_is_created_owner_only(tmp_path: Path) -> None:
    previous = os.umask(0)
    try:
        db = Database(f"sqlite:///{tmp_path / 'registry.db'}")  # as `edgefleet devices add` opens it
        Registry(db).provision_device("cam-1", "rpi4-arm64")
        db.close()
    finally:
        os.umask(previous)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.glob("registry.db*")}
    assert modes["registry.db"] == 0o600 and set(modes.values()) == {0o600}


def test_sqlite_file_in_a_missing_directory_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(HubError, match=r"cannot create database file .*No such file or directory"):
        Database(f"sqlite:///{tmp_path / 'absent' / 'registry.db'}")


def test_hub_on_a_first_release_database_serves_its_devices(first_release_url: str, tmp_path: Path) -> None:
    hub = Hub(HubSettings(data_dir=tmp_path / "hub", database_url=first_release_url))
    assert hub.db.migration.to_revision == head_revision()
    hub.start()
    try:
        assert hub.registry.telemetry_count() == 2
        with api_client(hub) as client:
            assert client.get("/health").status_code == 200
            devices = client.get("/devices")
            assert devices.status_code == 200 and [d["id"] for d in devices.json()] == ["dev-1", "dev-2", "pi-1"]
        # a device logs in to the hub's broker with the credential the first release gave it
        address = hub.broker_address
        device = PahoBroker(address.with_credentials("dev-1", FIRST_RELEASE_SECRETS["dev-1"]), client_id="dev-1")
        try:
            assert device.connected
        finally:
            device.close()
        assert not hub.registry.check_device_secret("dev-1", FIRST_RELEASE_SECRETS["pi-1"])
    finally:
        hub.stop()


def _backend_pid(db: Database) -> int:
    with db.engine.connect() as connection:
        return int(connection.execute(text("SELECT pg_backend_pid()")).scalar_one())


def test_a_pooled_postgresql_connection_killed_while_idle_is_replaced_unnoticed() -> None:
    with fresh_schema() as url:
        db = Database(url, ping_after_idle_s=0.0)  # every checkout of a used connection counts as idle
        other = Database(url)
        try:
            pid = _backend_pid(db)  # back in the pool
            pings = db.pings
            with other.engine.begin() as connection:  # the database drops it (a restart, an idle timeout)
                connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            assert Registry(db).existing_devices(["cam-1"]) == set()  # no error: the pool replaced it
            assert db.pings == pings + 1
            assert _backend_pid(db) != pid
        finally:
            db.close()
            other.close()


def test_a_connection_in_steady_use_is_not_pinged_at_every_checkout() -> None:
    with fresh_schema() as url:
        db = Database(url, ping_after_idle_s=3600.0)
        try:
            for _ in range(20):
                Registry(db).existing_devices(["cam-1"])
            assert db.pings == 0  # pool_pre_ping cost a round trip each time
        finally:
            db.close()
