"""Capture storage: sampled inputs per model version and device, pruned by age."""

from __future__ import annotations

from sqlalchemy import delete
from sqlmodel import col, select

from fleet.wire.messages import CaptureBatch
from hub.registry.capture_tables import CaptureRow
from hub.registry.db import Database

__all__ = ["CaptureStore"]


class CaptureStore:
    """Captured samples (each method one transaction)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def add(self, batch: CaptureBatch, *, now: float, max_age_s: float | None) -> bool:
        """Store a capture message (False when its batch id was stored before); drop rows older than
        ``max_age_s``."""
        with self.db.session() as session:
            if max_age_s is not None:
                session.execute(delete(CaptureRow).where(col(CaptureRow.received_at) < now - max_age_s))
            if session.get(CaptureRow, batch.batch_id) is not None:
                return False
            session.add(
                CaptureRow(
                    batch_id=batch.batch_id,
                    device_id=batch.device_id,
                    target=batch.target,
                    model=batch.model,
                    version=batch.version,
                    shape=batch.shape,
                    samples=[s.model_dump(mode="json", exclude={"schema_version"}) for s in batch.samples],
                    received_at=now,
                )
            )
            return True

    def rows(self, model: str, version: str) -> list[CaptureRow]:
        """Every stored capture of ``model:version``, oldest first."""
        query = (
            select(CaptureRow)
            .where(CaptureRow.model == model, CaptureRow.version == version)
            .order_by(col(CaptureRow.received_at))
        )
        with self.db.session() as session:
            return list(session.exec(query))

    def delete(self, model: str, version: str | None = None) -> int:
        """Delete the captures of ``model`` (one version, or all); return how many messages went."""
        query = delete(CaptureRow).where(col(CaptureRow.model) == model)
        if version is not None:
            query = query.where(col(CaptureRow.version) == version)
        with self.db.session() as session:
            return int(getattr(session.execute(query), "rowcount", 0) or 0)
