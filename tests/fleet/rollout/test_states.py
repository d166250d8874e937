"""The transition table (fleet/rollout/states.py)."""

from __future__ import annotations

from fleet.rollout import (
    ADVANCING,
    FINAL_STATES,
    TRANSITIONS,
    Event,
    RolloutState,
)


def test_transition_table_is_closed_and_final_states_are_final() -> None:
    sources = {s for s, _ in TRANSITIONS}
    assert FINAL_STATES.isdisjoint(sources)
    assert set(TRANSITIONS.values()) | sources == set(RolloutState)
    assert set(TRANSITIONS) >= ADVANCING
    for state in set(RolloutState) - FINAL_STATES - {RolloutState.ABORTING}:
        assert (state, Event.ABORT) in TRANSITIONS  # a person can always stop a live rollout
    assert TRANSITIONS[(RolloutState.WAVE_RUNNING, Event.FAILURE_THRESHOLD)] == RolloutState.ABORTING
    assert TRANSITIONS[(RolloutState.GATE, Event.GATE_FAIL)] == RolloutState.ABORTING
    assert TRANSITIONS[(RolloutState.GATE, Event.GATE_EXHAUSTED)] == RolloutState.PAUSED
