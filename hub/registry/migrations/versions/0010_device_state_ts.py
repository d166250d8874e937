"""device.state_ts: the device's own time stamp of the stored state, so that a state delivered late (a hub replica
that fell behind, a broker redelivering an unacknowledged message) does not overwrite a newer one. Existing rows
start without one: their next state is stored whatever its time.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 10:10:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("device", schema=None) as batch_op:
        batch_op.add_column(sa.Column("state_ts", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("device", schema=None) as batch_op:
        batch_op.drop_column("state_ts")
