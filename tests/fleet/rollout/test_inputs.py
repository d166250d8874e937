"""What ``step`` accepts as a gate verdict (fleet/rollout/inputs.py)."""

from __future__ import annotations

from fleet.rollout import (
    Event,
    RolloutState,
    StateChanged,
    new_rollout,
    step,
)
from fleet.rollout_plan import (
    GateSpec,
)
from tests.fleet.rollout.simulated_fleet import (
    FLEET,
    T0,
    VARIANTS,
    drive,
    mixed_fleet,
    plan,
)


def test_a_real_canary_report_is_a_gate_input() -> None:
    from fleet.canary import analyse_canary

    report = analyse_canary([], [])  # no telemetry at all: inconclusive, saying why
    fleet = mixed_fleet(FLEET)
    snapshot = new_rollout("r27", plan(gate=GateSpec(after="canary")), VARIANTS, now=T0)
    snapshot, now = drive(snapshot, fleet, until=lambda snapshot: snapshot.state == RolloutState.GATE)
    snapshot, actions = step(snapshot, now, fleet.statuses(now), gate_verdict=report)
    assert snapshot.state == RolloutState.GATE and snapshot.gate is not None
    assert snapshot.gate.reasons == list(report.reasons) and report.reasons
    assert [a.event for a in actions if isinstance(a, StateChanged)] == [Event.GATE_INCONCLUSIVE]
