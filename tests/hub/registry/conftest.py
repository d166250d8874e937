"""A database made by the first release (tests/hub/registry/fixtures), on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy

FIXTURES = Path(__file__).parent / "fixtures"
#: Clear-text credentials of the devices in the first-release dump (only their hashes are stored there).
FIRST_RELEASE_SECRETS = {
    "dev-1": "first-release-secret-1",
    "dev-2": "first-release-secret-2",
    "pi-1": "first-release-secret-3",
}


def load_first_release(url: str) -> None:
    """Run the first release's dump for ``url``'s dialect into that (empty) database."""
    engine = sqlalchemy.create_engine(url)
    sql = (FIXTURES / f"first_release.{engine.dialect.name}.sql").read_text()
    raw = engine.raw_connection()
    try:
        if engine.dialect.name == "sqlite":
            raw.driver_connection.executescript(sql)  # type: ignore[union-attr]
        else:
            with raw.cursor() as cursor:
                cursor.execute(sql)
            raw.commit()
    finally:
        raw.close()
        engine.dispose()


@pytest.fixture
def first_release_url(database_url: str) -> str:
    """``database_url`` holding the first release's tables and rows, without ``alembic_version``."""
    load_first_release(database_url)
    return database_url
