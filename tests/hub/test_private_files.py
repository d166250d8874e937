"""Every secret the hub writes is owner-only from the moment it exists, whatever the process umask."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from hub.app import Hub
from hub.config import HubSettings
from hub.private_files import create_private, private_dir, write_private


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(autouse=True)
def open_umask() -> Iterator[None]:
    previous = os.umask(0)
    yield
    os.umask(previous)


def test_a_new_hub_keeps_its_data_dir_secret_database_and_keys_owner_only(tmp_path: Path) -> None:
    hub = Hub(HubSettings(data_dir=tmp_path / "hub"))
    try:
        hub.registry.provision_device("cam-1", "rpi4-arm64")  # a write: SQLite makes its -wal and -shm files
    finally:
        hub.db.close()
    data = tmp_path / "hub"
    assert _mode(data) == 0o700
    assert _mode(data / "hub.secret") == 0o600 and (data / "hub.secret").read_text() == hub.hub_secret
    assert {_mode(p) for p in data.glob("registry.db*")} == {0o600}
    assert _mode(data / "tuf" / "keys") == 0o700
    assert {_mode(p) for p in (data / "tuf" / "keys").iterdir()} == {0o600}


def test_an_existing_data_dir_is_tightened_and_the_secret_kept(tmp_path: Path) -> None:
    (tmp_path / "hub").mkdir(mode=0o755)
    first = Hub(HubSettings(data_dir=tmp_path / "hub"))
    first.db.close()
    again = Hub(HubSettings(data_dir=tmp_path / "hub"))
    again.db.close()
    assert _mode(tmp_path / "hub") == 0o700 and again.hub_secret == first.hub_secret


def test_helpers_create_owner_only_files_atomically(tmp_path: Path) -> None:
    directory = private_dir(tmp_path / "a" / "b")
    assert _mode(directory) == 0o700
    assert create_private(directory / "f") and not create_private(directory / "f")
    assert _mode(directory / "f") == 0o600
    (directory / ".g.tmp").write_text("leftover")
    (directory / ".g.tmp").chmod(0o666)
    write_private(directory / "g", b"secret")
    assert (directory / "g").read_bytes() == b"secret" and _mode(directory / "g") == 0o600
    assert sorted(p.name for p in directory.iterdir()) == ["f", "g"]
