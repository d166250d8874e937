"""``step`` (fleet/rollout/engine.py), driven against a small simulated fleet (pure: no broker, no clock)."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest

from fleet.rollout import (
    Command,
    Deferred,
    DeployTo,
    Event,
    GateVerdict,
    Notice,
    Pause,
    Phase,
    RequestGate,
    RollBack,
    RolloutError,
    RolloutSnapshot,
    RolloutState,
    Skipped,
    StateChanged,
    Verdict,
    allowed_commands,
    new_rollout,
    step,
    summarize,
)
from fleet.rollout_plan import (
    CanarySpec,
    ExponentialWaves,
    FailureThreshold,
    GateSpec,
    PercentWaves,
)
from fleet.selection import Variant
from fleet.windows import DailyWindow
from tests.fleet.rollout.simulated_fleet import (
    FLEET,
    NEW,
    OLD,
    T0,
    VARIANTS,
    SimDevice,
    SimFleet,
    always,
    deployed_ids,
    drive,
    mixed_fleet,
    plan,
)

# ------------------------------------------------------------------------------------------ happy path


def test_good_model_reaches_every_device_through_canary_and_waves() -> None:
    fleet = mixed_fleet(FLEET)
    snapshot = new_rollout("r1", plan(gate=GateSpec(after="every_wave")), VARIANTS, now=T0)
    snapshot, _ = drive(snapshot, fleet, gate=always(Verdict.PASS))

    assert snapshot.state == RolloutState.COMPLETED
    assert all(d.active == NEW and d.deployments == 1 for d in fleet.devices.values())
    deploys = fleet.of(DeployTo)
    by_wave: Counter[int] = Counter()
    for action in deploys:
        by_wave[action.wave] += len(action.device_ids)
    # 40 devices: canary ceil(10%)=4, then cumulative 25% -> 10, 50% -> 20, 100% -> 40
    assert dict(by_wave) == {0: 4, 1: 6, 2: 10, 3: 20}
    canary_targets = {fleet.devices[d].target for a in deploys if a.wave == 0 for d in a.device_ids}
    assert canary_targets == set(FLEET)
    gated_waves = [a.wave for a in fleet.of(RequestGate)]
    assert gated_waves == [0, 1, 2]  # between waves, never after the last
    status = summarize(snapshot)
    assert status.on_version_percent == 100.0 and status.totals.succeeded == 40
    assert [w.name for w in status.waves] == ["canary", "wave 1", "wave 2", "wave 3"]
    assert {c: counts.succeeded for c, counts in status.classes.items()} == FLEET


def test_each_wave_waits_for_the_previous_gate() -> None:
    fleet = mixed_fleet(FLEET)
    snapshot = new_rollout("r1", plan(gate=GateSpec(after="every_wave")), VARIANTS, now=T0)
    snapshot, now = drive(snapshot, fleet, until=lambda snapshot: snapshot.state == RolloutState.GATE)
    assert snapshot.gate is not None and snapshot.gate.wave == 0 and snapshot.gate.outstanding
    for _ in range(3):  # no verdict: nothing new is sent
        now += 60
        snapshot, actions = step(snapshot, now, fleet.statuses(now))
        assert not [a for a in actions if isinstance(a, DeployTo)]
    snapshot, actions = step(snapshot, now, fleet.statuses(now), gate_verdict=GateVerdict(verdict=Verdict.PASS))
    assert snapshot.state == RolloutState.WAVE_RUNNING and snapshot.wave == 1
    assert sum(len(a.device_ids) for a in actions if isinstance(a, DeployTo)) == 6


# --------------------------------------------------------------------------------------- failing paths


def test_failing_device_class_trips_the_failure_threshold_and_rolls_back() -> None:
    fleet = mixed_fleet(FLEET, {"rpi4-arm64": "fail"})
    snapshot = new_rollout("r2", plan(), VARIANTS, now=T0)
    snapshot, _ = drive(snapshot, fleet)

    assert snapshot.state == RolloutState.ABORTED
    events = [a.event for a in fleet.of(StateChanged)]
    assert Event.FAILURE_THRESHOLD in events and Event.ROLLBACK_DONE in events
    assert {a.wave for a in fleet.of(DeployTo)} == {0}  # the canary never grew into wave 1
    (rollback,) = fleet.of(RollBack)
    sent = set(deployed_ids(fleet))
    installed = {d for d in sent if fleet.devices[d].deployments and fleet.devices[d].behaviour == "ok"}
    assert installed and installed <= set(rollback.device_ids) == sent
    assert rollback.deployment_id == "r2.rollback"
    assert all(d.active == OLD for d in fleet.devices.values())  # everyone is back on the old model
    assert "failed" in snapshot.history[-2].reason


def test_failures_count_only_after_min_devices_and_by_rate() -> None:
    # 20 devices in one wave, min_devices 10, max rate 10%: one early failure must not abort
    devices = [SimDevice(f"d{i:02d}", "x86-onnx-cpu", latency_s=30 + 10 * i) for i in range(20)]
    devices[0].behaviour = "fail"  # reports first
    fleet = SimFleet(devices)
    p = plan(canary=None, waves=PercentWaves(steps=[100]), failure=FailureThreshold(max_rate=0.1, min_devices=10))
    snapshot, _ = drive(new_rollout("r3", p, VARIANTS, now=T0), fleet)
    assert snapshot.state == RolloutState.COMPLETED  # 1/20 = 5% <= 10%
    assert summarize(snapshot).totals.failed == 1

    # two early failures: 2/2 is not judged, 2/10 (the 10th device to finish) is over 10%
    devices = [SimDevice(f"d{i:02d}", "x86-onnx-cpu", latency_s=30 + 10 * i) for i in range(20)]
    devices[0].behaviour = devices[1].behaviour = "fail"
    fleet = SimFleet(devices)
    snapshot, _ = drive(
        new_rollout("r3", p, VARIANTS, now=T0), fleet, until=lambda snapshot: snapshot.state != "wave_running"
    )
    assert snapshot.state == RolloutState.ABORTING
    assert "2 of 10 finished device(s) failed" in snapshot.reason


def test_failure_count_threshold() -> None:
    devices = [SimDevice(f"d{i:02d}", "x86-onnx-cpu", behaviour="fail" if i < 3 else "ok") for i in range(12)]
    p = plan(
        canary=None,
        waves=PercentWaves(steps=[100]),
        success_threshold=0.5,
        failure=FailureThreshold(max_rate=None, max_count=2, min_devices=1),
    )
    snapshot, _ = drive(new_rollout("r4", p, VARIANTS, now=T0), SimFleet(devices))
    assert snapshot.state == RolloutState.ABORTED and "more than the 2 allowed" in snapshot.history[-2].reason


def test_gate_fail_aborts_and_rolls_back_the_canary() -> None:
    fleet = mixed_fleet(FLEET)
    snapshot = new_rollout("r5", plan(gate=GateSpec(after="canary")), VARIANTS, now=T0)
    snapshot, _ = drive(snapshot, fleet, gate=always(Verdict.FAIL))
    assert snapshot.state == RolloutState.ABORTED
    assert any(a.event == Event.GATE_FAIL for a in fleet.of(StateChanged))
    (rollback,) = fleet.of(RollBack)
    assert set(rollback.device_ids) == set(deployed_ids(fleet))
    assert len(rollback.device_ids) == 4 and "fail on wave 0" in rollback.reason
    assert all(d.active == OLD for d in fleet.devices.values())


def test_inconclusive_gate_asks_again_then_pauses_for_a_person() -> None:
    fleet = mixed_fleet(FLEET)
    gate = GateSpec(after="canary", retry_interval_s=300, max_wait_s=1000)
    snapshot = new_rollout("r6", plan(gate=gate), VARIANTS, now=T0)
    snapshot, now = drive(
        snapshot, fleet, gate=always(Verdict.INCONCLUSIVE), until=lambda snapshot: snapshot.state == RolloutState.PAUSED
    )
    attempts = [a.attempt for a in fleet.of(RequestGate)]
    # asked at g, g+360, g+720 (each answer arrives a step later, the retry waits 300 s after it);
    # the fourth request would fall after g+1000, so the rollout pauses instead of waiting for nothing
    assert attempts == [1, 2, 3]
    pause = fleet.of(Pause)[-1]
    assert "inconclusive" in pause.reason and "a person must decide" in pause.reason
    assert {a.wave for a in fleet.of(DeployTo)} == {0}

    # a person resumes: the gate is asked again, passes, and the rollout finishes
    snapshot, actions = step(snapshot, now + 60, fleet.statuses(now + 60), command=Command.RESUME)
    fleet.apply(now + 60, actions)
    (request,) = [a for a in actions if isinstance(a, RequestGate)]
    assert snapshot.state == RolloutState.GATE and request.attempt == 1
    snapshot, _ = drive(snapshot, fleet, now=now + 120, gate=always(Verdict.PASS), pending=request)
    assert snapshot.state == RolloutState.COMPLETED


def test_silent_device_times_out_and_counts_as_failure() -> None:
    devices = [SimDevice(f"d{i:02d}", "x86-onnx-cpu") for i in range(30)]
    devices[7].behaviour = "silent"
    p = plan(
        canary=None,
        waves=PercentWaves(steps=[100]),
        device_timeout_s=600,
        success_threshold=0.9,
        failure=FailureThreshold(max_rate=0.05),
    )
    snapshot, now = drive(new_rollout("r7", p, VARIANTS, now=T0), SimFleet(devices))
    assert snapshot.state == RolloutState.COMPLETED  # 1/30 < 5%, 29/30 >= 90%
    record = snapshot.devices["d07"]
    assert record.phase == Phase.TIMED_OUT and "600" in record.detail
    assert now - T0 >= 600


def test_below_success_threshold_pauses_and_promote_accepts() -> None:
    devices = [SimDevice(f"d{i:02d}", "x86-onnx-cpu") for i in range(10)]
    devices[0].behaviour = devices[1].behaviour = "silent"
    p = plan(
        canary=None,
        waves=PercentWaves(steps=[100]),
        device_timeout_s=300,
        success_threshold=0.95,
        failure=FailureThreshold(max_rate=0.5),
    )
    fleet = SimFleet(devices)
    snapshot, now = drive(
        new_rollout("r8", p, VARIANTS, now=T0), fleet, until=lambda snapshot: snapshot.state == "paused"
    )
    assert snapshot.state == RolloutState.PAUSED and "below the success threshold" in snapshot.reason
    with pytest.raises(RolloutError, match="cannot pause"):
        step(snapshot, now, fleet.statuses(now), command="pause")
    snapshot, actions = step(snapshot, now, fleet.statuses(now), command=Command.RESUME)
    assert snapshot.state == RolloutState.PAUSED  # nothing changed: resuming re-checks and stops again
    assert [a.event for a in actions if isinstance(a, StateChanged)] == [
        Event.RESUME,
        Event.BELOW_SUCCESS_THRESHOLD,
    ]
    snapshot, _ = step(snapshot, now, fleet.statuses(now), command=Command.PROMOTE)
    assert snapshot.state == RolloutState.COMPLETED


# -------------------------------------------------------------------------------------- operator control


def test_pause_stops_new_deployments_and_resume_continues() -> None:
    fleet = mixed_fleet(FLEET)
    snapshot = new_rollout("r9", plan(), VARIANTS, now=T0)
    snapshot, now = drive(snapshot, fleet, until=lambda snapshot: snapshot.wave == 1)
    snapshot, actions = step(snapshot, now, fleet.statuses(now), command=Command.PAUSE)
    assert snapshot.state == RolloutState.PAUSED and any(isinstance(a, Pause) for a in actions)
    assert allowed_commands(snapshot) == [Command.RESUME, Command.ABORT, Command.PROMOTE]
    sent_before = len(deployed_ids(fleet))
    for _ in range(10):
        now += 60
        snapshot, actions = step(snapshot, now, fleet.statuses(now))
        fleet.apply(now, actions)
    assert len(deployed_ids(fleet)) == sent_before and snapshot.state == RolloutState.PAUSED
    snapshot, actions = step(snapshot, now, fleet.statuses(now), command="resume")
    fleet.apply(now, actions)
    snapshot, _ = drive(snapshot, fleet, now=now + 60)
    assert snapshot.state == RolloutState.COMPLETED


def test_approval_after_canary_and_promote() -> None:
    fleet = mixed_fleet(FLEET)
    snapshot = new_rollout("r10", plan(approval="after_canary"), VARIANTS, now=T0)
    snapshot, now = drive(snapshot, fleet, until=lambda snapshot: snapshot.state == RolloutState.AWAITING_APPROVAL)
    assert "waiting for approval" in fleet.of(Pause)[-1].reason
    with pytest.raises(RolloutError):
        step(snapshot, now, fleet.statuses(now), command=Command.PAUSE.value + "x")
    now += 3600  # nobody approves: it waits
    snapshot, actions = step(snapshot, now, fleet.statuses(now))
    assert snapshot.state == RolloutState.AWAITING_APPROVAL and not actions
    snapshot, actions = step(snapshot, now, fleet.statuses(now), command=Command.PROMOTE)
    assert snapshot.state == RolloutState.WAVE_RUNNING and snapshot.wave == 1
    assert sum(len(a.device_ids) for a in actions if isinstance(a, DeployTo)) == 6
    fleet.apply(now, actions)
    # later waves need no approval with "after_canary"
    snapshot, _ = drive(snapshot, fleet, now=now + 60)
    assert snapshot.state == RolloutState.COMPLETED


def test_promote_mid_wave_starts_the_next_wave_now() -> None:
    fleet = mixed_fleet(FLEET)
    snapshot = new_rollout("r11", plan(), VARIANTS, now=T0)
    snapshot, actions = step(snapshot, T0, fleet.statuses(T0))
    fleet.apply(T0, actions)
    assert snapshot.wave == 0 and len(deployed_ids(fleet)) == 4
    snapshot, actions = step(snapshot, T0 + 1, fleet.statuses(T0 + 1), command=Command.PROMOTE)
    assert snapshot.wave == 1 and sum(len(a.device_ids) for a in actions if isinstance(a, DeployTo)) == 6


def test_abort_command_rolls_back_what_was_sent() -> None:
    fleet = mixed_fleet(FLEET)
    snapshot = new_rollout("r12", plan(), VARIANTS, now=T0)
    snapshot, now = drive(snapshot, fleet, until=lambda snapshot: snapshot.wave == 2)
    snapshot, actions = step(snapshot, now, fleet.statuses(now), command=Command.ABORT)
    fleet.apply(now, actions)
    (rollback,) = [a for a in actions if isinstance(a, RollBack)]
    assert set(rollback.device_ids) == set(deployed_ids(fleet)) and len(rollback.device_ids) == 20
    snapshot, _ = drive(snapshot, fleet, now=now + 60)
    assert snapshot.state == RolloutState.ABORTED
    assert Counter(d.active for d in fleet.devices.values()) == {OLD: 40}
    with pytest.raises(RolloutError, match="has ended"):
        step(snapshot, now, fleet.statuses(now), command=Command.RESUME)


def test_stale_gate_verdict_is_ignored_with_a_notice() -> None:
    fleet = mixed_fleet(FLEET)
    snapshot = new_rollout("r13", plan(), VARIANTS, now=T0)
    snapshot, actions = step(snapshot, T0, fleet.statuses(T0), gate_verdict=GateVerdict(verdict=Verdict.FAIL))
    assert snapshot.state == RolloutState.WAVE_RUNNING
    assert any(isinstance(a, Notice) and "ignored" in a.message for a in actions)


def test_foreign_verdict_objects_are_accepted_and_garbage_refused() -> None:
    @dataclass(frozen=True)
    class CanaryReport:  # shaped like fleet.canary's result, with a StrEnum-like verdict
        verdict: str
        reasons: tuple[str, ...]

    fleet = mixed_fleet(FLEET)
    snapshot = new_rollout("r14", plan(gate=GateSpec(after="canary")), VARIANTS, now=T0)
    snapshot, now = drive(snapshot, fleet, until=lambda snapshot: snapshot.state == RolloutState.GATE)
    with pytest.raises(RolloutError, match="not one of"):
        step(snapshot, now, fleet.statuses(now), gate_verdict=CanaryReport("maybe", ()))
    snapshot, _ = step(snapshot, now, fleet.statuses(now), gate_verdict=CanaryReport("PASS", ("p95 ok",)))
    assert snapshot.state == RolloutState.WAVE_RUNNING and snapshot.wave == 1


# ------------------------------------------------------------------------------ windows, joiners, classes


def test_maintenance_window_defers_deployments() -> None:
    fleet = mixed_fleet(FLEET)
    for device in fleet.devices.values():
        device.latency_s = 45 * 60  # slow installs: the rollout outlasts one window
    p = plan(
        canary=CanarySpec(count=4),
        maintenance_windows=[DailyWindow(start="02:00", end="03:00")],
        device_timeout_s=3600,
    )
    snapshot, actions = step(new_rollout("r15", p, VARIANTS, now=T0), T0, fleet.statuses(T0))
    assert snapshot.state == RolloutState.WAVE_RUNNING
    assert not [a for a in actions if isinstance(a, DeployTo)]
    (deferred,) = [a for a in actions if isinstance(a, Deferred)]
    opening = datetime(2026, 3, 3, 2, 0, tzinfo=UTC).timestamp()
    assert deferred.until == opening
    snapshot, actions = step(snapshot, opening - 60, fleet.statuses(opening - 60))
    assert actions == []  # still closed, and the deferral is reported once

    sent_at: list[tuple[float, int]] = []
    now = opening
    while not snapshot.final and now < opening + 3 * 86400:
        snapshot, actions = step(snapshot, now, fleet.statuses(now))
        fleet.apply(now, actions)
        sent_at += [(now, a.wave) for a in actions if isinstance(a, DeployTo)]
        now += 300
    assert snapshot.state == RolloutState.COMPLETED
    for moment, _ in sent_at:
        assert 2 <= datetime.fromtimestamp(moment, UTC).hour < 3  # only inside the window
    days = {datetime.fromtimestamp(moment, UTC).day for moment, _ in sent_at}
    assert len(days) > 1  # the window closed mid-rollout and later waves waited for the next night


def test_late_joining_device_is_picked_up() -> None:
    fleet = mixed_fleet(FLEET)
    snapshot = new_rollout("r16", plan(), VARIANTS, now=T0)
    snapshot, now = drive(snapshot, fleet, until=lambda snapshot: snapshot.wave == 3)
    newcomer = SimDevice("late-rpi", "rpi4-arm64", {"env": "prod"})
    fleet.devices[newcomer.device_id] = newcomer
    now += 60
    snapshot, actions = step(snapshot, now, fleet.statuses(now))
    fleet.apply(now, actions)
    assert any(isinstance(a, DeployTo) and "late-rpi" in a.device_ids for a in actions)
    snapshot, _ = drive(snapshot, fleet, now=now + 60)
    assert snapshot.state == RolloutState.COMPLETED and newcomer.active == NEW


def test_late_joiner_during_canary_waits_for_its_wave_and_selector_applies() -> None:
    fleet = mixed_fleet(FLEET)
    snapshot = new_rollout("r17", plan(selector="env=prod"), VARIANTS, now=T0)
    snapshot, actions = step(snapshot, T0, fleet.statuses(T0))
    fleet.apply(T0, actions)
    fleet.devices["late-x86"] = SimDevice("late-x86", "x86-onnx-cpu", {"env": "prod"})
    fleet.devices["lab-x86"] = SimDevice("lab-x86", "x86-onnx-cpu", {"env": "lab"})
    snapshot, actions = step(snapshot, T0 + 1, fleet.statuses(T0 + 1))
    assert not [a for a in actions if isinstance(a, DeployTo)]  # the canary is fixed
    assert snapshot.devices["late-x86"].phase == Phase.PENDING and "lab-x86" not in snapshot.devices
    snapshot, _ = drive(snapshot, fleet, now=T0 + 60)
    assert snapshot.state == RolloutState.COMPLETED
    assert fleet.devices["late-x86"].active == NEW and fleet.devices["lab-x86"].active == OLD


def test_device_without_fitting_variant_is_reported_never_sent() -> None:
    fleet = mixed_fleet({**FLEET, "mcu-int8": 2})
    snapshot, _ = drive(new_rollout("r18", plan(), VARIANTS, now=T0), fleet)
    assert snapshot.state == RolloutState.COMPLETED
    (skipped,) = fleet.of(Skipped)
    assert set(skipped.device_ids) == {"mcu-int8-000", "mcu-int8-001"}
    assert "no variant built for target mcu-int8" in skipped.reason
    assert fleet.devices["mcu-int8-000"].deployments == 0
    assert summarize(snapshot).totals.skipped == 2


def test_devices_already_on_the_version_are_not_redeployed() -> None:
    fleet = mixed_fleet(FLEET)
    fleet.devices["x86-onnx-cpu-000"].active = NEW
    snapshot, _ = drive(new_rollout("r19", plan(), VARIANTS, now=T0), fleet)
    assert snapshot.devices["x86-onnx-cpu-000"].phase == Phase.CURRENT
    assert fleet.devices["x86-onnx-cpu-000"].deployments == 0
    assert summarize(snapshot).on_version_percent == 100.0


def canary_of(snapshot: RolloutSnapshot) -> set[str]:
    return {d for d, r in snapshot.devices.items() if r.canary}


@pytest.mark.parametrize("seed", ["a", "b", "c"])
def test_stratified_canary_covers_every_class_in_proportion(seed: str) -> None:
    counts = {
        "x86-onnx-cpu": 150,
        "rpi4-arm64": 30,
        "jetson-orin": 10,
        "intel-openvino": 7,
        "apple-coreml": 3,
    }
    variants = [
        *VARIANTS,
        Variant(variant_id="coreml", target="apple-coreml", precision="fp16", size_bytes=1000),
    ]
    fleet = mixed_fleet(counts)
    p = plan(canary=CanarySpec(percent=5), seed=seed)  # 5% of 200 = 10 devices
    snapshot, _ = step(new_rollout("r20", p, variants, now=T0), T0, fleet.statuses(T0))
    chosen = canary_of(snapshot)
    per_class = Counter(fleet.devices[d].target for d in chosen)
    assert set(per_class) == set(counts)  # every class is represented
    assert len(chosen) == 10 and per_class["x86-onnx-cpu"] >= 5
    # deterministic: same seed and inputs in another order give the same canary
    shuffled = fleet.statuses(T0)
    random.Random(7).shuffle(shuffled)
    again, _ = step(new_rollout("r20", p, variants, now=T0), T0, shuffled)
    assert canary_of(again) == chosen


def test_canary_grows_to_cover_every_class_and_seed_changes_the_sample() -> None:
    fleet = mixed_fleet(FLEET)
    small, _ = step(new_rollout("r21", plan(canary=CanarySpec(count=1)), VARIANTS, now=T0), T0, fleet.statuses(T0))
    assert len(canary_of(small)) == 4  # one per class, even though 1 was asked for
    samples = {
        frozenset(canary_of(step(new_rollout("r21", plan(seed=s), VARIANTS, now=T0), T0, fleet.statuses(T0))[0]))
        for s in "abcdefgh"
    }
    assert len(samples) > 1


def test_class_labels_refine_device_classes() -> None:
    devices = [SimDevice(f"d{i:02d}", "x86-onnx-cpu", {"site": "north" if i < 18 else "south"}) for i in range(20)]
    p = plan(canary=CanarySpec(count=2), class_labels=["site"])
    snapshot, _ = step(new_rollout("r22", p, VARIANTS, now=T0), T0, SimFleet(devices).statuses(T0))
    assert {snapshot.devices[d].device_class for d in canary_of(snapshot)} == {
        "x86-onnx-cpu/site=north",
        "x86-onnx-cpu/site=south",
    }


def test_exponential_waves() -> None:
    fleet = mixed_fleet({"x86-onnx-cpu": 40})
    p = plan(canary=CanarySpec(count=2), waves=ExponentialWaves(initial=3, factor=2))
    snapshot, _ = drive(new_rollout("r23", p, VARIANTS, now=T0), fleet)
    sizes = [len(a.device_ids) for a in fleet.of(DeployTo)]
    assert sizes == [2, 3, 6, 12, 17] and snapshot.state == RolloutState.COMPLETED


def test_step_does_not_mutate_its_input() -> None:
    fleet = mixed_fleet(FLEET)
    snapshot = new_rollout("r26", plan(), VARIANTS, now=T0)
    before = snapshot.model_dump_json()
    step(snapshot, T0, fleet.statuses(T0))
    assert snapshot.model_dump_json() == before


def test_the_cause_of_an_abort_and_the_gate_verdicts_outlast_the_rollback() -> None:
    fleet = mixed_fleet(FLEET)
    snapshot = new_rollout("r15", plan(gate=GateSpec(after="canary")), VARIANTS, now=T0)
    snapshot, _ = drive(snapshot, fleet, gate=always(Verdict.FAIL))
    assert snapshot.state == RolloutState.ABORTED and "back on their last known good" in snapshot.reason
    assert snapshot.cause.startswith("gate failed after canary")
    status = summarize(snapshot)
    assert status.cause == snapshot.cause
    assert [(v.wave, v.verdict) for v in status.gate_verdicts] == [(0, "fail")]


def test_a_pause_cause_is_cleared_on_resume() -> None:
    fleet = mixed_fleet(FLEET)
    snapshot = new_rollout("r16", plan(), VARIANTS, now=T0)
    snapshot, _ = step(snapshot, T0, fleet.statuses(T0))
    snapshot, _ = step(snapshot, T0 + 1, fleet.statuses(T0 + 1), command=Command.PAUSE)
    assert snapshot.cause == "operator: pause"
    snapshot, _ = step(snapshot, T0 + 2, fleet.statuses(T0 + 2), command=Command.RESUME)
    assert snapshot.state == RolloutState.WAVE_RUNNING and snapshot.cause == ""
