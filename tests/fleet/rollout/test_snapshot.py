"""Snapshots (fleet/rollout/snapshot.py) and actions stored as JSON: a restarted hub continues where it was."""

from __future__ import annotations

import json
from pathlib import Path

from fleet.rollout import (
    DeployTo,
    DeviceStatus,
    Event,
    GateVerdict,
    Phase,
    RequestGate,
    RolloutSnapshot,
    RolloutState,
    StateChanged,
    Verdict,
    dump_actions,
    load_actions,
    new_rollout,
    step,
)
from fleet.rollout_plan import (
    FailureThreshold,
    GateSpec,
)
from fleet.wire.messages import UpdateState
from tests.fleet.rollout.simulated_fleet import (
    FLEET,
    MODEL,
    NEW,
    OLD,
    T0,
    VARIANTS,
    drive,
    mixed_fleet,
    plan,
)

#: A rollout waiting for its canary's gate, and the actions that led there, as the code before the split of
#: ``fleet/rollout.py`` into a package stored them.
STORED_BEFORE_SPLIT = Path(__file__).parent / "data" / "snapshot_before_package_split.json"


def test_json_round_trip_mid_rollout_continues_identically() -> None:
    def run(persist: bool) -> tuple[str, list[str]]:
        fleet = mixed_fleet(FLEET, {"jetson-orin": "fail"})
        p = plan(
            gate=GateSpec(after="every_wave", retry_interval_s=120, max_wait_s=3000),
            failure=FailureThreshold(max_rate=0.3, min_devices=5),
            success_threshold=0.7,
        )
        snapshot = new_rollout("r24", p, VARIANTS, now=T0)
        log: list[str] = []
        now, pending, answers = T0, None, iter([Verdict.INCONCLUSIVE, Verdict.PASS] * 10)
        while not snapshot.final and now < T0 + 50_000:
            verdict = GateVerdict(verdict=next(answers), reasons=("r",)) if pending else None
            snapshot, actions = step(snapshot, now, fleet.statuses(now), gate_verdict=verdict)
            pending = any(isinstance(a, RequestGate) for a in actions) or (pending and verdict is None)
            if persist:  # what a restarted hub would load
                snapshot = RolloutSnapshot.model_validate_json(snapshot.model_dump_json())
                actions = load_actions(dump_actions(actions))
            fleet.apply(now, actions)
            log.append(dump_actions(actions).decode())
            now += 90
        return snapshot.model_dump_json(), log

    plain_snapshot, plain_log = run(persist=False)
    events = RolloutSnapshot.model_validate_json(plain_snapshot).history
    assert {Event.GATE_INCONCLUSIVE, Event.GATE_PASS} <= {h.event for h in events}
    assert max(h.wave for h in events) == 3
    stored_snapshot, stored_log = run(persist=True)
    assert stored_log == plain_log
    assert stored_snapshot == plain_snapshot
    assert '"state":"aborted"' in plain_snapshot or '"state":"completed"' in plain_snapshot


def test_restart_from_stored_snapshot_mid_wave() -> None:
    fleet = mixed_fleet(FLEET)
    snapshot, now = drive(
        new_rollout("r25", plan(), VARIANTS, now=T0), fleet, until=lambda snapshot: snapshot.wave == 2
    )
    stored = snapshot.model_dump_json()
    del snapshot  # the hub process dies here
    restored = RolloutSnapshot.model_validate_json(stored)
    restored, _ = drive(restored, fleet, now=now + 600)
    assert restored.state == RolloutState.COMPLETED
    assert all(d.deployments == 1 for d in fleet.devices.values())  # nothing sent twice


def test_a_snapshot_stored_before_the_package_split_loads_and_continues() -> None:
    stored = json.loads(STORED_BEFORE_SPLIT.read_text())
    snapshot = RolloutSnapshot.model_validate_json(json.dumps(stored["snapshot"]))
    added_since = {"cause": "", "gate_verdicts": []}  # fields added later load with their defaults
    assert json.loads(snapshot.model_dump_json()) == {**stored["snapshot"], **added_since}
    actions = load_actions(json.dumps(stored["actions"]))
    assert json.loads(dump_actions(actions)) == stored["actions"]
    assert snapshot.state == RolloutState.GATE and snapshot.gate is not None and snapshot.gate.outstanding

    def status(device_id: str) -> DeviceStatus:
        record = snapshot.devices[device_id]
        on_new = record.phase == Phase.SUCCEEDED
        failed = record.phase == Phase.FAILED
        return DeviceStatus(
            device_id=device_id,
            target=record.target,
            labels={"env": "prod"},
            active_model=MODEL,
            active_version=NEW if on_new else OLD,
            update_state=UpdateState.FAILED if failed else UpdateState.DONE if on_new else UpdateState.IDLE,
            deployment_id=snapshot.deployment_id if record.phase != Phase.PENDING else None,
            error="self-test failed" if failed else None,
        )

    now = snapshot.updated_at + 60
    verdict = GateVerdict(verdict=Verdict.PASS, reasons=("canary as good as the baseline",))
    after, actions = step(snapshot, now, [status(d) for d in snapshot.devices], gate_verdict=verdict)
    events = [a.event for a in actions if isinstance(a, StateChanged)]
    assert events[:2] == [Event.GATE_PASS, Event.AUTO_APPROVED] and after.state == RolloutState.WAVE_RUNNING
    assert [a.wave for a in actions if isinstance(a, DeployTo)] == [after.wave] and after.wave >= 1
