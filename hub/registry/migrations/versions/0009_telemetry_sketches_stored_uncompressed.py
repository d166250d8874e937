"""telemetryrecord.sketches stored without compression on PostgreSQL (STORAGE EXTERNAL): KLL sketches of
floats do not compress (zlib saves about 10%, short of the 25% pglz needs to keep its result), so every row
paid for a failed compression attempt on the way in. SQLite compresses nothing: unchanged there.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 06:30:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _storage(kind: str) -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"ALTER TABLE telemetryrecord ALTER COLUMN sketches SET STORAGE {kind}")


def upgrade() -> None:
    _storage("EXTERNAL")


def downgrade() -> None:
    _storage("EXTENDED")
