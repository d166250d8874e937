"""telemetry_record.sketches (feature sketches as raw bytes) and telemetry_window_aggregate (per model
version x target x time window, merged at ingestion).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 00:30:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("telemetryrecord") as batch:
        batch.add_column(sa.Column("sketches", sa.LargeBinary(), nullable=True))
    op.create_table(
        "telemetry_window_aggregate",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model", sa.String(length=128), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("target", sa.String(length=64), nullable=False),
        sa.Column("window_start", sa.Float(), nullable=False),
        sa.Column("window_s", sa.Float(), nullable=False),
        sa.Column("window_end", sa.Float(), nullable=False),
        sa.Column("batches", sa.Integer(), nullable=False),
        sa.Column("requests", sa.Integer(), nullable=False),
        sa.Column("errors", sa.Integer(), nullable=False),
        sa.Column("offloaded", sa.Integer(), nullable=False),
        sa.Column("shadow_compared", sa.Integer(), nullable=False),
        sa.Column("shadow_agreed", sa.Integer(), nullable=False),
        sa.Column("latency_ms", sa.JSON(), nullable=True),
        sa.Column("confidence", sa.JSON(), nullable=True),
        sa.Column("shadow_latency_ms", sa.JSON(), nullable=True),
        sa.Column("predictions", sa.JSON(), nullable=True),
        sa.Column("sketches", sa.LargeBinary(), nullable=False),
        sa.Column("devices", sa.JSON(), nullable=True),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("model", "version", "target", "window_start"),
    )
    op.create_index(op.f("ix_telemetry_window_aggregate_model"), "telemetry_window_aggregate", ["model"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_telemetry_window_aggregate_model"), table_name="telemetry_window_aggregate")
    op.drop_table("telemetry_window_aggregate")
    with op.batch_alter_table("telemetryrecord") as batch:
        batch.drop_column("sketches")
