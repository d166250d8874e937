"""Alembic environment: migrations target ``SQLModel.metadata`` (every table of `hub.registry`).

Run programmatically by `hub.registry.migrations.runner` with an open connection in
``config.attributes["connection"]``, or by the ``alembic`` command (``-c hub/registry/migrations/alembic.ini
-x database_url=...``) when authoring a new revision.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine
from sqlmodel import SQLModel

import hub.registry  # noqa: F401  (registers every table on SQLModel.metadata)

config = context.config


def _run(connection: object) -> None:
    context.configure(
        connection=connection,  # type: ignore[arg-type]
        target_metadata=SQLModel.metadata,
        render_as_batch=True,  # SQLite cannot ALTER most things: batch mode copies the table instead
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    from hub.registry.db import normalise_url

    url = context.get_x_argument(as_dictionary=True).get("database_url")
    if not url:
        raise SystemExit("give the database: alembic -x database_url=sqlite:///path/registry.db ...")
    engine = create_engine(normalise_url(url))
    with engine.begin() as conn:
        _run(conn)
    engine.dispose()
