"""COMMIT: make the candidate the active model (or the shadow one), keeping the previous as last known good."""

from __future__ import annotations

from agent.state_store import RestorePoint, UpdateRecord
from agent.update.ledger import Ledger
from agent.update.switching import SlotSwitch
from agent.update.table import Outcome


class Commit(SlotSwitch):
    """Saves the switch (and a restore point for ROLLBACK) before activating, then frees what is unused."""

    def run(self, record: UpdateRecord) -> Outcome:
        """Switch (idempotent: a resumed commit finds the switch already saved and skips it)."""
        detail = self._shadow(record) if record.order.shadow else self._promote(record)
        self.downloader.discard(record.order.sha256)
        self.slots.collect_garbage(self.ledger.kept_slots())
        return Outcome.ok(detail)

    def _promote(self, record: UpdateRecord) -> str:
        state = self.ledger.state
        if not self.ledger.is_active(record.order.sha256):
            candidate = self.candidates.load(record.candidate)
            record.restore_point = _restore_point(self.ledger)
            state.active, state.last_known_good = record.candidate, state.active
            if state.shadow is not None and state.shadow.sha256 == record.order.sha256:
                state.shadow = None  # the shadow candidate is promoted
            self.ledger.save()
            self.activate(candidate)
            self.candidates.forget()
        return record.detail

    def _shadow(self, record: UpdateRecord) -> str:
        state = self.ledger.state
        if state.shadow is None or state.shadow.sha256 != record.order.sha256:
            candidate = self.candidates.load(record.candidate)
            record.restore_point = _restore_point(self.ledger)
            state.shadow = record.candidate
            self.ledger.save()
            self.activate_shadow(candidate)
            self.candidates.forget()
        return f"running in shadow beside {self.ledger.describe_active()}; {record.detail}"


def _restore_point(ledger: Ledger) -> RestorePoint:
    state = ledger.state
    return RestorePoint(active=state.active, last_known_good=state.last_known_good, shadow=state.shadow)
