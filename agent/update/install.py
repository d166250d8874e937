"""INSTALL: copy the verified bundle into its slot and check its manifest against the order."""

from __future__ import annotations

from agent.bundle import read_bundle
from agent.errors import StorageError, VerificationError
from agent.state_store import Slot, UpdateRecord
from agent.transfer import ChunkDownloader
from agent.update.ledger import Ledger
from agent.update.slots import SlotStore
from agent.update.table import Outcome


class Install:
    """Sets ``record.candidate``; the active model is untouched."""

    def __init__(self, ledger: Ledger, downloader: ChunkDownloader, slots: SlotStore) -> None:
        self.ledger = ledger
        self.downloader = downloader
        self.slots = slots

    def run(self, record: UpdateRecord) -> Outcome:
        """Install the candidate; a full disk frees the download and the partial slot, and says ENOSPC."""
        order = record.order
        if self.ledger.is_active(order.sha256):
            return Outcome.ok("already active")
        try:
            path = self.slots.install(self.downloader.final_path(order.sha256), order.sha256)
        except StorageError:
            self.downloader.discard(order.sha256)  # give the space back; the next order downloads again
            raise
        manifest = read_bundle(path).manifest
        if (manifest.model, manifest.version, manifest.target) != (order.model, order.version, order.target):
            self.slots.remove(order.sha256)
            raise VerificationError(
                f"bundle manifest says {manifest.model}:{manifest.version} for "
                f"{manifest.target}, the order says {order.model}:{order.version}"
            )
        record.candidate = Slot(
            model=order.model, version=order.version, target=order.target, sha256=order.sha256, path=str(path)
        )
        return Outcome.ok()
