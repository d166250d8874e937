"""The SQLite database holds credential hashes: its file is created owner-only, by any code path."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from hub.errors import HubError
from hub.registry import Database, Registry


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
