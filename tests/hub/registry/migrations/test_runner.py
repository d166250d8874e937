"""Upgrading at open: empty, first-release and older databases reach the head revision with their data,
a SQLite file is copied aside first, a failed upgrade keeps the data and says where, odd databases are refused."""

from __future__ import annotations

import shutil
import sqlite3
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy

from hub.errors import MigrationError
from hub.registry import Database, Registry
from hub.registry.migrations import BASELINE_REVISION, current_revision, head_revision, upgrade_to_head
from hub.registry.migrations.runner import MIGRATIONS_DIR
from hub.registry.rollouts import RolloutStore
from tests.hub.registry.conftest import FIRST_RELEASE_SECRETS

TEST_REVISION = "9999"
NEXT_REVISION = """
import sqlalchemy as sa
from alembic import op

revision = "{revision}"
down_revision = "{head}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("device") as batch:  # a type change: SQLite rebuilds the referenced table
        batch.add_column(sa.Column("note", sa.String(64), nullable=True))
        batch.alter_column("update_state", existing_type=sa.String(), type_=sa.String(32))
    op.execute("UPDATE device SET note = 'migrated'")
    {fail}


def downgrade() -> None:
    pass
"""


@pytest.fixture
def next_revision(tmp_path: Path) -> Callable[..., Path]:
    """The shipped migrations plus a revision after head (``fail=True``: one that breaks halfway)."""

    def make(*, fail: bool = False) -> Path:
        scripts = tmp_path / "migrations"
        shutil.copytree(MIGRATIONS_DIR, scripts, ignore=shutil.ignore_patterns("__pycache__"))
        body = NEXT_REVISION.format(
            revision=TEST_REVISION, head=head_revision(), fail='raise RuntimeError("disk on fire")' if fail else ""
        )
        (scripts / "versions" / f"{TEST_REVISION}_test_next.py").write_text(body)
        return scripts

    return make


def _revision(url: str) -> str | None:
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as connection:
            return current_revision(connection)
    finally:
        engine.dispose()


def _query(url: str, sql: str) -> list[tuple[object, ...]]:
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as connection:
            return [tuple(row) for row in connection.execute(sqlalchemy.text(sql))]
    finally:
        engine.dispose()


def _columns(url: str, table: str) -> set[str]:
    engine = sqlalchemy.create_engine(url)
    try:
        return {c["name"] for c in sqlalchemy.inspect(engine).get_columns(table)}
    finally:
        engine.dispose()


def test_empty_database_is_built_at_head(database_url: str) -> None:
    db = Database(database_url)
    db.close()
    assert (db.migration.from_revision, db.migration.to_revision, db.migration.backup) == (None, head_revision(), None)
    again = Database(database_url)
    again.close()
    assert not again.migration.changed and again.migration.from_revision == head_revision()


def test_first_release_database_is_stamped_and_keeps_its_data(first_release_url: str) -> None:
    db = Database(first_release_url)
    try:
        assert db.migration.from_revision == BASELINE_REVISION and _revision(first_release_url) == head_revision()
        assert (db.migration.backup is not None) == first_release_url.startswith("sqlite")  # copied aside first
        registry = Registry(db)
        devices = registry.list_devices()
        assert [d.id for d in devices] == ["dev-1", "dev-2", "pi-1"]
        assert devices[0].labels == {"site": "lab", "ring": "0"} and devices[0].active_version == "1.0.0"
        for device_id, secret in FIRST_RELEASE_SECRETS.items():
            assert registry.check_device_secret(device_id, secret)
        assert not registry.check_device_secret("dev-1", FIRST_RELEASE_SECRETS["dev-2"])
        assert [v.version for v in registry.list_versions("digits")] == ["1.1.0", "1.0.0"]
        assert registry.list_variants("digits", "1.1.0")[0].metrics == {"accuracy": 0.97, "latency_ms": 1.5}
        (deployment,) = registry.list_deployments()
        progress = {d.device_id: (d.state, d.detail) for d in registry.deployment_devices(deployment.id)}
        assert progress == {"dev-1": ("done", "installed"), "dev-2": ("failed", "disk full")}
        # the rollup became a window aggregate (migration 0007); the two raw rows predate validation and the
        # standard histogram edges, so no report reads them, and the aggregates leave them out too
        (window,) = registry.windows.rows("digits", "1.0.0")
        assert registry.telemetry_count() == 2 and (window.batches, window.requests) == (1, 6)
        assert registry.windows.device_counts("digits", "1.0.0") == {(window.target, window.window_start): 1}
        store = RolloutStore(db)
        assert store.load("ro-first").rollout_id == "ro-first"
        assert [c.command for c in store.pending_commands()] == ["pause"]
        assert store.errors() == {("dev-2", "ro-first"): "checksum mismatch"}
        registry.add_version("digits", "1.2.0")  # sequences and autoincrement carry on after the old rows
        assert registry.list_versions("digits")[0].version == "1.2.0"
    finally:
        db.close()


def test_older_database_is_copied_aside_then_upgraded(
    first_release_url: str, next_revision: Callable[..., Path]
) -> None:
    engine = sqlalchemy.create_engine(first_release_url)
    try:
        scripts = next_revision()
        result = upgrade_to_head(engine, scripts=scripts)
        again = upgrade_to_head(engine, scripts=scripts)
    finally:
        engine.dispose()
    assert (result.from_revision, result.to_revision) == (BASELINE_REVISION, TEST_REVISION)
    assert not again.changed and again.backup is None
    assert "note" in _columns(first_release_url, "device") and _revision(first_release_url) == TEST_REVISION
    notes = _query(first_release_url, "SELECT id, note FROM device ORDER BY id")
    assert notes == [("dev-1", "migrated"), ("dev-2", "migrated"), ("pi-1", "migrated")]
    # rebuilding the device table with foreign keys off kept the rows that reference it
    assert _query(first_release_url, "SELECT count(*) FROM deploymentdevice") == [(2,)]
    if first_release_url.startswith("sqlite"):
        assert result.backup is not None and result.backup.name == f"registry.db.bak-{BASELINE_REVISION}"
        assert stat.S_IMODE(result.backup.stat().st_mode) == 0o600  # credential hashes: owner-only
        with sqlite3.connect(result.backup) as copy:
            tables = {row[0] for row in copy.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            assert "alembic_version" not in tables and copy.execute("SELECT count(*) FROM device").fetchone() == (3,)
    else:
        assert result.backup is None  # PostgreSQL upgrades in one transaction instead


def test_failed_upgrade_keeps_the_data_and_says_where(
    first_release_url: str, next_revision: Callable[..., Path]
) -> None:
    engine = sqlalchemy.create_engine(first_release_url)
    try:
        with pytest.raises(
            MigrationError, match=rf"from {BASELINE_REVISION} to {TEST_REVISION} failed: disk on fire"
        ) as failure:
            upgrade_to_head(engine, scripts=next_revision(fail=True))
    finally:
        engine.dispose()
    if first_release_url.startswith("sqlite"):
        backup = Path(first_release_url.removeprefix("sqlite:///") + f".bak-{BASELINE_REVISION}")
        assert str(backup) in str(failure.value)
        with sqlite3.connect(backup) as copy:
            assert "note" not in {row[1] for row in copy.execute("PRAGMA table_info(device)")}
            assert copy.execute("SELECT count(*) FROM device").fetchone() == (3,)
    else:  # rolled back as one transaction: still the untouched first-release database
        assert _revision(first_release_url) is None and "note" not in _columns(first_release_url, "device")
    db = Database(first_release_url)  # and this hub still opens it
    try:
        assert len(Registry(db).list_devices()) == 3
    finally:
        db.close()


def test_database_of_a_newer_hub_is_refused(database_url: str, next_revision: Callable[..., Path]) -> None:
    engine = sqlalchemy.create_engine(database_url)
    try:
        upgrade_to_head(engine, scripts=next_revision())
    finally:
        engine.dispose()
    with pytest.raises(MigrationError, match=f"revision {TEST_REVISION}, which this hub does not know"):
        Database(database_url)


def test_some_first_release_tables_without_a_revision_are_refused(database_url: str) -> None:
    engine = sqlalchemy.create_engine(database_url)
    with engine.begin() as connection:
        connection.execute(sqlalchemy.text("CREATE TABLE device (id VARCHAR(63) PRIMARY KEY)"))
    engine.dispose()
    with pytest.raises(MigrationError, match="no schema revision, and lacks deployment, deploymentdevice"):
        Database(database_url)
