"""DOWNLOAD: fetch the ordered bundle over the broker or HTTP, as the order says (as a delta against the active
model's bundle when chunk indexes are served), resuming a partial download."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from agent.state_store import UpdateRecord
from agent.transfer import ChunkDownloader
from agent.update.ledger import Ledger
from agent.update.table import Outcome

Progress = Callable[[UpdateRecord, float], None]


class Download:
    """Skipped when the bundle is already the active model."""

    def __init__(self, ledger: Ledger, downloader: ChunkDownloader, *, timeout_s: float, progress: Progress) -> None:
        self.ledger = ledger
        self.downloader = downloader
        self.timeout_s = timeout_s
        self.progress = progress

    def run(self, record: UpdateRecord) -> Outcome:
        """Download the bundle to the downloader's final path (raises `TransferError` or `StorageError`)."""
        if self.ledger.is_active(record.order.sha256):
            return Outcome.ok("already active")
        active = self.ledger.state.active
        self.downloader.download(
            record.order,
            timeout_s=self.timeout_s,
            progress=lambda fraction: self.progress(record, fraction),
            base=(active.sha256, Path(active.path)) if active is not None else None,
        )
        record.transfer_note = self.downloader.note  # e.g. a mirror refused: reported with the outcome
        return Outcome.ok()
