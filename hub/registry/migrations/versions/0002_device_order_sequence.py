"""device.order_sequence: the per-device order sequence (existing devices start at 0; the hub never reserves
below the clock in milliseconds, so their next order still rises).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 23:19:56.889863
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("device", schema=None) as batch_op:
        batch_op.add_column(sa.Column("order_sequence", sa.BigInteger(), server_default="0", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("device", schema=None) as batch_op:
        batch_op.drop_column("order_sequence")
