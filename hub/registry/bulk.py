"""Bulk writes of raw telemetry rows: binary COPY on PostgreSQL, one executemany of an INSERT on SQLite.

Rows are plain tuples in `RECORD_COLUMNS` order with the payload already JSON text, so no ORM or JSON
processing runs per row. Errors come out as SQLAlchemy's exception family (``IntegrityError`` for a batch id
another writer stored first, ``OperationalError`` for a lost connection) whichever path wrote, so callers
retry or give up the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from hub.registry.tables import TelemetryRecord

__all__ = ["RECORD_COLUMNS", "RecordRow", "insert_records", "stored_batch_ids"]

RECORD_COLUMNS: Final = (
    "batch_id",
    "device_id",
    "target",
    "model",
    "version",
    "window_start",
    "window_end",
    "requests",
    "errors",
    "payload",
    "sketches",
    "received_at",
)
RecordRow = tuple[str, str, str, str, str, float, float, int, int, str, bytes, float]
#: PostgreSQL's binary COPY wants each column's wire type; json's binary form is its text, so the payload
#: (already JSON) goes as text and the sketches' bytes as they are, with no escaping.
_BINARY_TYPES: Final = (
    *["text"] * 5, "float8", "float8", "int4", "int4", "text", "bytea", "float8",
)  # fmt: skip
_TABLE: Final = TelemetryRecord.__table__.name  # type: ignore[attr-defined]
_COLUMNS: Final = ", ".join(RECORD_COLUMNS)


def stored_batch_ids(connection: Connection, batch_ids: Sequence[str]) -> set[str]:
    """Which of ``batch_ids`` the raw telemetry table holds (one statement; on PostgreSQL one array parameter,
    so the query text, and its parsing, is the same for every block size)."""
    if not batch_ids:
        return set()
    select = f"SELECT batch_id FROM {_TABLE} WHERE batch_id"
    if connection.dialect.name == "postgresql":
        result = connection.exec_driver_sql(f"{select} = ANY(%s)", (list(batch_ids),))
    else:
        result = connection.exec_driver_sql(f"{select} IN ({', '.join('?' for _ in batch_ids)})", tuple(batch_ids))
    return {row[0] for row in result}


def insert_records(connection: Connection, rows: Sequence[RecordRow]) -> None:
    """Insert ``rows`` into the raw telemetry table inside ``connection``'s transaction."""
    if not rows:
        return
    if connection.dialect.name == "postgresql":
        _copy(connection, rows)
        return
    placeholders = ", ".join("?" for _ in RECORD_COLUMNS)
    connection.exec_driver_sql(f"INSERT INTO {_TABLE} ({_COLUMNS}) VALUES ({placeholders})", list(rows))


def _copy(connection: Connection, rows: Sequence[RecordRow]) -> None:
    import psycopg

    statement = f"COPY {_TABLE} ({_COLUMNS}) FROM STDIN (FORMAT BINARY)"
    driver: Any = connection.connection.driver_connection
    try:
        with driver.cursor() as cursor, cursor.copy(statement) as copy:
            copy.set_types(_BINARY_TYPES)
            for row in rows:
                copy.write_row(row)
    except psycopg.Error as exc:
        raise DBAPIError.instance(statement, None, exc, psycopg.Error) from exc
