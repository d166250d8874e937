"""The rollout engine: one explicit transition table and a pure ``step`` function. No I/O, no clock.

The hub keeps a `RolloutSnapshot` per rollout in its database and drives it::

    snapshot = new_rollout("r-42", plan, variants, now=time.time())
    snapshot, actions = step(snapshot, now, device_statuses)                      # on every tick / event
    snapshot, actions = step(snapshot, now, device_statuses, gate_verdict=v)      # answering RequestGate
    snapshot, actions = step(snapshot, now, device_statuses, command=Command.PAUSE)

It persists the returned snapshot (``snapshot.model_dump_json()``) and then carries out the actions
(`DeployTo`, `RollBack`, `RequestGate`, `Pause`, ...), which are plain data. ``step`` is deterministic in
its inputs, so a hub restarted from the stored snapshot continues exactly where it was; carrying out an
action twice is harmless because device handlers are idempotent.

States and the events that move between them are listed once, in `TRANSITIONS`. Operator commands that the
table does not allow in the current state raise `RolloutError`.

Exceptions (see `fleet.errors`)::

    FleetError
     └── RolloutError          a command that the current state does not allow, or a malformed verdict
"""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from enum import StrEnum
from typing import Annotated, Literal, NamedTuple, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from fleet.errors import FleetError
from fleet.rollout_plan import Name, RolloutPlan
from fleet.selection import Variant, parse_selector, select_variant, selector_labels
from fleet.windows import in_window, next_opening
from fleet.wire.messages import DeviceState, UpdateState

SNAPSHOT_SCHEMA_VERSION = 1
_HISTORY_LIMIT = 500
_MAX_TRANSITIONS_PER_STEP = 256


class RolloutError(FleetError):
    """A command the rollout's current state does not allow, or a gate verdict that cannot be read."""


class RolloutState(StrEnum):
    """Where a rollout is. COMPLETED and ABORTED are final."""

    PENDING = "pending"
    WAVE_RUNNING = "wave_running"
    GATE = "gate"
    AWAITING_APPROVAL = "awaiting_approval"
    PAUSED = "paused"
    ABORTING = "aborting"
    COMPLETED = "completed"
    ABORTED = "aborted"


class Event(StrEnum):
    """What moves a rollout: facts the engine detects, gate verdicts and operator commands."""

    START = "start"
    WAVE_COMPLETE = "wave_complete"
    EMPTY_WAVE = "empty_wave"
    LAST_WAVE_COMPLETE = "last_wave_complete"
    BELOW_SUCCESS_THRESHOLD = "below_success_threshold"
    FAILURE_THRESHOLD = "failure_threshold"
    GATE_SKIPPED = "gate_skipped"
    GATE_PASS = "gate_pass"
    GATE_FAIL = "gate_fail"
    GATE_INCONCLUSIVE = "gate_inconclusive"
    GATE_EXHAUSTED = "gate_exhausted"
    AUTO_APPROVED = "auto_approved"
    ROLLBACK_DONE = "rollback_done"
    PAUSE = "pause"
    RESUME = "resume"
    PROMOTE = "promote"
    ABORT = "abort"


class Command(StrEnum):
    """Operator commands (``edgefleet rollout pause|resume|abort|promote ID``)."""

    PAUSE = "pause"
    RESUME = "resume"
    ABORT = "abort"
    PROMOTE = "promote"


S, E = RolloutState, Event

#: The whole state machine. Anything not listed is not allowed.
TRANSITIONS: dict[tuple[RolloutState, Event], RolloutState] = {
    (S.PENDING, E.START): S.WAVE_RUNNING,
    (S.PENDING, E.ABORT): S.ABORTED,
    # a wave is running: devices up to the wave's cumulative target are being deployed
    (S.WAVE_RUNNING, E.WAVE_COMPLETE): S.GATE,
    (S.WAVE_RUNNING, E.EMPTY_WAVE): S.WAVE_RUNNING,  # advances to the next wave
    (S.WAVE_RUNNING, E.LAST_WAVE_COMPLETE): S.COMPLETED,
    (S.WAVE_RUNNING, E.BELOW_SUCCESS_THRESHOLD): S.PAUSED,
    (S.WAVE_RUNNING, E.FAILURE_THRESHOLD): S.ABORTING,
    (S.WAVE_RUNNING, E.PAUSE): S.PAUSED,
    (S.WAVE_RUNNING, E.PROMOTE): S.WAVE_RUNNING,  # advances to the next wave now
    (S.WAVE_RUNNING, E.ABORT): S.ABORTING,
    # the wave passed its success threshold; waiting for the canary analysis
    (S.GATE, E.GATE_SKIPPED): S.AWAITING_APPROVAL,
    (S.GATE, E.GATE_PASS): S.AWAITING_APPROVAL,
    (S.GATE, E.GATE_FAIL): S.ABORTING,
    (S.GATE, E.GATE_INCONCLUSIVE): S.GATE,  # asks again after retry_interval_s
    (S.GATE, E.GATE_EXHAUSTED): S.PAUSED,
    (S.GATE, E.FAILURE_THRESHOLD): S.ABORTING,
    (S.GATE, E.PAUSE): S.PAUSED,
    (S.GATE, E.PROMOTE): S.WAVE_RUNNING,
    (S.GATE, E.ABORT): S.ABORTING,
    # gate passed; the next wave starts by itself unless the plan asks a person to approve
    (S.AWAITING_APPROVAL, E.AUTO_APPROVED): S.WAVE_RUNNING,
    (S.AWAITING_APPROVAL, E.RESUME): S.WAVE_RUNNING,
    (S.AWAITING_APPROVAL, E.PROMOTE): S.WAVE_RUNNING,
    (S.AWAITING_APPROVAL, E.FAILURE_THRESHOLD): S.ABORTING,
    (S.AWAITING_APPROVAL, E.PAUSE): S.PAUSED,
    (S.AWAITING_APPROVAL, E.ABORT): S.ABORTING,
    # no new deployments; devices already sent keep reporting
    (S.PAUSED, E.RESUME): S.WAVE_RUNNING,  # same wave: re-checks its threshold and gate
    (S.PAUSED, E.PROMOTE): S.WAVE_RUNNING,  # next wave: accepts the current one as it is
    (S.PAUSED, E.FAILURE_THRESHOLD): S.ABORTING,
    (S.PAUSED, E.ABORT): S.ABORTING,
    # every device sent the version is told to return to its last known good model
    (S.ABORTING, E.ROLLBACK_DONE): S.ABORTED,
}

#: Transitions that move the rollout on to the next wave.
ADVANCING: frozenset[tuple[RolloutState, Event]] = frozenset(
    {
        (S.WAVE_RUNNING, E.EMPTY_WAVE),
        (S.WAVE_RUNNING, E.PROMOTE),
        (S.GATE, E.PROMOTE),
        (S.AWAITING_APPROVAL, E.AUTO_APPROVED),
        (S.AWAITING_APPROVAL, E.RESUME),
        (S.AWAITING_APPROVAL, E.PROMOTE),
        (S.PAUSED, E.PROMOTE),
    }
)
FINAL_STATES: frozenset[RolloutState] = frozenset({S.COMPLETED, S.ABORTED})
_DEPLOYING_STATES = frozenset({S.WAVE_RUNNING, S.GATE, S.AWAITING_APPROVAL})
_OPEN_STATES = frozenset({S.PENDING, S.WAVE_RUNNING, S.GATE, S.AWAITING_APPROVAL, S.PAUSED})


# ----------------------------------------------------------------------------------------- inputs


class Verdict(StrEnum):
    """The canary analysis' answer."""

    PASS = "pass"
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"


@runtime_checkable
class GateInput(Protocol):
    """What ``step`` needs from a canary analysis result (``fleet.canary`` produces one).

    ``verdict`` is ``"pass"``, ``"fail"`` or ``"inconclusive"`` (a ``StrEnum`` works); ``reasons`` explain it.
    """

    @property
    def verdict(self) -> str: ...

    @property
    def reasons(self) -> Sequence[str]: ...


class GateVerdict(BaseModel):
    """A ready-made `GateInput` (for tests, manual verdicts and the REST API)."""

    model_config = ConfigDict(frozen=True)

    verdict: Verdict
    reasons: tuple[str, ...] = ()


_BUSY_UPDATE_STATES = frozenset(
    {
        UpdateState.DOWNLOAD,
        UpdateState.VERIFY,
        UpdateState.INSTALL,
        UpdateState.HEALTH_CHECK,
        UpdateState.COMMIT,
    }
)


class DeviceStatus(BaseModel):
    """The hub's current view of one device, given to every ``step`` (the full inventory, each time).

    ``deployment_id``, ``update_state`` and ``active_*`` mirror the device's retained `DeviceState`;
    ``error`` is the detail of the last failed `UpdateEvent` the device sent for ``deployment_id``.
    A device is counted as succeeded when it runs the rollout's version and is not mid-update, as failed
    when it reports ``failed``/``rollback`` (or an error) for the rollout's deployment.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    device_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")]
    target: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    online: bool = True
    active_model: str | None = None
    active_version: str | None = None
    update_state: UpdateState | None = None
    deployment_id: str | None = None
    error: str | None = None

    @classmethod
    def from_state(
        cls, state: DeviceState, labels: Mapping[str, str] | None = None, error: str | None = None
    ) -> DeviceStatus:
        """Build from a device's retained `DeviceState`, the registry's labels and its last failed event."""
        return cls(
            device_id=state.device_id,
            target=state.target,
            labels=dict(labels or {}),
            online=state.online,
            active_model=state.active.model if state.active else None,
            active_version=state.active.version if state.active else None,
            update_state=state.update_state,
            deployment_id=state.deployment_id,
            error=error,
        )


# ------------------------------------------------------------------------------------- snapshot


class Phase(StrEnum):
    """One device's progress within a rollout."""

    PENDING = "pending"  # eligible, not sent yet
    DISPATCHED = "dispatched"  # sent, no outcome yet
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"  # no outcome within device_timeout_s; a later report still counts
    CURRENT = "current"  # already ran the version when first seen: nothing to do
    SKIPPED = "skipped"  # no fitting variant: reported, never sent
    REMOVED = "removed"  # a pending device that left the inventory or the selector


_ENGAGED = frozenset({Phase.DISPATCHED, Phase.SUCCEEDED, Phase.FAILED, Phase.TIMED_OUT})
_TERMINAL = frozenset({Phase.SUCCEEDED, Phase.FAILED, Phase.TIMED_OUT})
_POPULATION = _ENGAGED | {Phase.PENDING}


class DeviceRecord(BaseModel):
    """What the rollout knows about one device that its selector matched."""

    device_id: str
    device_class: str
    target: str | None
    variant_id: str | None = None
    phase: Phase
    order: int = 0
    canary: bool = False
    wave: int | None = None
    dispatched_at: float | None = None
    finished_at: float | None = None
    detail: str = ""
    rollback: bool = False
    rolled_back: bool = False


class GateProgress(BaseModel):
    """The quality gate of one completed wave."""

    wave: int
    request_id: str
    started_at: float
    next_request_at: float
    attempts: int = 0
    outstanding: bool = False
    reasons: list[str] = Field(default_factory=list)


class TransitionRecord(BaseModel):
    """One entry of the rollout's history."""

    at: float
    source: RolloutState
    event: Event
    target: RolloutState
    wave: int
    reason: str = ""


class RolloutSnapshot(BaseModel):
    """Everything a rollout is: store it as JSON, load it after a restart, pass it to ``step``."""

    schema_version: Literal[1] = 1
    rollout_id: Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
    plan: RolloutPlan
    variants: list[Variant]
    state: RolloutState = RolloutState.PENDING
    reason: str = ""
    wave: int = 0
    created_at: float
    updated_at: float
    state_since: float
    devices: dict[str, DeviceRecord] = Field(default_factory=dict)
    gate: GateProgress | None = None
    deferred: bool = False
    rollback_started_at: float | None = None
    next_order: int = 0
    history: list[TransitionRecord] = Field(default_factory=list)

    @property
    def deployment_id(self) -> str:
        """The ``deployment_id`` of every order this rollout sends."""
        return self.rollout_id

    @property
    def rollback_deployment_id(self) -> str:
        """The ``deployment_id`` of the orders that return devices to their last known good model."""
        return f"{self.rollout_id}.rollback"

    @property
    def final(self) -> bool:
        """Whether the rollout has ended (completed or aborted)."""
        return self.state in FINAL_STATES


# ---------------------------------------------------------------------------------------- actions


class _Action(BaseModel):
    model_config = ConfigDict(frozen=True)


class DeployTo(_Action):
    """Publish a deployment order for ``variant`` to each device (retained, QoS 1)."""

    kind: Literal["deploy"] = "deploy"
    deployment_id: Name
    model: str
    version: str
    variant: Variant
    wave: int
    device_ids: tuple[str, ...]


class RollBack(_Action):
    """Return each device to its last known good model (``allow_downgrade`` order), or clear its order."""

    kind: Literal["rollback"] = "rollback"
    deployment_id: Name
    device_ids: tuple[str, ...]
    reason: str


class RequestGate(_Action):
    """Ask the canary analysis for a verdict on ``candidates`` (on the new version) against ``baseline``.

    Answer with ``step(..., gate_verdict=...)``; telemetry since ``since`` is the evidence.
    """

    kind: Literal["request_gate"] = "request_gate"
    request_id: str
    model: str
    version: str
    wave: int
    attempt: int
    since: float
    candidates: tuple[str, ...]
    baseline: tuple[str, ...]


class Pause(_Action):
    """The rollout stopped sending and needs a person (approval, inconclusive gate, low success)."""

    kind: Literal["pause"] = "pause"
    reason: str


class Skipped(_Action):
    """Devices that will not get the version because no variant fits them."""

    kind: Literal["skipped"] = "skipped"
    device_ids: tuple[str, ...]
    reason: str


class Deferred(_Action):
    """Deployments wait for a maintenance window (``until``: next opening, epoch seconds)."""

    kind: Literal["deferred"] = "deferred"
    reason: str
    until: float | None


class StateChanged(_Action):
    """A transition happened (for the audit log and notifications)."""

    kind: Literal["state_changed"] = "state_changed"
    source: RolloutState
    event: Event
    target: RolloutState
    wave: int
    reason: str


class Notice(_Action):
    """Something the hub should log, e.g. a gate verdict that arrived when none was awaited."""

    kind: Literal["notice"] = "notice"
    message: str


Action = Annotated[
    DeployTo | RollBack | RequestGate | Pause | Skipped | Deferred | StateChanged | Notice,
    Field(discriminator="kind"),
]
ACTIONS_ADAPTER: TypeAdapter[list[Action]] = TypeAdapter(list[Action])


class StepResult(NamedTuple):
    """What ``step`` returns: the snapshot to persist, then the actions to carry out in order."""

    snapshot: RolloutSnapshot
    actions: list[Action]


# ------------------------------------------------------------------------------------------- API


def new_rollout(rollout_id: str, plan: RolloutPlan, variants: Iterable[Variant], *, now: float) -> RolloutSnapshot:
    """A rollout in PENDING; the first ``step`` starts it with the devices it is given."""
    return RolloutSnapshot(
        rollout_id=rollout_id,
        plan=plan,
        variants=list(variants),
        created_at=now,
        updated_at=now,
        state_since=now,
    )


def step(
    snapshot: RolloutSnapshot,
    now: float,
    devices: Iterable[DeviceStatus],
    gate_verdict: GateInput | None = None,
    command: Command | str | None = None,
) -> StepResult:
    """Advance ``snapshot`` to ``now`` given the whole inventory; return the new snapshot and the actions.

    ``snapshot`` is not modified. A ``command`` not allowed in the current state raises `RolloutError`.
    """
    engine = _Engine(_private_copy(snapshot), now)
    try:
        parsed = Command(command) if command is not None else None
    except ValueError:
        raise RolloutError(f"unknown command {command!r}; use one of {', '.join(c.value for c in Command)}") from None
    engine.run(list(devices), gate_verdict, parsed)
    return StepResult(engine.s, engine.actions)


def _private_copy(snapshot: RolloutSnapshot) -> RolloutSnapshot:
    """A copy ``step`` may mutate: the records and the gate are copied, immutable parts are shared.

    (Plan and variants are frozen; lists such as ``history`` are replaced, never changed in place.)
    """
    copy = snapshot.model_copy()
    copy.devices = {device_id: record.model_copy() for device_id, record in snapshot.devices.items()}
    copy.gate = snapshot.gate.model_copy() if snapshot.gate is not None else None
    return copy


def allowed_commands(snapshot: RolloutSnapshot) -> list[Command]:
    """The operator commands the current state accepts."""
    return [c for c in Command if (snapshot.state, Event(c.value)) in TRANSITIONS]


# ---------------------------------------------------------------------------------------- engine


def _digest(seed: str, device_id: str) -> str:
    return hashlib.sha256(f"{seed}\0{device_id}".encode()).hexdigest()


def _verdict_of(value: GateInput) -> tuple[Verdict, list[str]]:
    raw = getattr(value, "verdict", None)
    text = str(getattr(raw, "value", raw)).lower()
    try:
        verdict = Verdict(text)
    except ValueError:
        raise RolloutError(f"gate verdict {raw!r} is not one of pass, fail, inconclusive") from None
    return verdict, [str(r) for r in getattr(value, "reasons", ()) or ()]


class _Engine:
    """One ``step``: mutates its private copy ``s`` and collects ``actions``."""

    def __init__(self, snapshot: RolloutSnapshot, now: float) -> None:
        self.s = snapshot
        self.now = now
        self.plan = snapshot.plan
        self.actions: list[Action] = []
        self.seed = self.plan.seed or snapshot.rollout_id
        self.seen: dict[str, DeviceStatus] = {}

    # -------------------------------------------------------------- driving
    def run(self, devices: list[DeviceStatus], verdict: GateInput | None, command: Command | None) -> None:
        if command is not None and (self.s.state, Event(command.value)) not in TRANSITIONS:
            raise RolloutError(
                f"cannot {command.value} rollout {self.s.rollout_id} while it is {self.s.state.value}; "
                f"allowed: {', '.join(c.value for c in allowed_commands(self.s)) or 'nothing (it has ended)'}"
            )
        self._observe(devices)
        if command is not None:
            self._fire(Event(command.value), f"operator: {command.value}")
        if verdict is not None:
            self._apply_verdict(verdict)
        for _ in range(_MAX_TRANSITIONS_PER_STEP):
            self._act()
            found = self._detect()
            if found is None:
                break
            self._fire(*found)
        else:  # pragma: no cover - the table has no unbounded automatic cycle
            raise RolloutError(f"rollout {self.s.rollout_id} did not settle within one step")
        self.s.updated_at = self.now

    def _fire(self, event: Event, reason: str) -> None:
        source = self.s.state
        try:
            target = TRANSITIONS[(source, event)]
        except KeyError:
            raise RolloutError(f"no transition from {source.value} on {event.value}") from None
        if (source, event) in ADVANCING:
            self.s.wave += 1
            self.s.gate = None
        elif event == E.START:
            self.s.wave = self.plan.first_wave
        self.s.state = target
        self.s.reason = reason
        if target != source:
            self.s.state_since = self.now
        record = TransitionRecord(
            at=self.now, source=source, event=event, target=target, wave=self.s.wave, reason=reason
        )
        self.s.history = [*self.s.history, record][-_HISTORY_LIMIT:]
        self.actions.append(StateChanged(source=source, event=event, target=target, wave=self.s.wave, reason=reason))
        self._enter(source, event, target)

    def _enter(self, source: RolloutState, event: Event, target: RolloutState) -> None:
        if event == E.START:
            self._start()
        elif event == E.WAVE_COMPLETE:
            soak = self.plan.gate.soak_s if self.plan.gate else 0.0
            self.s.gate = GateProgress(
                wave=self.s.wave,
                request_id=f"{self.s.rollout_id}.w{self.s.wave}.{len(self.s.history)}",
                started_at=self.now,
                next_request_at=self.now + soak,
            )
        if target == S.PAUSED:
            self.s.gate = None
            self.actions.append(Pause(reason=self.s.reason))
        elif target == S.AWAITING_APPROVAL and self.plan.needs_approval(self.s.wave):
            self.actions.append(
                Pause(
                    reason=f"{self._wave_name(self.s.wave)} passed; waiting for approval "
                    "(resume or promote to start the next wave)"
                )
            )
        elif target == S.ABORTING:
            self._start_rollback()

    # -------------------------------------------------------------- observing devices
    def _observe(self, devices: list[DeviceStatus]) -> None:
        seen: dict[str, DeviceStatus] = {d.device_id: d for d in devices}
        self.seen = seen
        selector = parse_selector(self.plan.selector)
        accepting = self.s.state in _OPEN_STATES
        newcomers: list[DeviceStatus] = []
        for device_id in sorted(seen):
            status = seen[device_id]
            matches = selector.matches(selector_labels(status.labels, status.target))
            record = self.s.devices.get(device_id)
            if record is None:
                if matches and accepting:
                    newcomers.append(status)
                continue
            if record.phase == Phase.PENDING and not matches:
                record.phase, record.detail = Phase.REMOVED, "no longer matches the selector"
            elif record.phase == Phase.REMOVED and matches:
                record.phase, record.detail = Phase.PENDING, ""
            elif record.phase in _ENGAGED:
                self._classify(record, status)
            if record.rollback and not record.rolled_back:
                self._check_rolled_back(record, status)
        for record in self.s.devices.values():
            if record.phase == Phase.PENDING and record.device_id not in seen:
                record.phase, record.detail = Phase.REMOVED, "left the inventory"
        self._admit(newcomers)
        if self.s.state not in FINAL_STATES:
            self._time_out()

    def _admit(self, newcomers: list[DeviceStatus]) -> None:
        skipped: dict[str, list[str]] = defaultdict(list)
        for status in sorted(newcomers, key=lambda d: _digest(self.seed, d.device_id)):
            record = DeviceRecord(
                device_id=status.device_id,
                device_class=self._class_of(status),
                target=status.target,
                phase=Phase.PENDING,
                order=self.s.next_order,
            )
            self.s.next_order += 1
            if status.active_model == self.plan.model and status.active_version == self.plan.version:
                record.phase, record.detail = Phase.CURRENT, "already runs this version"
            elif status.target is None:
                record.phase, record.detail = Phase.SKIPPED, "device has not reported its target"
            else:
                selection = select_variant(status.target, self.s.variants, self.plan.selection)
                if selection.variant is None:
                    record.phase, record.detail = Phase.SKIPPED, selection.reason
                else:
                    record.variant_id = selection.variant.variant_id
            if record.phase == Phase.SKIPPED:
                skipped[record.detail].append(record.device_id)
            self.s.devices[record.device_id] = record
        for reason, ids in sorted(skipped.items()):
            self.actions.append(Skipped(device_ids=tuple(sorted(ids)), reason=reason))

    def _class_of(self, status: DeviceStatus) -> str:
        parts = [status.target or "unknown"]
        parts += [f"{key}={status.labels.get(key, '')}" for key in self.plan.class_labels]
        return "/".join(parts)

    def _classify(self, record: DeviceRecord, status: DeviceStatus) -> None:
        ours = status.deployment_id == self.s.deployment_id
        on_version = status.active_model == self.plan.model and status.active_version == self.plan.version
        failed_state = status.update_state in (UpdateState.FAILED, UpdateState.ROLLBACK)
        if ours and (status.error or failed_state):
            if record.phase != Phase.FAILED:
                detail = status.error or f"device reported {status.update_state}"
                record.phase, record.detail, record.finished_at = Phase.FAILED, detail, self.now
        elif record.phase == Phase.FAILED:
            return  # a failure is final for this rollout
        elif on_version and status.update_state not in _BUSY_UPDATE_STATES:
            if record.phase != Phase.SUCCEEDED:
                record.phase, record.detail, record.finished_at = Phase.SUCCEEDED, "", self.now
        elif ours and status.update_state == UpdateState.DONE:
            record.phase, record.finished_at = Phase.FAILED, self.now
            record.detail = f"finished the deployment but runs {status.active_model}:{status.active_version}"

    def _check_rolled_back(self, record: DeviceRecord, status: DeviceStatus) -> None:
        on_version = status.active_model == self.plan.model and status.active_version == self.plan.version
        busy = status.deployment_id == self.s.deployment_id and status.update_state in _BUSY_UPDATE_STATES
        if not on_version and not busy:
            record.rolled_back = True

    def _time_out(self) -> None:
        limit = self.plan.device_timeout_s
        for record in self.s.devices.values():
            due = record.dispatched_at is not None and self.now >= record.dispatched_at + limit
            if record.phase == Phase.DISPATCHED and due:
                record.phase, record.finished_at = Phase.TIMED_OUT, self.now
                record.detail = f"no outcome within {limit:g} s"

    # -------------------------------------------------------------- counting
    def _records(self, phases: frozenset[Phase]) -> list[DeviceRecord]:
        return [r for r in self.s.devices.values() if r.phase in phases]

    def _population(self) -> int:
        return len(self._records(_POPULATION))

    def _canary_size(self) -> int:
        return len([r for r in self._records(_POPULATION) if r.canary])

    def _schedule(self) -> list[int]:
        return self.plan.schedule(self._population(), self._canary_size())

    def _cumulative(self, wave: int) -> int:
        schedule = self._schedule()
        return schedule[wave] if wave < len(schedule) else schedule[-1]

    def _wave_name(self, wave: int) -> str:
        return "canary" if wave == 0 else f"wave {wave}"

    # -------------------------------------------------------------- starting
    def _start(self) -> None:
        """Fix the canary (stratified by class) and the order in which waves reach devices."""
        pending = sorted(self._records(frozenset({Phase.PENDING})), key=self._rank)
        by_class: dict[str, list[DeviceRecord]] = defaultdict(list)
        for record in pending:
            by_class[record.device_class].append(record)
        canary: list[DeviceRecord] = []
        if self.plan.canary is not None and pending:
            quotas = self._canary_quotas({c: len(m) for c, m in by_class.items()}, len(pending))
            for cls, members in by_class.items():
                canary += members[: quotas[cls]]
        chosen = {r.device_id for r in canary}
        # spread each class evenly over the waves: key = rank within the class, scaled to [0, 1)
        rest: list[tuple[float, str, DeviceRecord]] = []
        for members in by_class.values():
            others = [m for m in members if m.device_id not in chosen]
            rest += [((i + 0.5) / len(others), _digest(self.seed, m.device_id), m) for i, m in enumerate(others)]
        ordered = sorted(canary, key=self._rank) + [m for _, _, m in sorted(rest, key=lambda t: t[:2])]
        for position, record in enumerate(ordered):
            record.order = position
            record.canary = record.device_id in chosen

    def _rank(self, record: DeviceRecord) -> tuple[bool, str]:
        status = self.seen.get(record.device_id)
        return (not (status is not None and status.online), _digest(self.seed, record.device_id))

    def _canary_quotas(self, sizes: dict[str, int], population: int) -> dict[str, int]:
        spec = self.plan.canary
        if spec is None:
            return dict.fromkeys(sizes, 0)
        quotas = {c: min(spec.min_per_class, n) for c, n in sizes.items()}
        remaining = spec.requested(population) - sum(quotas.values())
        if remaining > 0:
            room = {c: sizes[c] - quotas[c] for c in sizes}
            shares = {c: remaining * sizes[c] / population for c in sizes}
            extra = {c: min(room[c], math.floor(shares[c])) for c in sizes}
            left = remaining - sum(extra.values())
            for cls in sorted(sizes, key=lambda c: (-(shares[c] - math.floor(shares[c])), c)):
                if left <= 0:
                    break
                if room[cls] > extra[cls]:
                    extra[cls] += 1
                    left -= 1
            for cls in sorted(sizes):  # classes that ran out of room hand their share on
                take = min(left, room[cls] - extra[cls])
                extra[cls] += take
                left -= take
            quotas = {c: quotas[c] + extra[c] for c in sizes}
        return quotas

    # -------------------------------------------------------------- acting within a state
    def _act(self) -> None:
        if self.s.state in _DEPLOYING_STATES:
            self._dispatch()
        if self.s.state == S.GATE and self.s.gate is not None and self.plan.gated(self.s.gate.wave):
            self._request_gate()

    def _dispatch(self) -> None:
        engaged = len(self._records(_ENGAGED))
        need = self._cumulative(self.s.wave) - engaged
        if need <= 0:
            return
        if not in_window(self.plan.maintenance_windows, self.now):
            if not self.s.deferred:
                self.s.deferred = True
                until = next_opening(self.plan.maintenance_windows, self.now)
                self.actions.append(Deferred(reason=f"{need} deployment(s) wait for a maintenance window", until=until))
            return
        self.s.deferred = False
        candidates = sorted(
            (r for r in self._records(frozenset({Phase.PENDING})) if self.s.wave > 0 or r.canary),
            key=lambda r: r.order,
        )[:need]
        by_variant: dict[str, list[str]] = defaultdict(list)
        for record in candidates:
            record.phase, record.wave, record.dispatched_at, record.detail = (
                Phase.DISPATCHED,
                self.s.wave,
                self.now,
                "",
            )
            by_variant[record.variant_id or ""].append(record.device_id)
        variants = {v.variant_id: v for v in self.s.variants}
        for variant_id in sorted(by_variant):
            self.actions.append(
                DeployTo(
                    deployment_id=self.s.deployment_id,
                    model=self.plan.model,
                    version=self.plan.version,
                    variant=variants[variant_id],
                    wave=self.s.wave,
                    device_ids=tuple(sorted(by_variant[variant_id])),
                )
            )

    def _request_gate(self) -> None:
        gate = self.s.gate
        if gate is None or gate.outstanding or self.now < gate.next_request_at:
            return
        gate.attempts += 1
        gate.outstanding = True
        candidates = tuple(sorted(r.device_id for r in self._records(frozenset({Phase.SUCCEEDED}))))
        baseline = tuple(sorted(r.device_id for r in self._records(frozenset({Phase.PENDING}))))
        self.actions.append(
            RequestGate(
                request_id=f"{gate.request_id}.{gate.attempts}",
                model=self.plan.model,
                version=self.plan.version,
                wave=gate.wave,
                attempt=gate.attempts,
                since=gate.started_at,
                candidates=candidates,
                baseline=baseline,
            )
        )

    def _apply_verdict(self, value: GateInput) -> None:
        verdict, reasons = _verdict_of(value)
        gate = self.s.gate
        if self.s.state != S.GATE or gate is None or not gate.outstanding:
            self.actions.append(
                Notice(
                    message=f"gate verdict {verdict.value} ignored: no verdict was awaited "
                    f"(rollout is {self.s.state.value})"
                )
            )
            return
        gate.outstanding = False
        gate.reasons = reasons
        why = "; ".join(reasons) or "no reasons given"
        if verdict == Verdict.PASS:
            self._fire(E.GATE_PASS, f"gate passed after {self._wave_name(gate.wave)}: {why}")
        elif verdict == Verdict.FAIL:
            self._fire(E.GATE_FAIL, f"gate failed after {self._wave_name(gate.wave)}: {why}")
        else:
            retry = self.plan.gate.retry_interval_s if self.plan.gate else 0.0
            gate.next_request_at = self.now + retry
            self._fire(E.GATE_INCONCLUSIVE, f"gate inconclusive (attempt {gate.attempts}): {why}")

    # -------------------------------------------------------------- detecting events
    def _detect(self) -> tuple[Event, str] | None:
        state = self.s.state
        if state == S.PENDING:
            return (
                E.START,
                f"started with {len(self._records(frozenset({Phase.PENDING})))} device(s) to update",
            )
        if state in (S.WAVE_RUNNING, S.GATE, S.AWAITING_APPROVAL, S.PAUSED):
            tripped = self._failure_threshold()
            if tripped:
                return E.FAILURE_THRESHOLD, tripped
        if state == S.WAVE_RUNNING:
            return self._wave_event()
        if state == S.GATE:
            return self._gate_event()
        if state == S.AWAITING_APPROVAL and not self.plan.needs_approval(self.s.wave):
            return E.AUTO_APPROVED, f"starting {self._wave_name(self.s.wave + 1)}"
        if state == S.ABORTING:
            return self._rollback_event()
        return None

    def _failure_threshold(self) -> str | None:
        spec = self.plan.failure
        bad = {Phase.FAILED, Phase.TIMED_OUT} if spec.count_timeouts else {Phase.FAILED}
        failed = len(self._records(frozenset(bad)))
        finished = len(self._records(frozenset(bad | {Phase.SUCCEEDED})))
        if failed == 0:
            return None
        all_finished = not self._records(frozenset({Phase.DISPATCHED}))
        if finished < spec.min_devices and not all_finished:
            return None
        if spec.max_count is not None and failed > spec.max_count:
            return f"{failed} device(s) failed, more than the {spec.max_count} allowed"
        if spec.max_rate is not None and failed / finished > spec.max_rate:
            rate = failed / finished
            return f"{failed} of {finished} finished device(s) failed ({rate:.1%} > {spec.max_rate:.1%})"
        return None

    def _wave_event(self) -> tuple[Event, str] | None:
        wave = self.s.wave
        target = self._cumulative(wave)
        if len(self._records(_ENGAGED)) < target:
            return None
        members = [r for r in self._records(_ENGAGED) if r.wave == wave]
        succeeded = sum(1 for r in members if r.phase == Phase.SUCCEEDED)
        finished = sum(1 for r in members if r.phase in _TERMINAL)
        needed = math.ceil(self.plan.success_threshold * len(members) - 1e-9)
        name = self._wave_name(wave)
        summary = f"{name}: {succeeded}/{len(members)} succeeded (needs {needed})"
        if target >= self._population():
            if self._records(frozenset({Phase.DISPATCHED})):
                return None  # the last wave ends when every device sent has an outcome
            if succeeded >= needed:
                return E.LAST_WAVE_COMPLETE, f"{summary}; every device reached"
            return E.BELOW_SUCCESS_THRESHOLD, f"{summary}; below the success threshold"
        if not members:
            return E.EMPTY_WAVE, f"{name} has no devices; moving on"
        if succeeded >= needed:
            return E.WAVE_COMPLETE, summary
        if finished == len(members):
            return E.BELOW_SUCCESS_THRESHOLD, f"{summary}; below the success threshold"
        return None

    def _gate_event(self) -> tuple[Event, str] | None:
        gate = self.s.gate
        if gate is None or not self.plan.gated(gate.wave):
            return E.GATE_SKIPPED, f"no gate after {self._wave_name(self.s.wave)}"
        spec = self.plan.gate
        if spec is None:  # gated() is false without a gate spec
            return E.GATE_SKIPPED, "no gate configured"
        deadline = gate.started_at + spec.max_wait_s
        waiting_too_long = self.now >= deadline or (not gate.outstanding and gate.next_request_at > deadline)
        if waiting_too_long:
            last = "; ".join(gate.reasons) or "no verdict received"
            return (
                E.GATE_EXHAUSTED,
                f"gate after {self._wave_name(gate.wave)} inconclusive for {spec.max_wait_s:g} s "
                f"({gate.attempts} attempt(s)): {last}; a person must decide (resume, promote or abort)",
            )
        return None

    def _rollback_event(self) -> tuple[Event, str] | None:
        records = [r for r in self.s.devices.values() if r.rollback]
        waiting = sorted(r.device_id for r in records if not r.rolled_back)
        if not waiting:
            return E.ROLLBACK_DONE, f"{len(records)} device(s) back on their last known good model"
        started = self.s.rollback_started_at if self.s.rollback_started_at is not None else self.now
        if self.now >= started + self.plan.device_timeout_s:
            shown = ", ".join(waiting[:10]) + (" ..." if len(waiting) > 10 else "")
            return E.ROLLBACK_DONE, f"{len(waiting)} device(s) did not confirm the rollback in time: {shown}"
        return None

    def _start_rollback(self) -> None:
        self.s.gate = None
        self.s.rollback_started_at = self.now
        targets = sorted(r.device_id for r in self._records(_ENGAGED))
        for device_id in targets:
            record = self.s.devices[device_id]
            record.rollback = True
            if device_id in self.seen:
                self._check_rolled_back(record, self.seen[device_id])
        if targets:
            self.actions.append(
                RollBack(
                    deployment_id=self.s.rollback_deployment_id,
                    device_ids=tuple(targets),
                    reason=self.s.reason,
                )
            )


# ---------------------------------------------------------------------------------------- status


class PhaseCounts(BaseModel):
    """Devices per phase."""

    pending: int = 0
    dispatched: int = 0
    succeeded: int = 0
    failed: int = 0
    timed_out: int = 0
    current: int = 0
    skipped: int = 0
    removed: int = 0

    def add(self, phase: Phase) -> None:
        setattr(self, phase.value, getattr(self, phase.value) + 1)


class WaveProgress(BaseModel):
    """One wave: how many devices it should reach in total and how its own devices are doing."""

    wave: int
    name: str
    cumulative_target: int
    devices: PhaseCounts


class RolloutStatus(BaseModel):
    """What ``edgefleet rollout status ID`` shows: overall, per wave and per device class."""

    rollout_id: str
    model: str
    version: str
    state: RolloutState
    reason: str
    wave: int
    wave_name: str
    wave_count: int
    on_version_percent: float
    totals: PhaseCounts
    waves: list[WaveProgress]
    classes: dict[str, PhaseCounts]
    gate: GateProgress | None
    allowed_commands: list[Command]
    updated_at: float


def summarize(snapshot: RolloutSnapshot) -> RolloutStatus:
    """Progress of a rollout per wave and per device class (pure; JSON-ready)."""
    engine = _Engine(snapshot, snapshot.updated_at)
    schedule = engine._schedule()
    totals = PhaseCounts()
    classes: dict[str, PhaseCounts] = defaultdict(PhaseCounts)
    per_wave: dict[int, PhaseCounts] = defaultdict(PhaseCounts)
    for record in snapshot.devices.values():
        totals.add(record.phase)
        classes[record.device_class].add(record.phase)
        if record.wave is not None:
            per_wave[record.wave].add(record.phase)
    first = snapshot.plan.first_wave
    waves = [
        WaveProgress(wave=w, name=engine._wave_name(w), cumulative_target=schedule[w], devices=per_wave[w])
        for w in range(first, len(schedule))
    ]
    denominator = engine._population() + totals.current
    on_version = totals.succeeded + totals.current
    return RolloutStatus(
        rollout_id=snapshot.rollout_id,
        model=snapshot.plan.model,
        version=snapshot.plan.version,
        state=snapshot.state,
        reason=snapshot.reason,
        wave=snapshot.wave,
        wave_name=engine._wave_name(snapshot.wave),
        wave_count=len(schedule) - first,
        on_version_percent=round(100.0 * on_version / denominator, 2) if denominator else 100.0,
        totals=totals,
        waves=waves,
        classes=dict(sorted(classes.items())),
        gate=snapshot.gate,
        allowed_commands=allowed_commands(snapshot),
        updated_at=snapshot.updated_at,
    )


def dump_actions(actions: Sequence[Action]) -> bytes:
    """Serialise actions to JSON (e.g. for an outbox table the hub drains after persisting the snapshot)."""
    return ACTIONS_ADAPTER.dump_json(list(actions))


def load_actions(data: bytes | str) -> list[Action]:
    """Parse what `dump_actions` wrote."""
    return ACTIONS_ADAPTER.validate_json(data)


__all__ = [
    "ACTIONS_ADAPTER",
    "ADVANCING",
    "FINAL_STATES",
    "TRANSITIONS",
    "Action",
    "Command",
    "Deferred",
    "DeployTo",
    "DeviceRecord",
    "DeviceStatus",
    "Event",
    "GateInput",
    "GateProgress",
    "GateVerdict",
    "Notice",
    "Pause",
    "Phase",
    "PhaseCounts",
    "RequestGate",
    "RollBack",
    "RolloutError",
    "RolloutSnapshot",
    "RolloutState",
    "RolloutStatus",
    "Skipped",
    "StateChanged",
    "StepResult",
    "TransitionRecord",
    "Verdict",
    "WaveProgress",
    "allowed_commands",
    "dump_actions",
    "load_actions",
    "new_rollout",
    "step",
    "summarize",
]
