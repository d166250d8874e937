"""telemetry_window_aggregate.shard: one aggregate row per writer, so hub workers sharing telemetry never wait
on each other's row locks; readers merge every row they read (`TelemetryWindows`).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 03:30:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TABLE = "telemetry_window_aggregate"
_KEY = ["model", "version", "target", "window_start"]
_NEW = "uq_telemetry_window_aggregate_shard"
# 0006 (and 0007) left its unique constraint unnamed: SQLite's batch copy names it by this convention to drop it
_CONVENTION = {"uq": "uq_%(table_name)s_%(column_0_name)s"}


def _old_constraint() -> str:
    for constraint in sa.inspect(op.get_bind()).get_unique_constraints(_TABLE):
        if list(constraint["column_names"]) == _KEY and constraint["name"]:
            return str(constraint["name"])
    return f"uq_{_TABLE}_model"


def upgrade() -> None:
    old = _old_constraint()
    with op.batch_alter_table(_TABLE, naming_convention=_CONVENTION) as batch:
        batch.add_column(sa.Column("shard", sa.String(length=64), nullable=False, server_default=""))
        batch.drop_constraint(old, type_="unique")
        batch.create_unique_constraint(_NEW, [*_KEY, "shard"])


def downgrade() -> None:
    shared = op.get_bind().execute(
        sa.text(f"SELECT COUNT(*) FROM (SELECT 1 FROM {_TABLE} GROUP BY {', '.join(_KEY)} HAVING COUNT(*) > 1) AS s")
    )
    if shared.scalar_one():
        # merging a window's rows takes the hub's sketch code; dropping all but one would lose batches
        raise RuntimeError(f"{_TABLE} holds windows written by several workers: cannot go below revision 0008")
    with op.batch_alter_table(_TABLE, naming_convention=_CONVENTION) as batch:
        batch.drop_constraint(_NEW, type_="unique")
        batch.drop_column("shard")
        batch.create_unique_constraint(f"uq_{_TABLE}_model", _KEY)
