"""`Updater`: drives one deployment order through the transition table, saving the record before each state."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from agent.errors import AgentError, ReplayedOrderError, StorageError
from agent.model import ServableModel
from agent.state_store import AgentState, StateStore, UpdateRecord
from agent.transfer import ChunkDownloader
from agent.update.commit import Commit
from agent.update.download import Download
from agent.update.health_check import HealthCheck
from agent.update.install import Install
from agent.update.ledger import Ledger
from agent.update.models import CandidateCache, load_model
from agent.update.rollback import Rollback
from agent.update.slots import SlotStore
from agent.update.switching import Activate
from agent.update.table import TERMINAL, Event, Handler, next_state, run_handler
from agent.update.verify import Verify
from agent.verifier import BundleVerifier
from fleet.wire.messages import DeploymentOrder, UpdateState

log = logging.getLogger(__name__)

Reporter = Callable[[DeploymentOrder, UpdateState, bool, str, float | None], None]
_COMPLETED_KEPT = 50


def _no_shadow(_model: ServableModel | None) -> None:
    return None


class Updater:
    """Runs one deployment order through the table; ``activate`` swaps the served model at commit."""

    def __init__(
        self,
        store: StateStore,
        downloader: ChunkDownloader,
        verifier: BundleVerifier,
        slots_dir: Path,
        *,
        activate: Activate,
        report: Reporter,
        activate_shadow: Activate = _no_shadow,
        download_timeout_s: float = 600.0,
        before_step: Callable[[UpdateState], None] | None = None,
    ) -> None:
        self.store = store
        self.downloader = downloader
        self.ledger = Ledger(store)
        self._report = report
        self._before_step = before_step
        slots = SlotStore(slots_dir)
        candidates = CandidateCache()
        switches = {"activate": activate, "activate_shadow": activate_shadow}
        self.handlers: dict[UpdateState, Handler] = {
            UpdateState.DOWNLOAD: Download(
                self.ledger, downloader, timeout_s=download_timeout_s, progress=self._download_progress
            ),
            UpdateState.VERIFY: Verify(self.ledger, downloader, verifier),
            UpdateState.INSTALL: Install(self.ledger, downloader, slots),
            UpdateState.HEALTH_CHECK: HealthCheck(self.ledger, candidates),
            UpdateState.COMMIT: Commit(self.ledger, downloader, slots, candidates, **switches),
            UpdateState.ROLLBACK: Rollback(self.ledger, downloader, slots, candidates, **switches),
        }

    @property
    def state(self) -> AgentState:
        """The agent's persisted state, as last saved (or about to be)."""
        return self.ledger.state

    # -- start-up -----------------------------------------------------------------------------------------

    def load_active(self) -> ServableModel | None:
        """Load the committed model at start-up (falling back to the last known good one)."""
        state = self.ledger.state
        for slot in (state.active, state.last_known_good):
            if slot is None:
                continue
            try:
                model = load_model(slot)
            except AgentError as exc:
                log.error("cannot load installed model %s:%s: %s", slot.model, slot.version, exc)
                continue
            if slot is state.last_known_good:
                state.active = slot
                self._save_quietly()
            return model
        return None

    def load_shadow(self) -> ServableModel | None:
        """Load the shadow candidate saved before a restart, if any."""
        slot = self.ledger.state.shadow
        if slot is None:
            return None
        try:
            return load_model(slot)
        except AgentError as exc:
            log.error("cannot load shadow model %s:%s: %s", slot.model, slot.version, exc)
            return None

    def pending(self) -> DeploymentOrder | None:
        """An order interrupted by a restart, to be resumed."""
        record = self.ledger.state.update
        return record.order if record is not None and record.state not in TERMINAL else None

    # -- running an order ---------------------------------------------------------------------------------

    def apply(self, order: DeploymentOrder) -> UpdateState:
        """Drive ``order`` to DONE or FAILED (resuming where a previous run stopped); return the final state."""
        state = self.ledger.state
        record = state.update
        self._check_sequence(order)
        if order.deployment_id in state.completed_deployments and (record is None or record.state in TERMINAL):
            return UpdateState.DONE if self.ledger.is_active(order.sha256) else UpdateState.FAILED
        if record is None or record.order.deployment_id != order.deployment_id or record.order.sha256 != order.sha256:
            record = UpdateRecord(order=order, state=next_state(UpdateState.IDLE, Event.START))
            state.update = record
            self._persist(record, UpdateState.IDLE)
        while record.state not in TERMINAL:
            current = record.state
            if self._before_step is not None:
                self._before_step(current)
            self._report(order, current, True, "", None)
            outcome = run_handler(self.handlers[current], record)
            if outcome.event is Event.FAIL:
                log.warning("update %s failed in %s: %s", order.deployment_id, current, outcome.detail)
            self._enter(record, current, outcome.event, outcome.detail)
            self._persist(record, current)
        detail = "; ".join(part for part in (record.detail, record.transfer_note) if part)
        self._report(order, record.state, record.state is UpdateState.DONE, detail, None)
        return record.state

    def _check_sequence(self, order: DeploymentOrder) -> None:
        """Refuse an order older than the last accepted one; remember a newer one before acting on it."""
        last = self.ledger.state.last_order_sequence
        if order.sequence < last or (order.sequence == 0 and last > 0):
            raise ReplayedOrderError(
                f"order {order.deployment_id} has sequence {order.sequence}, below the accepted {last}: a replay"
            )
        if order.sequence > last:
            self.ledger.state.last_order_sequence = order.sequence  # saved with the record about to be created

    def _enter(self, record: UpdateRecord, current: UpdateState, event: Event, detail: str) -> None:
        record.state = next_state(current, event)
        if event is Event.FAIL or detail:
            record.detail = detail
        if record.state in TERMINAL:
            completed = self.ledger.state.completed_deployments
            self.ledger.state.completed_deployments = [*completed[-(_COMPLETED_KEPT - 1) :], record.order.deployment_id]

    def _persist(self, record: UpdateRecord, previous: UpdateState) -> None:
        """Save before entering ``record.state``; a state that cannot be saved is not entered: ``previous`` fails."""
        try:
            self.ledger.save()
            return
        except StorageError as exc:
            error = exc
        log.error("update %s: %s", record.order.deployment_id, error)
        if record.state in TERMINAL:
            return  # finished in memory; after a restart the order resumes from the last saved state
        self._enter(record, previous, Event.FAIL, str(error))
        self._save_quietly()

    def _save_quietly(self) -> None:
        try:
            self.ledger.save()
        except StorageError as exc:
            log.error("%s", exc)

    def _download_progress(self, record: UpdateRecord, fraction: float) -> None:
        self._report(record.order, UpdateState.DOWNLOAD, True, "", fraction)
