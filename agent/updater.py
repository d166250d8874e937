"""The device update state machine, in one explicit transition table (after Mender's client).

::

    IDLE --start--> DOWNLOAD --ok--> VERIFY --ok--> INSTALL --ok--> HEALTH_CHECK --ok--> COMMIT --ok--> DONE
                       |fail           |fail          |fail             |fail              |fail
                       v               v              v                 v                  v
                     FAILED          FAILED         FAILED           ROLLBACK <-----------+
                                                                        |ok
                                                                        v
                                                                      FAILED

The state is saved before every step and every step is idempotent, so killing the agent anywhere and
starting it again resumes the step it was in, or reverts; the active model keeps serving throughout and
is replaced only at COMMIT, after the candidate passed its health check.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Final

import semver

from agent.bundle import read_bundle
from agent.errors import AgentError, VerificationError
from agent.health import health_check
from agent.model import ServableModel
from agent.state_store import AgentState, Slot, StateStore, UpdateRecord
from agent.transfer import ChunkDownloader
from agent.verifier import BundleVerifier
from fleet.wire.messages import DeploymentOrder, UpdateState

log = logging.getLogger(__name__)


class Event(StrEnum):
    """What a step produced."""

    START = "start"
    OK = "ok"
    FAIL = "fail"


S = UpdateState
TRANSITIONS: Final[dict[tuple[UpdateState, Event], UpdateState]] = {
    (S.IDLE, Event.START): S.DOWNLOAD,
    (S.DOWNLOAD, Event.OK): S.VERIFY,
    (S.DOWNLOAD, Event.FAIL): S.FAILED,
    (S.VERIFY, Event.OK): S.INSTALL,
    (S.VERIFY, Event.FAIL): S.FAILED,
    (S.INSTALL, Event.OK): S.HEALTH_CHECK,
    (S.INSTALL, Event.FAIL): S.FAILED,
    (S.HEALTH_CHECK, Event.OK): S.COMMIT,
    (S.HEALTH_CHECK, Event.FAIL): S.ROLLBACK,
    (S.COMMIT, Event.OK): S.DONE,
    (S.COMMIT, Event.FAIL): S.ROLLBACK,
    (S.ROLLBACK, Event.OK): S.FAILED,
    (S.ROLLBACK, Event.FAIL): S.FAILED,
}
TERMINAL: Final = frozenset({S.DONE, S.FAILED})

Reporter = Callable[[DeploymentOrder, UpdateState, bool, str, float | None], None]
Activate = Callable[[ServableModel | None], None]


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
        self.verifier = verifier
        self.slots_dir = slots_dir
        slots_dir.mkdir(parents=True, exist_ok=True)
        self._activate = activate
        self._activate_shadow = activate_shadow
        self._report = report
        self._download_timeout_s = download_timeout_s
        self._before_step = before_step
        self._candidate: ServableModel | None = None
        self.state: AgentState = store.load()

    # -- entry points -------------------------------------------------------------------------------------

    def load_active(self) -> ServableModel | None:
        """Load the committed model at start-up (falling back to the last known good one)."""
        for slot in (self.state.active, self.state.last_known_good):
            if slot is None:
                continue
            try:
                model = ServableModel(read_bundle(Path(slot.path)), slot.sha256)
            except AgentError as exc:
                log.error("cannot load installed model %s:%s: %s", slot.model, slot.version, exc)
                continue
            if slot is self.state.last_known_good:
                self.state.active = slot
                self.store.save(self.state)
            return model
        return None

    def load_shadow(self) -> ServableModel | None:
        """Load the shadow candidate saved before a restart, if any."""
        slot = self.state.shadow
        if slot is None:
            return None
        try:
            return ServableModel(read_bundle(Path(slot.path)), slot.sha256)
        except AgentError as exc:
            log.error("cannot load shadow model %s:%s: %s", slot.model, slot.version, exc)
            return None

    def pending(self) -> DeploymentOrder | None:
        """An order interrupted by a restart, to be resumed."""
        record = self.state.update
        return record.order if record is not None and record.state not in TERMINAL else None

    def apply(self, order: DeploymentOrder) -> UpdateState:
        """Drive ``order`` to DONE or FAILED (resuming where a previous run stopped); return the final state."""
        record = self.state.update
        if order.deployment_id in self.state.completed_deployments and (record is None or record.state in TERMINAL):
            return S.DONE if self._is_active(order) else S.FAILED
        if record is None or record.order.deployment_id != order.deployment_id or record.order.sha256 != order.sha256:
            record = UpdateRecord(order=order, state=TRANSITIONS[(S.IDLE, Event.START)])
            self.state.update = record
            self.store.save(self.state)
        while record.state not in TERMINAL:
            state = record.state
            if self._before_step is not None:
                self._before_step(state)
            self._report(order, state, True, "", None)
            try:
                detail = self._step(state, record)
                event = Event.OK
            except AgentError as exc:
                detail, event = str(exc), Event.FAIL
                log.warning("update %s failed in %s: %s", order.deployment_id, state, exc)
            record.state = TRANSITIONS[(state, event)]
            if event is Event.FAIL or detail:
                record.detail = detail
            if record.state in TERMINAL:
                self.state.completed_deployments = [*self.state.completed_deployments[-49:], order.deployment_id]
            self.store.save(self.state)
        self._report(order, record.state, record.state is S.DONE, record.detail, None)
        return record.state

    # -- steps (each idempotent) ----------------------------------------------------------------------------

    def _step(self, state: UpdateState, record: UpdateRecord) -> str:
        order = record.order
        if state is S.DOWNLOAD:
            if self._is_active(order):
                return "already active"
            self.downloader.download(
                order,
                timeout_s=self._download_timeout_s,
                progress=lambda p: self._report(order, S.DOWNLOAD, True, "", p),
            )
            return ""
        if state is S.VERIFY:
            if self._is_active(order):
                return "already active"
            path = self.downloader.final_path(order.sha256)
            try:
                self.verifier.verify(order, path)
            except VerificationError:
                self.downloader.discard(order.sha256)  # never keep refused bytes around
                raise
            self._refuse_downgrade(order)
            return ""
        if state is S.INSTALL:
            if self._is_active(order):
                return "already active"
            slot_path = self.slots_dir / f"{order.sha256}.zip"
            if not slot_path.exists():
                tmp = slot_path.with_suffix(".tmp")
                shutil.copyfile(self.downloader.final_path(order.sha256), tmp)
                tmp.replace(slot_path)
            bundle = read_bundle(slot_path)
            manifest = bundle.manifest
            if (manifest.model, manifest.version, manifest.target) != (order.model, order.version, order.target):
                raise VerificationError(
                    f"bundle manifest says {manifest.model}:{manifest.version} for "
                    f"{manifest.target}, the order says {order.model}:{order.version}"
                )
            record.candidate = Slot(
                model=order.model, version=order.version, target=order.target, sha256=order.sha256, path=str(slot_path)
            )
            return ""
        if state is S.HEALTH_CHECK:
            if self._is_active(order):
                return "already active"
            candidate = self._load_candidate(record)
            report = health_check(candidate)
            return (
                f"self-test passed on {report.vectors} vectors (max abs error {report.max_abs_error:.2g}), "
                f"latency p50 {report.latency_ms_p50:.2f} ms"
            )
        if state is S.COMMIT and order.shadow:
            if self.state.shadow is None or self.state.shadow.sha256 != order.sha256:
                candidate = self._load_candidate(record)
                self.state.shadow = record.candidate
                self.store.save(self.state)
                self._activate_shadow(candidate)
                self._candidate = None
            self.downloader.discard(order.sha256)
            self._collect_garbage()
            return f"running in shadow beside {self._describe_active()}; {record.detail}"
        if state is S.COMMIT:
            if self.state.shadow is not None and self.state.shadow.sha256 == order.sha256:
                self.state.shadow = None
            if not self._is_active(order):
                candidate = self._load_candidate(record)
                previous = self.state.active
                self.state.active = record.candidate
                self.state.last_known_good = previous
                self.store.save(self.state)
                self._activate(candidate)
                self._candidate = None
            self.downloader.discard(order.sha256)
            self._collect_garbage()
            return record.detail
        if state is S.ROLLBACK:
            self._candidate = None
            record.candidate = None
            return f"rolled back, still serving {self._describe_active()}: {record.detail}"
        raise AgentError(f"no step for state {state}")

    # -- helpers ----------------------------------------------------------------------------------------------

    def _load_candidate(self, record: UpdateRecord) -> ServableModel:
        if record.candidate is None:
            raise AgentError("no installed candidate to check")
        if self._candidate is None or self._candidate.sha256 != record.candidate.sha256:
            self._candidate = ServableModel(read_bundle(Path(record.candidate.path)), record.candidate.sha256)
        return self._candidate

    def _is_active(self, order: DeploymentOrder) -> bool:
        return self.state.active is not None and self.state.active.sha256 == order.sha256

    def _refuse_downgrade(self, order: DeploymentOrder) -> None:
        active = self.state.active
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

    def _describe_active(self) -> str:
        active = self.state.active
        return f"{active.model}:{active.version}" if active else "no model"

    def _collect_garbage(self) -> None:
        slots = (self.state.active, self.state.last_known_good, self.state.shadow)
        keep = {slot.sha256 for slot in slots if slot is not None}
        for path in self.slots_dir.glob("*.zip"):
            if path.stem not in keep:
                path.unlink(missing_ok=True)
