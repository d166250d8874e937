"""``next_due`` and ``awaiting`` (fleet/rollout/timers.py) agree with ``step``: the hub ticks only on the times
and reports they name, so a rollout must never be able to move without one of them."""

from __future__ import annotations

import math

from fleet.rollout import RolloutSnapshot, RolloutState, awaiting, new_rollout, next_due, step
from fleet.rollout_plan import CanarySpec, PercentWaves
from fleet.wire.messages import UpdateState
from tests.fleet.rollout.simulated_fleet import NEW, T0, VARIANTS, SimFleet, mixed_fleet, plan


def _started(fleet: SimFleet, **overrides: object) -> RolloutSnapshot:
    snapshot = new_rollout("r-timers", plan(**overrides), VARIANTS, now=T0)
    snapshot, actions = step(snapshot, T0, fleet.statuses(T0))
    fleet.apply(T0, actions)
    return snapshot


def _finish(fleet: SimFleet, device_id: str) -> None:
    device = fleet.devices[device_id]
    device.order, device.active, device.update_state = None, NEW, UpdateState.DONE


def test_a_wave_can_complete_exactly_when_awaiting_says_so() -> None:
    fleet = mixed_fleet({"x86-onnx-cpu": 20})
    snapshot = _started(fleet, canary=CanarySpec(count=4), waves=PercentWaves(steps=[50, 100]), success_threshold=0.5)
    wait = awaiting(snapshot)
    assert snapshot.state == RolloutState.WAVE_RUNNING and wait is not None
    assert len(wait.devices) == 4 and wait.slack == 4 - math.ceil(0.5 * 4)  # two may be missing at the end
    first, second, *_ = sorted(wait.devices)
    _finish(fleet, first)  # three still in flight: more than the slack, so the wave cannot complete
    moved, _ = step(snapshot, T0 + 1, fleet.statuses(T0 + 1))
    assert moved.state == RolloutState.WAVE_RUNNING and moved.wave == snapshot.wave
    _finish(fleet, second)  # two in flight: within the slack, and indeed the wave completes
    moved, _ = step(snapshot, T0 + 2, fleet.statuses(T0 + 2))
    assert moved.wave == snapshot.wave + 1


def test_the_last_wave_waits_for_every_device_sent() -> None:
    fleet = mixed_fleet({"x86-onnx-cpu": 6})
    snapshot = _started(fleet, canary=None, waves=PercentWaves(steps=[100]))
    wait = awaiting(snapshot)
    assert wait is not None and len(wait.devices) == 6 and wait.slack == 0
    for device_id in sorted(wait.devices)[:5]:
        _finish(fleet, device_id)
    assert step(snapshot, T0 + 1, fleet.statuses(T0 + 1))[0].state == RolloutState.WAVE_RUNNING
    _finish(fleet, sorted(wait.devices)[5])
    assert step(snapshot, T0 + 2, fleet.statuses(T0 + 2))[0].state == RolloutState.COMPLETED


def test_only_a_running_wave_is_awaited() -> None:
    fleet = mixed_fleet({"x86-onnx-cpu": 6})
    pending = new_rollout("r-timers", plan(canary=None, waves=PercentWaves(steps=[100])), VARIANTS, now=T0)
    assert awaiting(pending) is None  # any report may start it
    snapshot = _started(fleet, canary=None, waves=PercentWaves(steps=[100]))
    for device_id in list(fleet.devices):
        _finish(fleet, device_id)
    done, _ = step(snapshot, T0 + 1, fleet.statuses(T0 + 1))
    assert done.state == RolloutState.COMPLETED and awaiting(done) is None and next_due(done, T0 + 1) is None


def test_the_next_due_time_is_the_earliest_device_timeout() -> None:
    fleet = mixed_fleet({"x86-onnx-cpu": 6}, {"x86-onnx-cpu": "silent"})  # they never report an outcome
    snapshot = _started(fleet, canary=None, waves=PercentWaves(steps=[100]), device_timeout_s=300)
    assert next_due(snapshot, T0) == T0 + 300
    assert step(snapshot, T0 + 299, fleet.statuses(T0 + 299))[0].state == RolloutState.WAVE_RUNNING
    # no report wakes the hub: only the timer does, and at that time the step moves the rollout
    assert step(snapshot, T0 + 300, fleet.statuses(T0 + 300))[0].state != RolloutState.WAVE_RUNNING
