"""rollout_retained_bundle: the bundles whose chunks the broker keeps retained for a running rollout, so a hub
restarted between a rollout's end and the clearing of its chunks still clears them.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03 08:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | Sequence[str] | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "rollout_retained_bundle",
        sa.Column("rollout_id", sa.String(length=100), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("chunk_count", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("rollout_id", "sha256"),
    )


def downgrade() -> None:
    op.drop_table("rollout_retained_bundle")
