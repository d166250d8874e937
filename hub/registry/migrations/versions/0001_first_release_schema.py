"""The schema of the first release (commit c085e93): every table as `SQLModel.metadata.create_all` made it.

A database that release made has these tables and no ``alembic_version``; the hub stamps it with this
revision before upgrading it.

Revision ID: 0001
Revises:
Create Date: 2026-12-01 22:50:03.987185
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "deployment",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("model", sa.String(length=128), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("device_ids", sa.JSON(), nullable=True),
        sa.Column("allow_downgrade", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "device",
        sa.Column("id", sa.String(length=63), nullable=False),
        sa.Column("target", sa.String(length=64), nullable=False),
        sa.Column("labels", sa.JSON(), nullable=True),
        sa.Column("credential_hash", sa.String(length=256), nullable=False),
        sa.Column("broker_hash", sa.String(length=256), nullable=True),
        sa.Column("online", sa.Boolean(), nullable=False),
        sa.Column("last_seen", sa.Float(), nullable=True),
        sa.Column("active_model", sa.String(), nullable=True),
        sa.Column("active_version", sa.String(), nullable=True),
        sa.Column("active_sha256", sa.String(), nullable=True),
        sa.Column("update_state", sa.String(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "model",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("description", sa.String(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_model_name"), "model", ["name"], unique=True)
    op.create_table(
        "rollout",
        sa.Column("id", sa.String(length=100), nullable=False),
        sa.Column("model", sa.String(length=128), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=32), nullable=False),
        sa.Column("final", sa.Boolean(), nullable=False),
        sa.Column("snapshot", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_rollout_final"), "rollout", ["final"], unique=False)
    op.create_index(op.f("ix_rollout_state"), "rollout", ["state"], unique=False)
    op.create_table(
        "rollout_command",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("rollout_id", sa.String(length=100), nullable=False),
        sa.Column("command", sa.String(length=16), nullable=False),
        sa.Column("done", sa.Boolean(), nullable=False),
        sa.Column("error", sa.String(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_rollout_command_done"), "rollout_command", ["done"], unique=False)
    op.create_index(op.f("ix_rollout_command_rollout_id"), "rollout_command", ["rollout_id"], unique=False)
    op.create_table(
        "rollout_device_error",
        sa.Column("deployment_id", sa.String(length=110), nullable=False),
        sa.Column("device_id", sa.String(length=63), nullable=False),
        sa.Column("rollout_id", sa.String(length=100), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("deployment_id", "device_id"),
    )
    op.create_index(op.f("ix_rollout_device_error_rollout_id"), "rollout_device_error", ["rollout_id"], unique=False)
    op.create_table(
        "rollout_outbox",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("rollout_id", sa.String(length=100), nullable=False),
        sa.Column("actions", sa.Text(), nullable=False),
        sa.Column("done", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_rollout_outbox_done"), "rollout_outbox", ["done"], unique=False)
    op.create_index(op.f("ix_rollout_outbox_rollout_id"), "rollout_outbox", ["rollout_id"], unique=False)
    op.create_table(
        "telemetry_rollup",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model", sa.String(length=128), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("target", sa.String(length=64), nullable=False),
        sa.Column("window_start", sa.Float(), nullable=False),
        sa.Column("window_s", sa.Float(), nullable=False),
        sa.Column("batches", sa.Integer(), nullable=False),
        sa.Column("requests", sa.Integer(), nullable=False),
        sa.Column("errors", sa.Integer(), nullable=False),
        sa.Column("offloaded", sa.Integer(), nullable=False),
        sa.Column("shadow_compared", sa.Integer(), nullable=False),
        sa.Column("shadow_agreed", sa.Integer(), nullable=False),
        sa.Column("latency_ms", sa.JSON(), nullable=True),
        sa.Column("confidence", sa.JSON(), nullable=True),
        sa.Column("predictions", sa.JSON(), nullable=True),
        sa.Column("feature_sketches", sa.JSON(), nullable=True),
        sa.Column("devices", sa.JSON(), nullable=True),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("model", "version", "target", "window_start"),
    )
    op.create_index(op.f("ix_telemetry_rollup_model"), "telemetry_rollup", ["model"], unique=False)
    op.create_index(op.f("ix_telemetry_rollup_window_start"), "telemetry_rollup", ["window_start"], unique=False)
    op.create_table(
        "telemetryrecord",
        sa.Column("batch_id", sa.String(length=64), nullable=False),
        sa.Column("device_id", sa.String(length=63), nullable=False),
        sa.Column("target", sa.String(length=64), nullable=False),
        sa.Column("model", sa.String(length=128), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("window_start", sa.Float(), nullable=False),
        sa.Column("window_end", sa.Float(), nullable=False),
        sa.Column("requests", sa.Integer(), nullable=False),
        sa.Column("errors", sa.Integer(), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=True),
        sa.Column("received_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("batch_id"),
    )
    op.create_index(op.f("ix_telemetryrecord_device_id"), "telemetryrecord", ["device_id"], unique=False)
    op.create_index(op.f("ix_telemetryrecord_window_end"), "telemetryrecord", ["window_end"], unique=False)
    op.create_table(
        "modelversion",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("major", sa.Integer(), nullable=False),
        sa.Column("minor", sa.Integer(), nullable=False),
        sa.Column("patch", sa.Integer(), nullable=False),
        sa.Column("prerelease", sa.String(), nullable=False),
        sa.Column("notes", sa.String(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["model_id"],
            ["model.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("model_id", "version"),
    )
    op.create_index(op.f("ix_modelversion_model_id"), "modelversion", ["model_id"], unique=False)
    op.create_table(
        "variant",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("target", sa.String(length=64), nullable=False),
        sa.Column("runtime", sa.String(length=32), nullable=False),
        sa.Column("precision", sa.String(length=16), nullable=False),
        sa.Column("artifact_sha256", sa.String(length=64), nullable=False),
        sa.Column("size_bytes", sa.Integer(), nullable=False),
        sa.Column("bundle_sha256", sa.String(length=64), nullable=False),
        sa.Column("bundle_size", sa.Integer(), nullable=False),
        sa.Column("tuf_target", sa.String(length=256), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["version_id"],
            ["modelversion.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("version_id", "target", "precision"),
    )
    op.create_index(op.f("ix_variant_version_id"), "variant", ["version_id"], unique=False)
    op.create_table(
        "deploymentdevice",
        sa.Column("deployment_id", sa.String(length=64), nullable=False),
        sa.Column("device_id", sa.String(length=63), nullable=False),
        sa.Column("variant_id", sa.Integer(), nullable=True),
        sa.Column("state", sa.String(), nullable=False),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("detail", sa.String(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["deployment_id"],
            ["deployment.id"],
        ),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["device.id"],
        ),
        sa.ForeignKeyConstraint(
            ["variant_id"],
            ["variant.id"],
        ),
        sa.PrimaryKeyConstraint("deployment_id", "device_id"),
    )


def downgrade() -> None:
    op.drop_table("deploymentdevice")
    op.drop_table("variant")
    op.drop_table("modelversion")
    op.drop_table("telemetryrecord")
    op.drop_table("telemetry_rollup")
    op.drop_table("rollout_outbox")
    op.drop_table("rollout_device_error")
    op.drop_table("rollout_command")
    op.drop_table("rollout")
    op.drop_table("model")
    op.drop_table("device")
    op.drop_table("deployment")
