"""The rollout's states, the events that move it, the operator's commands, and the one transition table."""

from __future__ import annotations

from enum import StrEnum


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


#: The whole state machine. Anything not listed is not allowed.
TRANSITIONS: dict[tuple[RolloutState, Event], RolloutState] = {
    (RolloutState.PENDING, Event.START): RolloutState.WAVE_RUNNING,
    (RolloutState.PENDING, Event.ABORT): RolloutState.ABORTED,
    # a wave is running: devices up to the wave's cumulative target are being deployed
    (RolloutState.WAVE_RUNNING, Event.WAVE_COMPLETE): RolloutState.GATE,
    (RolloutState.WAVE_RUNNING, Event.EMPTY_WAVE): RolloutState.WAVE_RUNNING,  # advances to the next wave
    (RolloutState.WAVE_RUNNING, Event.LAST_WAVE_COMPLETE): RolloutState.COMPLETED,
    (RolloutState.WAVE_RUNNING, Event.BELOW_SUCCESS_THRESHOLD): RolloutState.PAUSED,
    (RolloutState.WAVE_RUNNING, Event.FAILURE_THRESHOLD): RolloutState.ABORTING,
    (RolloutState.WAVE_RUNNING, Event.PAUSE): RolloutState.PAUSED,
    (RolloutState.WAVE_RUNNING, Event.PROMOTE): RolloutState.WAVE_RUNNING,  # advances to the next wave now
    (RolloutState.WAVE_RUNNING, Event.ABORT): RolloutState.ABORTING,
    # the wave passed its success threshold; waiting for the canary analysis
    (RolloutState.GATE, Event.GATE_SKIPPED): RolloutState.AWAITING_APPROVAL,
    (RolloutState.GATE, Event.GATE_PASS): RolloutState.AWAITING_APPROVAL,
    (RolloutState.GATE, Event.GATE_FAIL): RolloutState.ABORTING,
    (RolloutState.GATE, Event.GATE_INCONCLUSIVE): RolloutState.GATE,  # asks again after retry_interval_s
    (RolloutState.GATE, Event.GATE_EXHAUSTED): RolloutState.PAUSED,
    (RolloutState.GATE, Event.FAILURE_THRESHOLD): RolloutState.ABORTING,
    (RolloutState.GATE, Event.PAUSE): RolloutState.PAUSED,
    (RolloutState.GATE, Event.PROMOTE): RolloutState.WAVE_RUNNING,
    (RolloutState.GATE, Event.ABORT): RolloutState.ABORTING,
    # gate passed; the next wave starts by itself unless the plan asks a person to approve
    (RolloutState.AWAITING_APPROVAL, Event.AUTO_APPROVED): RolloutState.WAVE_RUNNING,
    (RolloutState.AWAITING_APPROVAL, Event.RESUME): RolloutState.WAVE_RUNNING,
    (RolloutState.AWAITING_APPROVAL, Event.PROMOTE): RolloutState.WAVE_RUNNING,
    (RolloutState.AWAITING_APPROVAL, Event.FAILURE_THRESHOLD): RolloutState.ABORTING,
    (RolloutState.AWAITING_APPROVAL, Event.PAUSE): RolloutState.PAUSED,
    (RolloutState.AWAITING_APPROVAL, Event.ABORT): RolloutState.ABORTING,
    # no new deployments; devices already sent keep reporting
    (RolloutState.PAUSED, Event.RESUME): RolloutState.WAVE_RUNNING,  # same wave: re-checks its threshold and gate
    (RolloutState.PAUSED, Event.PROMOTE): RolloutState.WAVE_RUNNING,  # next wave: accepts the current one as it is
    (RolloutState.PAUSED, Event.FAILURE_THRESHOLD): RolloutState.ABORTING,
    (RolloutState.PAUSED, Event.ABORT): RolloutState.ABORTING,
    # every device sent the version is told to return to its last known good model
    (RolloutState.ABORTING, Event.ROLLBACK_DONE): RolloutState.ABORTED,
}

#: Transitions that move the rollout on to the next wave.
ADVANCING: frozenset[tuple[RolloutState, Event]] = frozenset(
    {
        (RolloutState.WAVE_RUNNING, Event.EMPTY_WAVE),
        (RolloutState.WAVE_RUNNING, Event.PROMOTE),
        (RolloutState.GATE, Event.PROMOTE),
        (RolloutState.AWAITING_APPROVAL, Event.AUTO_APPROVED),
        (RolloutState.AWAITING_APPROVAL, Event.RESUME),
        (RolloutState.AWAITING_APPROVAL, Event.PROMOTE),
        (RolloutState.PAUSED, Event.PROMOTE),
    }
)
FINAL_STATES: frozenset[RolloutState] = frozenset({RolloutState.COMPLETED, RolloutState.ABORTED})
#: States in which the current wave's devices are sent their orders.
DEPLOYING_STATES: frozenset[RolloutState] = frozenset(
    {RolloutState.WAVE_RUNNING, RolloutState.GATE, RolloutState.AWAITING_APPROVAL}
)
#: States in which newly seen devices that match the selector join the rollout.
OPEN_STATES: frozenset[RolloutState] = frozenset(
    {
        RolloutState.PENDING,
        RolloutState.WAVE_RUNNING,
        RolloutState.GATE,
        RolloutState.AWAITING_APPROVAL,
        RolloutState.PAUSED,
    }
)
