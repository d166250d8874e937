"""When a rollout next needs a step, so the hub ticks on events and these times only (no fixed period):

- ``next_due``: a time after which ``step`` may move the rollout with no new report (a device timeout, the
  gate's next request or deadline, a maintenance window opening);
- ``awaiting``: while a wave runs, the devices whose outcome can complete it and how many of them may still be
  missing when it completes, so a report of success wakes the engine only once the wave can be complete.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from fleet.rollout.snapshot import ENGAGED, Phase, RolloutSnapshot, population, schedule
from fleet.rollout.states import DEPLOYING_STATES, RolloutState
from fleet.windows import next_opening


class Awaiting(NamedTuple):
    """The running wave's devices with no outcome yet; ``step`` can complete the wave once at most ``slack``
    of them still have none (a failure can end it sooner: the hub steps on every failure)."""

    devices: frozenset[str]
    slack: int


def awaiting(snapshot: RolloutSnapshot) -> Awaiting | None:
    """What the running wave waits for, or None when the rollout is not simply waiting on its wave's outcomes
    (then any report may move it)."""
    if snapshot.state != RolloutState.WAVE_RUNNING:
        return None
    targets = schedule(snapshot)
    wave = snapshot.wave
    target = targets[wave] if wave < len(targets) else targets[-1]
    engaged = [r for r in snapshot.devices.values() if r.phase in ENGAGED]
    if len(engaged) < target:
        return None  # devices still to dispatch (a maintenance window, say): keep stepping on reports
    if target >= population(snapshot):  # the last wave ends when every device sent has an outcome
        return Awaiting(frozenset(r.device_id for r in engaged if r.phase == Phase.DISPATCHED), 0)
    members = [r for r in engaged if r.wave == wave]
    in_flight = frozenset(r.device_id for r in members if r.phase == Phase.DISPATCHED)
    succeeded = sum(1 for r in members if r.phase == Phase.SUCCEEDED)
    needed = math.ceil(snapshot.plan.success_threshold * len(members) - 1e-9)
    # the wave completes once succeeded >= needed; every device still in flight may yet succeed
    return Awaiting(in_flight, max(0, succeeded + len(in_flight) - needed))


def next_due(snapshot: RolloutSnapshot, now: float) -> float | None:
    """The earliest time after which ``step`` may change ``snapshot`` without new device reports, operator
    commands or gate verdicts; None when only those can move it."""
    plan = snapshot.plan
    times: list[float] = []
    if snapshot.final:
        return None
    dispatched = [r.dispatched_at for r in snapshot.devices.values() if r.phase == Phase.DISPATCHED]
    times += [at + plan.device_timeout_s for at in dispatched if at is not None]
    if snapshot.state in DEPLOYING_STATES and snapshot.deferred:
        opening = next_opening(plan.maintenance_windows, now)
        if opening is not None:
            times.append(opening)
    gate = snapshot.gate
    if snapshot.state == RolloutState.GATE and gate is not None and plan.gate is not None:
        times.append(gate.started_at + plan.gate.max_wait_s)
        if not gate.outstanding:
            times.append(gate.next_request_at)
    if snapshot.state == RolloutState.ABORTING:
        started = snapshot.rollback_started_at if snapshot.rollback_started_at is not None else now
        times.append(started + plan.device_timeout_s)
    return min(times) if times else None
