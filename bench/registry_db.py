"""The hub registry a benchmark runs on: a fresh SQLite file, or a fresh schema of the machine's PostgreSQL."""

from __future__ import annotations

import contextlib
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@contextlib.contextmanager
def database(kind: str, tmp: Path | None = None) -> Iterator[str]:
    """Yield the URL of a fresh ``sqlite`` file (in ``tmp``, else a temporary directory) or ``postgresql``
    schema; either is removed afterwards."""
    if kind == "sqlite":
        if tmp is not None:
            yield f"sqlite:///{tmp / 'registry.db'}"
            return
        with tempfile.TemporaryDirectory(prefix="bench-registry-") as scratch:
            yield f"sqlite:///{Path(scratch) / 'registry.db'}"
        return
    import sqlalchemy

    schema = f"bench_{uuid.uuid4().hex[:10]}"
    admin = sqlalchemy.create_engine(POSTGRES_URL)
    with admin.begin() as conn:
        conn.execute(sqlalchemy.text(f"CREATE SCHEMA {schema}"))
    try:
        yield f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(sqlalchemy.text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()
