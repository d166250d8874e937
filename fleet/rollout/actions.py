"""What ``step`` asks the hub to do: plain, serialisable data (stored in the outbox before it is carried out)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from fleet.rollout.states import Event, RolloutState
from fleet.rollout_plan import Name
from fleet.selection import Variant


class _Action(BaseModel):
    model_config = ConfigDict(frozen=True)


class DeployTo(_Action):
    """Publish a deployment order for ``variant`` to each device (retained, QoS 1)."""

    kind: Literal["deploy"] = "deploy"
    deployment_id: Name
    model: str
    version: str
    variant: Variant
    wave: int
    device_ids: tuple[str, ...]


class RollBack(_Action):
    """Return each device to its last known good model (``allow_downgrade`` order), or clear its order."""

    kind: Literal["rollback"] = "rollback"
    deployment_id: Name
    device_ids: tuple[str, ...]
    reason: str


class RequestGate(_Action):
    """Ask the canary analysis for a verdict on ``candidates`` (on the new version) against ``baseline``.

    Answer with ``step(..., gate_verdict=...)``; telemetry since ``since`` is the evidence.
    """

    kind: Literal["request_gate"] = "request_gate"
    request_id: str
    model: str
    version: str
    wave: int
    attempt: int
    since: float
    candidates: tuple[str, ...]
    baseline: tuple[str, ...]


class Pause(_Action):
    """The rollout stopped sending and needs a person (approval, inconclusive gate, low success)."""

    kind: Literal["pause"] = "pause"
    reason: str


class Skipped(_Action):
    """Devices that will not get the version because no variant fits them."""

    kind: Literal["skipped"] = "skipped"
    device_ids: tuple[str, ...]
    reason: str


class Deferred(_Action):
    """Deployments wait for a maintenance window (``until``: next opening, epoch seconds)."""

    kind: Literal["deferred"] = "deferred"
    reason: str
    until: float | None


class StateChanged(_Action):
    """A transition happened (for the audit log and notifications)."""

    kind: Literal["state_changed"] = "state_changed"
    source: RolloutState
    event: Event
    target: RolloutState
    wave: int
    reason: str


class Notice(_Action):
    """Something the hub should log, e.g. a gate verdict that arrived when none was awaited."""

    kind: Literal["notice"] = "notice"
    message: str


Action = Annotated[
    DeployTo | RollBack | RequestGate | Pause | Skipped | Deferred | StateChanged | Notice,
    Field(discriminator="kind"),
]
ACTIONS_ADAPTER: TypeAdapter[list[Action]] = TypeAdapter(list[Action])


def dump_actions(actions: Sequence[Action]) -> bytes:
    """Serialise actions to JSON (e.g. for an outbox table the hub drains after persisting the snapshot)."""
    return ACTIONS_ADAPTER.dump_json(list(actions))


def load_actions(data: bytes | str) -> list[Action]:
    """Parse what `dump_actions` wrote."""
    return ACTIONS_ADAPTER.validate_json(data)
