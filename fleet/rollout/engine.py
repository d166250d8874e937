"""``step``: advance a rollout to ``now`` given the whole inventory. Pure: no I/O, no clock.

``step`` copies the snapshot, then an `_Engine` observes the devices, applies the operator's command and the
gate's verdict, and repeats act-then-detect until no transition fires. Each transition is one entry of
`TRANSITIONS`, recorded in the history and reported as a `StateChanged` action.
"""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from collections.abc import Iterable
from typing import NamedTuple

from fleet.errors import RolloutError
from fleet.rollout.actions import (
    Action,
    Deferred,
    DeployTo,
    Notice,
    Pause,
    RequestGate,
    RollBack,
    Skipped,
    StateChanged,
)
from fleet.rollout.inputs import BUSY_UPDATE_STATES, DeviceStatus, GateInput
from fleet.rollout.snapshot import (
    ENGAGED,
    TERMINAL,
    DeviceRecord,
    GateProgress,
    GateVerdictRecord,
    Phase,
    RolloutSnapshot,
    TransitionRecord,
    allowed_commands,
    population,
    records_in,
    schedule,
    wave_name,
)
from fleet.rollout.states import (
    ADVANCING,
    DEPLOYING_STATES,
    FINAL_STATES,
    OPEN_STATES,
    TRANSITIONS,
    Command,
    Event,
    RolloutState,
)
from fleet.selection import parse_selector, select_variant, selector_labels
from fleet.verdict import Verdict
from fleet.windows import in_window, next_opening
from fleet.wire.messages import UpdateState

_HISTORY_LIMIT = 500
_MAX_TRANSITIONS_PER_STEP = 256


class StepResult(NamedTuple):
    """What ``step`` returns: the snapshot to persist, then the actions to carry out in order."""

    snapshot: RolloutSnapshot
    actions: list[Action]


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
    return StepResult(engine.snapshot, engine.actions)


def _private_copy(snapshot: RolloutSnapshot) -> RolloutSnapshot:
    """A copy ``step`` may mutate: the records and the gate are copied, immutable parts are shared.

    (Plan and variants are frozen; lists such as ``history`` are replaced, never changed in place.)
    """
    copy = snapshot.model_copy()
    copy.devices = {device_id: record.model_copy() for device_id, record in snapshot.devices.items()}
    copy.gate = snapshot.gate.model_copy() if snapshot.gate is not None else None
    return copy


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
    """One ``step``: mutates its private copy ``snapshot`` and collects ``actions``."""

    def __init__(self, snapshot: RolloutSnapshot, now: float) -> None:
        self.snapshot = snapshot
        self.now = now
        self.plan = snapshot.plan
        self.actions: list[Action] = []
        self.seed = self.plan.seed or snapshot.rollout_id
        self.seen: dict[str, DeviceStatus] = {}

    # -------------------------------------------------------------- driving
    def run(self, devices: list[DeviceStatus], verdict: GateInput | None, command: Command | None) -> None:
        if command is not None and (self.snapshot.state, Event(command.value)) not in TRANSITIONS:
            raise RolloutError(
                f"cannot {command.value} rollout {self.snapshot.rollout_id} while it is {self.snapshot.state.value}; "
                f"allowed: {', '.join(c.value for c in allowed_commands(self.snapshot)) or 'nothing (it has ended)'}"
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
            raise RolloutError(f"rollout {self.snapshot.rollout_id} did not settle within one step")
        self.snapshot.updated_at = self.now

    def _fire(self, event: Event, reason: str) -> None:
        source = self.snapshot.state
        try:
            target = TRANSITIONS[(source, event)]
        except KeyError:
            raise RolloutError(f"no transition from {source.value} on {event.value}") from None
        if (source, event) in ADVANCING:
            self.snapshot.wave += 1
            self.snapshot.gate = None
        elif event == Event.START:
            self.snapshot.wave = self.plan.first_wave
        self.snapshot.state = target
        self.snapshot.reason = reason
        stopping = target in (RolloutState.PAUSED, RolloutState.ABORTING) or (
            target == RolloutState.ABORTED and source != RolloutState.ABORTING  # aborted before anything was sent
        )
        if stopping and target != source:
            self.snapshot.cause = reason
        elif source == RolloutState.PAUSED and target != source:
            self.snapshot.cause = ""  # resumed or promoted: the pause is over
        if target != source:
            self.snapshot.state_since = self.now
        record = TransitionRecord(
            at=self.now, source=source, event=event, target=target, wave=self.snapshot.wave, reason=reason
        )
        self.snapshot.history = [*self.snapshot.history, record][-_HISTORY_LIMIT:]
        self.actions.append(
            StateChanged(source=source, event=event, target=target, wave=self.snapshot.wave, reason=reason)
        )
        self._enter(source, event, target)

    def _enter(self, source: RolloutState, event: Event, target: RolloutState) -> None:
        if event == Event.START:
            self._start()
        elif event == Event.WAVE_COMPLETE:
            soak = self.plan.gate.soak_s if self.plan.gate else 0.0
            self.snapshot.gate = GateProgress(
                wave=self.snapshot.wave,
                request_id=f"{self.snapshot.rollout_id}.w{self.snapshot.wave}.{len(self.snapshot.history)}",
                started_at=self.now,
                next_request_at=self.now + soak,
            )
        if target == RolloutState.PAUSED:
            self.snapshot.gate = None
            self.actions.append(Pause(reason=self.snapshot.reason))
        elif target == RolloutState.AWAITING_APPROVAL and self.plan.needs_approval(self.snapshot.wave):
            self.actions.append(
                Pause(
                    reason=f"{wave_name(self.snapshot.wave)} passed; waiting for approval "
                    "(resume or promote to start the next wave)"
                )
            )
        elif target == RolloutState.ABORTING:
            self._start_rollback()

    # -------------------------------------------------------------- observing devices
    def _observe(self, devices: list[DeviceStatus]) -> None:
        seen: dict[str, DeviceStatus] = {d.device_id: d for d in devices}
        self.seen = seen
        selector = parse_selector(self.plan.selector)
        accepting = self.snapshot.state in OPEN_STATES
        newcomers: list[DeviceStatus] = []
        for device_id in sorted(seen):
            status = seen[device_id]
            matches = selector.matches(selector_labels(status.labels, status.target))
            record = self.snapshot.devices.get(device_id)
            if record is None:
                if matches and accepting:
                    newcomers.append(status)
                continue
            if record.phase == Phase.PENDING and not matches:
                record.phase, record.detail = Phase.REMOVED, "no longer matches the selector"
            elif record.phase == Phase.REMOVED and matches:
                record.phase, record.detail = Phase.PENDING, ""
            elif record.phase in ENGAGED:
                self._classify(record, status)
            if record.rollback and not record.rolled_back:
                self._check_rolled_back(record, status)
        for record in self.snapshot.devices.values():
            if record.phase == Phase.PENDING and record.device_id not in seen:
                record.phase, record.detail = Phase.REMOVED, "left the inventory"
        self._admit(newcomers)
        if self.snapshot.state not in FINAL_STATES:
            self._time_out()

    def _admit(self, newcomers: list[DeviceStatus]) -> None:
        skipped: dict[str, list[str]] = defaultdict(list)
        for status in sorted(newcomers, key=lambda d: _digest(self.seed, d.device_id)):
            record = DeviceRecord(
                device_id=status.device_id,
                device_class=self._class_of(status),
                target=status.target,
                phase=Phase.PENDING,
                order=self.snapshot.next_order,
            )
            self.snapshot.next_order += 1
            if status.active_model == self.plan.model and status.active_version == self.plan.version:
                record.phase, record.detail = Phase.CURRENT, "already runs this version"
            elif status.target is None:
                record.phase, record.detail = Phase.SKIPPED, "device has not reported its target"
            else:
                selection = select_variant(status.target, self.snapshot.variants, self.plan.selection)
                if selection.variant is None:
                    record.phase, record.detail = Phase.SKIPPED, selection.reason
                else:
                    record.variant_id = selection.variant.variant_id
            if record.phase == Phase.SKIPPED:
                skipped[record.detail].append(record.device_id)
            self.snapshot.devices[record.device_id] = record
        for reason, ids in sorted(skipped.items()):
            self.actions.append(Skipped(device_ids=tuple(sorted(ids)), reason=reason))

    def _class_of(self, status: DeviceStatus) -> str:
        parts = [status.target or "unknown"]
        parts += [f"{key}={status.labels.get(key, '')}" for key in self.plan.class_labels]
        return "/".join(parts)

    def _classify(self, record: DeviceRecord, status: DeviceStatus) -> None:
        ours = status.deployment_id == self.snapshot.deployment_id
        on_version = status.active_model == self.plan.model and status.active_version == self.plan.version
        failed_state = status.update_state in (UpdateState.FAILED, UpdateState.ROLLBACK)
        if ours and (status.error or failed_state):
            if record.phase != Phase.FAILED:
                detail = status.error or f"device reported {status.update_state}"
                record.phase, record.detail, record.finished_at = Phase.FAILED, detail, self.now
        elif record.phase == Phase.FAILED:
            return  # a failure is final for this rollout
        elif on_version and status.update_state not in BUSY_UPDATE_STATES:
            if record.phase != Phase.SUCCEEDED:
                record.phase, record.detail, record.finished_at = Phase.SUCCEEDED, "", self.now
        elif ours and status.update_state == UpdateState.DONE:
            record.phase, record.finished_at = Phase.FAILED, self.now
            record.detail = f"finished the deployment but runs {status.active_model}:{status.active_version}"

    def _check_rolled_back(self, record: DeviceRecord, status: DeviceStatus) -> None:
        on_version = status.active_model == self.plan.model and status.active_version == self.plan.version
        busy = status.deployment_id == self.snapshot.deployment_id and status.update_state in BUSY_UPDATE_STATES
        if not on_version and not busy:
            record.rolled_back = True

    def _time_out(self) -> None:
        limit = self.plan.device_timeout_s
        for record in self.snapshot.devices.values():
            due = record.dispatched_at is not None and self.now >= record.dispatched_at + limit
            if record.phase == Phase.DISPATCHED and due:
                record.phase, record.finished_at = Phase.TIMED_OUT, self.now
                record.detail = f"no outcome within {limit:g} s"

    # -------------------------------------------------------------- counting
    def _cumulative(self, wave: int) -> int:
        targets = schedule(self.snapshot)
        return targets[wave] if wave < len(targets) else targets[-1]

    # -------------------------------------------------------------- starting
    def _start(self) -> None:
        """Fix the canary (stratified by class) and the order in which waves reach devices."""
        pending = sorted(records_in(self.snapshot, frozenset({Phase.PENDING})), key=self._rank)
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
        if self.snapshot.state in DEPLOYING_STATES:
            self._dispatch()
        if (
            self.snapshot.state == RolloutState.GATE
            and self.snapshot.gate is not None
            and self.plan.gated(self.snapshot.gate.wave)
        ):
            self._request_gate()

    def _dispatch(self) -> None:
        engaged = len(records_in(self.snapshot, ENGAGED))
        need = self._cumulative(self.snapshot.wave) - engaged
        if need <= 0:
            return
        if not in_window(self.plan.maintenance_windows, self.now):
            if not self.snapshot.deferred:
                self.snapshot.deferred = True
                until = next_opening(self.plan.maintenance_windows, self.now)
                self.actions.append(Deferred(reason=f"{need} deployment(s) wait for a maintenance window", until=until))
            return
        self.snapshot.deferred = False
        candidates = sorted(
            (r for r in records_in(self.snapshot, frozenset({Phase.PENDING})) if self.snapshot.wave > 0 or r.canary),
            key=lambda r: r.order,
        )[:need]
        by_variant: dict[str, list[str]] = defaultdict(list)
        for record in candidates:
            record.phase, record.wave, record.dispatched_at, record.detail = (
                Phase.DISPATCHED,
                self.snapshot.wave,
                self.now,
                "",
            )
            by_variant[record.variant_id or ""].append(record.device_id)
        variants = {v.variant_id: v for v in self.snapshot.variants}
        for variant_id in sorted(by_variant):
            self.actions.append(
                DeployTo(
                    deployment_id=self.snapshot.deployment_id,
                    model=self.plan.model,
                    version=self.plan.version,
                    variant=variants[variant_id],
                    wave=self.snapshot.wave,
                    device_ids=tuple(sorted(by_variant[variant_id])),
                )
            )

    def _request_gate(self) -> None:
        gate = self.snapshot.gate
        if gate is None or gate.outstanding or self.now < gate.next_request_at:
            return
        gate.attempts += 1
        gate.outstanding = True
        candidates = tuple(sorted(r.device_id for r in records_in(self.snapshot, frozenset({Phase.SUCCEEDED}))))
        baseline = tuple(sorted(r.device_id for r in records_in(self.snapshot, frozenset({Phase.PENDING}))))
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
        gate = self.snapshot.gate
        if self.snapshot.state != RolloutState.GATE or gate is None or not gate.outstanding:
            self.actions.append(
                Notice(
                    message=f"gate verdict {verdict.value} ignored: no verdict was awaited "
                    f"(rollout is {self.snapshot.state.value})"
                )
            )
            return
        gate.outstanding = False
        gate.reasons = reasons
        record = GateVerdictRecord(
            at=self.now, wave=gate.wave, attempt=gate.attempts, verdict=verdict.value, reasons=reasons
        )
        self.snapshot.gate_verdicts = [*self.snapshot.gate_verdicts, record][-_HISTORY_LIMIT:]
        why = "; ".join(reasons) or "no reasons given"
        if verdict == Verdict.PASS:
            self._fire(Event.GATE_PASS, f"gate passed after {wave_name(gate.wave)}: {why}")
        elif verdict == Verdict.FAIL:
            self._fire(Event.GATE_FAIL, f"gate failed after {wave_name(gate.wave)}: {why}")
        else:
            retry = self.plan.gate.retry_interval_s if self.plan.gate else 0.0
            gate.next_request_at = self.now + retry
            self._fire(Event.GATE_INCONCLUSIVE, f"gate inconclusive (attempt {gate.attempts}): {why}")

    # -------------------------------------------------------------- detecting events
    def _detect(self) -> tuple[Event, str] | None:
        state = self.snapshot.state
        if state == RolloutState.PENDING:
            return (
                Event.START,
                f"started with {len(records_in(self.snapshot, frozenset({Phase.PENDING})))} device(s) to update",
            )
        if state in (RolloutState.WAVE_RUNNING, RolloutState.GATE, RolloutState.AWAITING_APPROVAL, RolloutState.PAUSED):
            tripped = self._failure_threshold()
            if tripped:
                return Event.FAILURE_THRESHOLD, tripped
        if state == RolloutState.WAVE_RUNNING:
            return self._wave_event()
        if state == RolloutState.GATE:
            return self._gate_event()
        if state == RolloutState.AWAITING_APPROVAL and not self.plan.needs_approval(self.snapshot.wave):
            return Event.AUTO_APPROVED, f"starting {wave_name(self.snapshot.wave + 1)}"
        if state == RolloutState.ABORTING:
            return self._rollback_event()
        return None

    def _failure_threshold(self) -> str | None:
        spec = self.plan.failure
        bad = {Phase.FAILED, Phase.TIMED_OUT} if spec.count_timeouts else {Phase.FAILED}
        failed = len(records_in(self.snapshot, frozenset(bad)))
        finished = len(records_in(self.snapshot, frozenset(bad | {Phase.SUCCEEDED})))
        if failed == 0:
            return None
        all_finished = not records_in(self.snapshot, frozenset({Phase.DISPATCHED}))
        if finished < spec.min_devices and not all_finished:
            return None
        if spec.max_count is not None and failed > spec.max_count:
            return f"{failed} device(s) failed, more than the {spec.max_count} allowed"
        if spec.max_rate is not None and failed / finished > spec.max_rate:
            rate = failed / finished
            return f"{failed} of {finished} finished device(s) failed ({rate:.1%} > {spec.max_rate:.1%})"
        return None

    def _wave_event(self) -> tuple[Event, str] | None:
        wave = self.snapshot.wave
        target = self._cumulative(wave)
        if len(records_in(self.snapshot, ENGAGED)) < target:
            return None
        members = [r for r in records_in(self.snapshot, ENGAGED) if r.wave == wave]
        succeeded = sum(1 for r in members if r.phase == Phase.SUCCEEDED)
        finished = sum(1 for r in members if r.phase in TERMINAL)
        needed = math.ceil(self.plan.success_threshold * len(members) - 1e-9)
        name = wave_name(wave)
        summary = f"{name}: {succeeded}/{len(members)} succeeded (needs {needed})"
        if target >= population(self.snapshot):
            if records_in(self.snapshot, frozenset({Phase.DISPATCHED})):
                return None  # the last wave ends when every device sent has an outcome
            if succeeded >= needed:
                return Event.LAST_WAVE_COMPLETE, f"{summary}; every device reached"
            return Event.BELOW_SUCCESS_THRESHOLD, f"{summary}; below the success threshold"
        if not members:
            return Event.EMPTY_WAVE, f"{name} has no devices; moving on"
        if succeeded >= needed:
            return Event.WAVE_COMPLETE, summary
        if finished == len(members):
            return Event.BELOW_SUCCESS_THRESHOLD, f"{summary}; below the success threshold"
        return None

    def _gate_event(self) -> tuple[Event, str] | None:
        gate = self.snapshot.gate
        if gate is None or not self.plan.gated(gate.wave):
            return Event.GATE_SKIPPED, f"no gate after {wave_name(self.snapshot.wave)}"
        spec = self.plan.gate
        if spec is None:  # gated() is false without a gate spec
            return Event.GATE_SKIPPED, "no gate configured"
        deadline = gate.started_at + spec.max_wait_s
        waiting_too_long = self.now >= deadline or (not gate.outstanding and gate.next_request_at > deadline)
        if waiting_too_long:
            last = "; ".join(gate.reasons) or "no verdict received"
            return (
                Event.GATE_EXHAUSTED,
                f"gate after {wave_name(gate.wave)} inconclusive for {spec.max_wait_s:g} s "
                f"({gate.attempts} attempt(s)): {last}; a person must decide (resume, promote or abort)",
            )
        return None

    def _rollback_event(self) -> tuple[Event, str] | None:
        records = [r for r in self.snapshot.devices.values() if r.rollback]
        waiting = sorted(r.device_id for r in records if not r.rolled_back)
        if not waiting:
            return Event.ROLLBACK_DONE, f"{len(records)} device(s) back on their last known good model"
        started = self.snapshot.rollback_started_at if self.snapshot.rollback_started_at is not None else self.now
        if self.now >= started + self.plan.device_timeout_s:
            shown = ", ".join(waiting[:10]) + (" ..." if len(waiting) > 10 else "")
            return Event.ROLLBACK_DONE, f"{len(waiting)} device(s) did not confirm the rollback in time: {shown}"
        return None

    def _start_rollback(self) -> None:
        self.snapshot.gate = None
        self.snapshot.rollback_started_at = self.now
        targets = sorted(r.device_id for r in records_in(self.snapshot, ENGAGED))
        for device_id in targets:
            record = self.snapshot.devices[device_id]
            record.rollback = True
            if device_id in self.seen:
                self._check_rolled_back(record, self.seen[device_id])
        if targets:
            self.actions.append(
                RollBack(
                    deployment_id=self.snapshot.rollback_deployment_id,
                    device_ids=tuple(targets),
                    reason=self.snapshot.reason,
                )
            )
