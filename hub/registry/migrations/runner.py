"""Bring a database to the newest schema revision.

A database made by the first release (its tables, no ``alembic_version``) is stamped with the baseline
revision first; a SQLite file that holds data is copied aside (``registry.db.bak-<revision>``) before it
is changed, because SQLite cannot roll DDL back. On PostgreSQL the upgrade runs in one transaction under an
advisory lock, so hub processes starting together migrate once.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, inspect, text

from hub.errors import MigrationError
from hub.private_files import create_private

MIGRATIONS_DIR = Path(__file__).resolve().parent
BASELINE_REVISION = "0001"
# The tables the first release created (revision 0001); finding them without a version table means that release.
FIRST_RELEASE_TABLES = frozenset(
    {
        "deployment",
        "deploymentdevice",
        "device",
        "model",
        "modelversion",
        "rollout",
        "rollout_command",
        "rollout_device_error",
        "rollout_outbox",
        "telemetry_rollup",
        "telemetryrecord",
        "variant",
    }
)
_PG_LOCK_KEY = 0x6564_6765_666C_74  # any constant shared by every hub process: "edgeflt"


@dataclass(frozen=True)
class MigrationResult:
    """What an upgrade did: ``from_revision`` None for an empty database; ``backup`` the copied SQLite file."""

    from_revision: str | None
    to_revision: str
    backup: Path | None = None

    @property
    def changed(self) -> bool:
        """Whether the schema was changed."""
        return self.from_revision != self.to_revision


def alembic_config(connection: Connection | None = None, *, scripts: Path = MIGRATIONS_DIR) -> Config:
    """Alembic configuration for the migrations in ``scripts``, optionally bound to an open ``connection``."""
    config = Config()
    config.set_main_option("script_location", str(scripts))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision(scripts: Path = MIGRATIONS_DIR) -> str:
    """The newest revision in ``scripts`` (by default the ones shipped with this code)."""
    head = ScriptDirectory.from_config(alembic_config(scripts=scripts)).get_current_head()
    if head is None:
        raise MigrationError(f"no migrations in {scripts}")
    return head


def current_revision(connection: Connection) -> str | None:
    """The revision recorded in the database, or None when it has no ``alembic_version``."""
    return MigrationContext.configure(connection).get_current_revision()


def upgrade_to_head(engine: Engine, *, scripts: Path = MIGRATIONS_DIR) -> MigrationResult:
    """Stamp a first-release database, copy a SQLite file with data aside, then upgrade to the head revision."""
    head = head_revision(scripts)
    sqlite = engine.dialect.name == "sqlite"
    with engine.connect() as connection:
        if sqlite:
            # Batch migrations rebuild SQLite tables; enforced foreign keys would cascade or refuse mid-copy.
            connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
            connection.commit()
        try:
            with connection.begin():
                if engine.dialect.name == "postgresql":
                    connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
                recorded = current_revision(connection)
                start = _start_revision(connection, recorded, scripts)
                if start == head and recorded == head:
                    return MigrationResult(start, head)
                backup = None
                if sqlite and start is not None and start != head:
                    backup = _copy_sqlite_aside(engine, start)
                config = alembic_config(connection, scripts=scripts)
                try:
                    if recorded is None and start is not None:
                        command.stamp(config, start)
                    command.upgrade(config, "head")
                except Exception as exc:  # a revision script failed: say where the data is safe
                    kept = f"; the database as it was is in {backup}" if backup else ""
                    raise MigrationError(f"upgrading the schema from {start} to {head} failed: {exc}{kept}") from exc
        finally:
            if sqlite:
                connection.exec_driver_sql("PRAGMA foreign_keys=ON")
                connection.commit()
    return MigrationResult(start, head, backup)


def _start_revision(connection: Connection, recorded: str | None, scripts: Path) -> str | None:
    """The revision the database is at: recorded, the baseline for a first-release one, None when empty."""
    if recorded is not None:
        known = {
            script.revision for script in ScriptDirectory.from_config(alembic_config(scripts=scripts)).walk_revisions()
        }
        if recorded not in known:
            raise MigrationError(
                f"database is at schema revision {recorded}, which this hub does not know (made by a newer hub?)"
            )
        return recorded
    present = set(inspect(connection).get_table_names()) & FIRST_RELEASE_TABLES
    if not present:
        return None
    if present != FIRST_RELEASE_TABLES:
        missing = ", ".join(sorted(FIRST_RELEASE_TABLES - present))
        raise MigrationError(f"database has EdgeFleet tables but no schema revision, and lacks {missing}")
    return BASELINE_REVISION


def _copy_sqlite_aside(engine: Engine, revision: str) -> Path | None:
    database = engine.url.database
    if not database or database == ":memory:":
        return None
    source = Path(database)
    backup = source.with_name(f"{source.name}.bak-{revision}")
    attempt = 1
    while backup.exists():  # never overwrite: an earlier copy may be the only intact one
        attempt += 1
        backup = source.with_name(f"{source.name}.bak-{revision}.{attempt}")
    create_private(backup)  # it holds credential hashes, like the database
    with closing(sqlite3.connect(source)) as src, closing(sqlite3.connect(backup)) as dst:
        src.backup(dst)  # consistent with WAL, unlike copying the file
    return backup
