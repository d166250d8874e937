"""model_policy, policy_event and capture: drift policies per model version, what they did, and captured inputs.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 23:45:19.463052
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "capture",
        sa.Column("batch_id", sa.String(length=64), nullable=False),
        sa.Column("device_id", sa.String(length=63), nullable=False),
        sa.Column("target", sa.String(length=64), nullable=False),
        sa.Column("model", sa.String(length=128), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("shape", sa.JSON(), nullable=True),
        sa.Column("samples", sa.JSON(), nullable=True),
        sa.Column("received_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("batch_id"),
    )
    with op.batch_alter_table("capture", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_capture_model"), ["model"], unique=False)
        batch_op.create_index(batch_op.f("ix_capture_received_at"), ["received_at"], unique=False)

    op.create_table(
        "model_policy",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model", sa.String(length=128), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("policy", sa.JSON(), nullable=True),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("model", "version"),
    )
    op.create_table(
        "policy_event",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model", sa.String(length=128), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("cohort", sa.String(length=256), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("detail", sa.String(), nullable=False),
        sa.Column("evidence", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("policy_event", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_policy_event_created_at"), ["created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_policy_event_model"), ["model"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("policy_event", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_policy_event_model"))
        batch_op.drop_index(batch_op.f("ix_policy_event_created_at"))

    op.drop_table("policy_event")
    op.drop_table("model_policy")
    with op.batch_alter_table("capture", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_capture_received_at"))
        batch_op.drop_index(batch_op.f("ix_capture_model"))

    op.drop_table("capture")
