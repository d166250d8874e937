"""ROLLBACK: put back the slots COMMIT switched (if it got that far), serve them again, drop the candidate."""

from __future__ import annotations

from agent.state_store import UpdateRecord
from agent.transfer import ChunkDownloader
from agent.update.commit import Activate
from agent.update.ledger import Ledger
from agent.update.models import CandidateCache, load_model
from agent.update.slots import SlotStore
from agent.update.table import Outcome


class Rollback:
    """Idempotent: restoring an already restored state changes nothing."""

    def __init__(
        self,
        ledger: Ledger,
        downloader: ChunkDownloader,
        slots: SlotStore,
        candidates: CandidateCache,
        *,
        activate: Activate,
        activate_shadow: Activate,
    ) -> None:
        self.ledger = ledger
        self.downloader = downloader
        self.slots = slots
        self.candidates = candidates
        self.activate = activate
        self.activate_shadow = activate_shadow

    def run(self, record: UpdateRecord) -> Outcome:
        """Restore, then remove the candidate's slot and download; the detail keeps the failure's reason."""
        self.candidates.forget()
        point, state = record.restore_point, self.ledger.state
        if point is not None:
            active_changed = state.active != point.active
            shadow_changed = state.shadow != point.shadow
            if active_changed or shadow_changed or state.last_known_good != point.last_known_good:
                state.active, state.last_known_good, state.shadow = point.active, point.last_known_good, point.shadow
                self.ledger.save()
            if active_changed:
                self.activate(load_model(point.active) if point.active else None)
            if shadow_changed:
                self.activate_shadow(load_model(point.shadow) if point.shadow else None)
        record.candidate = None
        self.downloader.discard(record.order.sha256)
        self.slots.collect_garbage(self.ledger.kept_slots())
        return Outcome.ok(f"rolled back, still serving {self.ledger.describe_active()}: {record.detail}")
