"""Revision 0009: on PostgreSQL the raw batches' sketches are stored without a compression attempt."""

from __future__ import annotations

import sqlalchemy

from hub.registry import Database
from tests.pg_schema import fresh_schema

_STORAGE = "SELECT attstorage FROM pg_attribute WHERE attrelid = 'telemetryrecord'::regclass AND attname = :column"


def test_sketches_are_stored_uncompressed_on_postgresql() -> None:
    with fresh_schema() as url:
        db = Database(url)
        try:
            with db.engine.connect() as connection:
                storage = {
                    column: connection.execute(sqlalchemy.text(_STORAGE), {"column": column}).scalar_one()
                    for column in ("sketches", "payload")
                }
        finally:
            db.close()
    assert storage == {"sketches": "e", "payload": "x"}  # external (no compression); the JSON as before
