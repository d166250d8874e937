"""What ``step`` is given besides the snapshot: each device's current status and the gate's verdict."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from fleet.verdict import Verdict
from fleet.wire.messages import DeviceState, UpdateState


@runtime_checkable
class GateInput(Protocol):
    """What ``step`` needs from a canary analysis result (``fleet.canary`` produces one).

    ``verdict`` is ``"pass"``, ``"fail"`` or ``"inconclusive"`` (a ``StrEnum`` works); ``reasons`` explain it.
    """

    @property
    def verdict(self) -> str: ...

    @property
    def reasons(self) -> Sequence[str]: ...


class GateVerdict(BaseModel):
    """A ready-made `GateInput` (for tests, manual verdicts and the REST API)."""

    model_config = ConfigDict(frozen=True)

    verdict: Verdict
    reasons: tuple[str, ...] = ()


#: Update states in which a device is still working on an order (neither done nor failed).
BUSY_UPDATE_STATES = frozenset(
    {
        UpdateState.DOWNLOAD,
        UpdateState.VERIFY,
        UpdateState.INSTALL,
        UpdateState.HEALTH_CHECK,
        UpdateState.COMMIT,
    }
)


class DeviceStatus(BaseModel):
    """The hub's current view of one device, given to every ``step`` (the full inventory, each time).

    ``deployment_id``, ``update_state`` and ``active_*`` mirror the device's retained `DeviceState`;
    ``error`` is the detail of the last failed `UpdateEvent` the device sent for ``deployment_id``.
    A device is counted as succeeded when it runs the rollout's version and is not mid-update, as failed
    when it reports ``failed``/``rollback`` (or an error) for the rollout's deployment.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    device_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")]
    target: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    online: bool = True
    active_model: str | None = None
    active_version: str | None = None
    update_state: UpdateState | None = None
    deployment_id: str | None = None
    error: str | None = None

    @classmethod
    def from_state(
        cls, state: DeviceState, labels: Mapping[str, str] | None = None, error: str | None = None
    ) -> DeviceStatus:
        """Build from a device's retained `DeviceState`, the registry's labels and its last failed event."""
        return cls(
            device_id=state.device_id,
            target=state.target,
            labels=dict(labels or {}),
            online=state.online,
            active_model=state.active.model if state.active else None,
            active_version=state.active.version if state.active else None,
            update_state=state.update_state,
            deployment_id=state.deployment_id,
            error=error,
        )
