"""``next_due``: when a rollout next needs a step although no device reported (a timeout, the gate's next
request or deadline, a maintenance window opening), so the hub can tick on events and on these times only."""

from __future__ import annotations

from fleet.rollout.snapshot import Phase, RolloutSnapshot
from fleet.rollout.states import DEPLOYING_STATES, RolloutState
from fleet.windows import next_opening


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
