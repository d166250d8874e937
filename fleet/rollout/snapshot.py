"""`RolloutSnapshot`: everything a rollout is (stored as JSON), its per-device records, and what can be read off it."""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, Field

from fleet.rollout.states import FINAL_STATES, TRANSITIONS, Command, Event, RolloutState
from fleet.rollout_plan import RolloutPlan
from fleet.selection import Variant


class Phase(StrEnum):
    """One device's progress within a rollout."""

    PENDING = "pending"  # eligible, not sent yet
    DISPATCHED = "dispatched"  # sent, no outcome yet
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"  # no outcome within device_timeout_s; a later report still counts
    CURRENT = "current"  # already ran the version when first seen: nothing to do
    SKIPPED = "skipped"  # no fitting variant: reported, never sent
    REMOVED = "removed"  # a pending device that left the inventory or the selector


#: Phases of a device that was sent the version.
ENGAGED = frozenset({Phase.DISPATCHED, Phase.SUCCEEDED, Phase.FAILED, Phase.TIMED_OUT})
#: Phases in which a device has an outcome.
TERMINAL = frozenset({Phase.SUCCEEDED, Phase.FAILED, Phase.TIMED_OUT})
#: Phases of the devices a rollout is to reach: its waves are shares of these.
POPULATION = ENGAGED | {Phase.PENDING}


class DeviceRecord(BaseModel):
    """What the rollout knows about one device that its selector matched."""

    device_id: str
    device_class: str
    target: str | None
    variant_id: str | None = None
    phase: Phase
    order: int = 0
    canary: bool = False
    wave: int | None = None
    dispatched_at: float | None = None
    finished_at: float | None = None
    detail: str = ""
    rollback: bool = False
    rolled_back: bool = False


class GateProgress(BaseModel):
    """The quality gate of one completed wave."""

    wave: int
    request_id: str
    started_at: float
    next_request_at: float
    attempts: int = 0
    outstanding: bool = False
    reasons: list[str] = Field(default_factory=list)


class TransitionRecord(BaseModel):
    """One entry of the rollout's history."""

    at: float
    source: RolloutState
    event: Event
    target: RolloutState
    wave: int
    reason: str = ""


class GateVerdictRecord(BaseModel):
    """A verdict the gate reached, with the reasons it gave."""

    at: float
    wave: int
    attempt: int
    verdict: Literal["pass", "fail", "inconclusive"]
    reasons: list[str] = Field(default_factory=list)


class RolloutSnapshot(BaseModel):
    """Everything a rollout is: store it as JSON, load it after a restart, pass it to ``step``."""

    schema_version: Literal[1] = 1
    rollout_id: Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
    plan: RolloutPlan
    variants: list[Variant]
    state: RolloutState = RolloutState.PENDING
    reason: str = ""
    wave: int = 0
    created_at: float
    updated_at: float
    state_since: float
    devices: dict[str, DeviceRecord] = Field(default_factory=dict)
    gate: GateProgress | None = None
    deferred: bool = False
    rollback_started_at: float | None = None
    next_order: int = 0
    history: list[TransitionRecord] = Field(default_factory=list)
    cause: str = ""
    """Why the rollout last paused or aborted (kept after the reason moves on, e.g. to the rollback's outcome)."""
    gate_verdicts: list[GateVerdictRecord] = Field(default_factory=list)

    @property
    def deployment_id(self) -> str:
        """The ``deployment_id`` of every order this rollout sends."""
        return self.rollout_id

    @property
    def rollback_deployment_id(self) -> str:
        """The ``deployment_id`` of the orders that return devices to their last known good model."""
        return f"{self.rollout_id}.rollback"

    @property
    def final(self) -> bool:
        """Whether the rollout has ended (completed or aborted)."""
        return self.state in FINAL_STATES


def new_rollout(rollout_id: str, plan: RolloutPlan, variants: Iterable[Variant], *, now: float) -> RolloutSnapshot:
    """A rollout in PENDING; the first ``step`` starts it with the devices it is given."""
    return RolloutSnapshot(
        rollout_id=rollout_id,
        plan=plan,
        variants=list(variants),
        created_at=now,
        updated_at=now,
        state_since=now,
    )


def allowed_commands(snapshot: RolloutSnapshot) -> list[Command]:
    """The operator commands the current state accepts."""
    return [command for command in Command if (snapshot.state, Event(command.value)) in TRANSITIONS]


def records_in(snapshot: RolloutSnapshot, phases: frozenset[Phase]) -> list[DeviceRecord]:
    """The device records of ``snapshot`` in one of ``phases``."""
    return [record for record in snapshot.devices.values() if record.phase in phases]


def population(snapshot: RolloutSnapshot) -> int:
    """How many devices the rollout is to reach (pending or sent)."""
    return len(records_in(snapshot, POPULATION))


def schedule(snapshot: RolloutSnapshot) -> list[int]:
    """Cumulative device targets per wave (index 0 is the canary), for the current population."""
    canary_size = sum(1 for record in records_in(snapshot, POPULATION) if record.canary)
    return snapshot.plan.schedule(population(snapshot), canary_size)


def wave_name(wave: int) -> str:
    """How a wave is called in reasons and status: ``canary`` or ``wave N``."""
    return "canary" if wave == 0 else f"wave {wave}"
