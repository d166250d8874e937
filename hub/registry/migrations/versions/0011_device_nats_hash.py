"""device.nats_hash: each device's secret as a bcrypt hash, for the NATS authorization file
(`edgefleet broker auth-files --broker nats`; NATS checks plaintext or bcrypt passwords only). Only the secret's
hashes are stored, so rows from before stay without one: those devices are left out of the NATS file, named in its
answer, until they are provisioned again.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02 13:40:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("device", schema=None) as batch_op:
        batch_op.add_column(sa.Column("nats_hash", sa.String(length=128), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("device", schema=None) as batch_op:
        batch_op.drop_column("nats_hash")
