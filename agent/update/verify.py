"""VERIFY: TUF checks the downloaded bundle; a semver downgrade needs the order's ``allow_downgrade``."""

from __future__ import annotations

import semver

from agent.errors import VerificationError
from agent.state_store import Slot, UpdateRecord
from agent.transfer import ChunkDownloader
from agent.update.ledger import Ledger
from agent.update.table import Outcome
from agent.verifier import BundleVerifier
from fleet.wire.messages import DeploymentOrder


class Verify:
    """Refused bytes are discarded at once, never kept around."""

    def __init__(self, ledger: Ledger, downloader: ChunkDownloader, verifier: BundleVerifier) -> None:
        self.ledger = ledger
        self.downloader = downloader
        self.verifier = verifier

    def run(self, record: UpdateRecord) -> Outcome:
        """Accept the download or raise `VerificationError` with the reason."""
        order = record.order
        if self.ledger.is_active(order.sha256):
            return Outcome.ok("already active")
        try:
            self.verifier.verify(order, self.downloader.final_path(order.sha256))
        except VerificationError:
            self.downloader.discard(order.sha256)
            raise
        refuse_downgrade(order, self.ledger.state.active)
        return Outcome.ok()


def refuse_downgrade(order: DeploymentOrder, active: Slot | None) -> None:
    """Raise `VerificationError` if ``order`` is an older version of the active model without permission."""
    if active is None or active.model != order.model or order.allow_downgrade:
        return
    try:
        older = semver.Version.parse(order.version) < semver.Version.parse(active.version)
    except ValueError as exc:
        raise VerificationError(f"version {order.version!r} is not semantic versioning") from exc
    if older:
        raise VerificationError(
            f"refused {order.model}:{order.version}: older than the running "
            f"{active.version} and the order does not allow a downgrade"
        )
