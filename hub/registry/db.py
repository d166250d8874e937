"""Database engine: SQLite file by default, PostgreSQL (or anything SQLAlchemy speaks) by URL."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DisconnectionError, OperationalError
from sqlmodel import Session, create_engine

from hub.errors import HubError
from hub.private_files import create_private
from hub.registry.migrations import MigrationResult, upgrade_to_head


def normalise_url(url: str) -> str:
    """Use psycopg 3 for ``postgresql://`` URLs."""
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


#: seconds a pooled PostgreSQL connection may sit idle before it is pinged at checkout
PING_AFTER_IDLE_S = 2.0
_IDLE_SINCE = "edgefleet_idle_since"


class Database:
    """Owns the engine and brings the schema to this hub's revision (`hub.registry.migrations`).

    ``migration`` says what opening did: the revision found (None for an empty database), the one now
    current, and the SQLite copy made before changing a database that held data.
    """

    def __init__(self, url: str, *, ping_after_idle_s: float = PING_AFTER_IDLE_S) -> None:
        self.url = normalise_url(url)
        self.ping_after_idle_s = ping_after_idle_s
        self.pings = 0
        is_sqlite = self.url.startswith("sqlite")
        connect_args = {"check_same_thread": False, "timeout": 30} if is_sqlite else {}
        self.engine: Engine = create_engine(self.url, connect_args=connect_args)
        if is_sqlite:
            _create_sqlite_file(self.engine)
            event.listen(self.engine, "connect", _sqlite_pragmas)
        else:
            event.listen(self.engine, "checkin", _note_checkin)
            event.listen(self.engine, "checkout", self._ping_if_idle)
        try:
            self.migration: MigrationResult = upgrade_to_head(self.engine)
        except OperationalError as exc:
            raise HubError(f"cannot open database {self.engine.url.render_as_string()}: {exc.orig}") from exc

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session that commits on success and rolls back on error."""
        with Session(self.engine, expire_on_commit=False) as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    def close(self) -> None:
        """Release all pooled connections."""
        self.engine.dispose()

    def _ping_if_idle(self, dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        """Check a pooled connection that sat idle before handing it out; a dead one is replaced by the pool.

        SQLAlchemy's ``pool_pre_ping`` pings at every checkout: a round trip per transaction, which under load
        was a seventh of a hub's database time. Connections die while idle (a database restart, a cut link, an
        idle timeout), so only those idle longer than ``ping_after_idle_s`` are pinged."""
        idle_since = record.info.get(_IDLE_SINCE)
        if idle_since is None or time.monotonic() - idle_since < self.ping_after_idle_s:
            return
        self.pings += 1
        try:
            cursor = dbapi_connection.cursor()
            try:
                cursor.execute("SELECT 1")
            finally:
                cursor.close()
        except Exception as exc:  # any failure of the ping: this connection is not to be trusted
            del record.info[_IDLE_SINCE]  # its replacement is fresh: no ping
            raise DisconnectionError(f"pooled connection failed its ping: {exc}") from exc


def _note_checkin(_dbapi_connection: Any, record: Any) -> None:
    record.info[_IDLE_SINCE] = time.monotonic()


def _create_sqlite_file(engine: Engine) -> None:
    """Create the database file owner-only before SQLite does (it holds credential hashes); SQLite gives its
    -wal and -shm files the same mode."""
    database = engine.url.database
    if database and database != ":memory:" and not database.startswith("file:"):
        try:
            create_private(Path(database))
        except OSError as exc:
            raise HubError(f"cannot create database file {database}: {exc.strerror or exc}") from exc


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
