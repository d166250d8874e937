"""The revisions themselves: head builds exactly the models' schema (``alembic check``), one linear history,
and the baseline builds exactly the first release's schema."""

from __future__ import annotations

from typing import Any

import sqlalchemy
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlmodel import SQLModel

from hub.registry import Database
from hub.registry.migrations import BASELINE_REVISION, alembic_config
from tests.hub.registry.conftest import load_first_release


def _differences(engine: sqlalchemy.Engine) -> list[Any]:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return compare_metadata(context, SQLModel.metadata)


def test_head_revision_matches_the_models(database_url: str) -> None:
    db = Database(database_url)
    try:
        differences = _differences(db.engine)
        assert not differences, f"tables changed without a migration (add one, see docs/operations.md): {differences}"
        with db.engine.begin() as connection:
            connection.execute(sqlalchemy.text("DROP INDEX ix_rollout_state"))
        assert [diff[0] for diff in _differences(db.engine)] == ["add_index"]  # the comparison does notice drift
    finally:
        db.close()


def test_history_is_one_line_from_the_baseline() -> None:
    scripts = ScriptDirectory.from_config(alembic_config())
    assert len(scripts.get_heads()) == 1, "two revisions share a parent: rebase yours onto the other"
    assert [s.revision for s in scripts.walk_revisions()][-1] == BASELINE_REVISION
    assert scripts.get_base() == BASELINE_REVISION


def _schema(engine: sqlalchemy.Engine) -> dict[str, dict[str, Any]]:
    inspector = sqlalchemy.inspect(engine)
    return {
        table: {
            "columns": [(c["name"], str(c["type"]), c["nullable"]) for c in inspector.get_columns(table)],
            "primary_key": inspector.get_pk_constraint(table)["constrained_columns"],
            "foreign_keys": sorted(
                (tuple(fk["constrained_columns"]), fk["referred_table"], tuple(fk["referred_columns"]))
                for fk in inspector.get_foreign_keys(table)
            ),
            "indexes": sorted(
                (i["name"], tuple(i["column_names"]), bool(i["unique"])) for i in inspector.get_indexes(table)
            ),
            "unique": sorted(tuple(u["column_names"]) for u in inspector.get_unique_constraints(table)),
        }
        for table in sorted(inspector.get_table_names())
        if table != "alembic_version"
    }


def test_baseline_revision_is_the_first_release_schema(database_url: str) -> None:
    engine = sqlalchemy.create_engine(database_url)
    try:
        load_first_release(database_url)
        first_release = _schema(engine)
        reflected = sqlalchemy.MetaData()
        reflected.reflect(engine)
        reflected.drop_all(engine)
        with engine.begin() as connection:
            command.upgrade(alembic_config(connection), BASELINE_REVISION)
        assert _schema(engine) == first_release
        assert len(first_release) == 12
    finally:
        engine.dispose()
