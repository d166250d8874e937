"""Rollout plans: validation, wave schedules and the CLI helpers."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from fleet.errors import FleetConfigError
from fleet.rollout_plan import (
    CanarySpec,
    ExponentialWaves,
    FailureThreshold,
    GateSpec,
    PercentWaves,
    RolloutPlan,
    parse_canary,
    parse_waves,
    plan_from_cli,
)


def test_percent_schedule_is_cumulative_and_reaches_everyone() -> None:
    p = RolloutPlan(model="m", version="1", waves=PercentWaves(steps=[10, 50, 100]))
    assert p.schedule(100, 5) == [5, 10, 50, 100]
    assert p.schedule(3, 1) == [1, 1, 2, 3]  # rounding up, never shrinking
    assert p.schedule(0, 0) == [0, 0, 0, 0]


def test_exponential_schedule() -> None:
    p = RolloutPlan(model="m", version="1", waves=ExponentialWaves(initial=10, factor=3))
    assert p.schedule(200, 4) == [4, 14, 44, 134, 200]


def test_gates_and_approvals_per_wave() -> None:
    p = RolloutPlan(model="m", version="1", gate=GateSpec(after="canary"), approval="after_canary")
    assert p.gated(0) and not p.gated(1) and p.needs_approval(0) and not p.needs_approval(2)
    no_canary = RolloutPlan(model="m", version="1", canary=None, gate=GateSpec(after="canary"))
    assert no_canary.first_wave == 1 and no_canary.gated(1) and not no_canary.gated(2)
    assert not RolloutPlan(model="m", version="1", gate=None).gated(0)


@pytest.mark.parametrize(
    "overrides",
    [
        {"waves": {"type": "percentages", "steps": [50, 10, 100]}},
        {"waves": {"type": "percentages", "steps": [10, 50]}},
        {"waves": {"type": "exponential", "initial": 5, "factor": 1.0}},
        {"canary": {"count": 3, "percent": 5}},
        {"canary": {}},
        {"failure": {"max_rate": None, "max_count": None}},
        {"gate": {"soak_s": 600, "max_wait_s": 300}},
        {"selector": "env in (a"},
        {"success_threshold": 0},
        {"version": "1.0 beta"},
        {"unknown": 1},
    ],
)
def test_invalid_plans_are_refused(overrides: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        RolloutPlan.model_validate({"model": "m", "version": "1", **overrides})


def test_plan_json_round_trip() -> None:
    p = RolloutPlan(
        model="digits",
        version="1.2.0",
        selector="env=prod, tier in (edge,gw)",
        canary=CanarySpec(count=3),
        waves=ExponentialWaves(initial=5),
        failure=FailureThreshold(max_count=2, max_rate=None),
        maintenance_windows=[{"type": "daily", "start": "01:00", "end": "03:00"}],  # type: ignore[list-item]
    )
    assert p.selector == "env=prod,tier in (edge,gw)"
    assert RolloutPlan.model_validate_json(p.model_dump_json()) == p


def test_cli_helpers() -> None:
    assert parse_canary("5%") == CanarySpec(percent=5)
    assert parse_canary("3") == CanarySpec(count=3)
    assert parse_canary("0") is None and parse_canary("none") is None
    assert parse_waves("10,50,100") == PercentWaves(steps=[10, 50, 100])
    assert parse_waves("10%, 100%") == PercentWaves(steps=[10, 100])
    assert parse_waves("exp:10x2") == ExponentialWaves(initial=10, factor=2)
    for bad in ("5%%", "-3", "abc"):
        with pytest.raises(FleetConfigError):
            parse_canary(bad)
    for bad in ("10,5", "10,50", "exp:x"):
        with pytest.raises(FleetConfigError):
            parse_waves(bad)
    p = plan_from_cli("digits:1.2.0", selector="env=prod", canary="2", waves="25,100", max_failure_rate=0.1)
    assert (p.model, p.version, p.canary, p.failure.max_rate) == ("digits", "1.2.0", CanarySpec(count=2), 0.1)
    with pytest.raises(FleetConfigError, match="MODEL:VERSION"):
        plan_from_cli("digits")
    with pytest.raises(FleetConfigError, match="approval"):
        plan_from_cli("digits:1", approval="sometimes")
