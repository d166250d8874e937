"""telemetry_window_aggregate.cohort: besides the row of every batch (cohort ""), one row per device label
(``key=value``) holding the batches of the devices that carried it when the batch was stored, so drift by label
cohort reads window aggregates, not every batch (and still answers once the batches are pruned). Existing rows
are the rows of every batch (""); each gets a marker copy (cohort "*", no sketches), since its window's label
rows (made by batches stored after the upgrade) miss the batches stored before: reports by label over it read
the batches.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02 14:30:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | Sequence[str] | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TABLE = "telemetry_window_aggregate"
_KEY = ["model", "version", "target", "window_start", "shard"]
_OLD = "uq_telemetry_window_aggregate_shard"
_NEW = "uq_telemetry_window_aggregate_cohort"


def upgrade() -> None:
    with op.batch_alter_table(_TABLE) as batch:
        batch.add_column(sa.Column("cohort", sa.String(length=255), nullable=False, server_default=""))
        batch.drop_constraint(_OLD, type_="unique")
        batch.create_unique_constraint(_NEW, [*_KEY, "cohort"])
    skip = ("id", "cohort", "sketches")
    names = ", ".join(c["name"] for c in sa.inspect(op.get_bind()).get_columns(_TABLE) if c["name"] not in skip)
    marker = (
        f"INSERT INTO {_TABLE} ({names}, sketches, cohort) SELECT {names}, :none, '*' FROM {_TABLE} WHERE cohort = ''"
    )
    op.get_bind().execute(sa.text(marker), {"none": b""})  # a marker: no reader merges it, so no sketches


def downgrade() -> None:
    op.execute(sa.text(f"DELETE FROM {_TABLE} WHERE cohort <> ''"))  # the label rows: copies of batches kept
    with op.batch_alter_table(_TABLE) as batch:
        batch.drop_constraint(_NEW, type_="unique")
        batch.drop_column("cohort")
        batch.create_unique_constraint(_OLD, _KEY)
