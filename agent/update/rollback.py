"""ROLLBACK: put back the slots COMMIT switched (if it got that far), serve them again, drop the candidate."""

from __future__ import annotations

from agent.state_store import UpdateRecord
from agent.update.models import load_model
from agent.update.switching import SlotSwitch
from agent.update.table import Outcome


class Rollback(SlotSwitch):
    """Idempotent: restoring an already restored state changes nothing."""

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
