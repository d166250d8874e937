"""REST routes for rollouts: start, list, status (per wave and per device class), operator commands.

Errors are `hub.errors` ones, answered with their status by the app's handler; plan validation errors
(`fleet.errors.FleetConfigError`) are re-raised as `InvalidRequestError` (422).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fleet.errors import FleetConfigError
from fleet.rollout import Command
from fleet.rollout_plan import RolloutPlan, gate_from_cli, plan_from_cli
from hub.auth import Role, allow
from hub.errors import InvalidRequestError
from hub.registry.rollouts import RolloutStore
from hub.rollouts.operations import create_rollout, request_command, rollout_status

if TYPE_CHECKING:
    from hub.app import Hub


# Bounds that keep every accepted value storable; the plan's own rules are checked by `fleet.rollout_plan`.
Short = Annotated[str, Field(max_length=1024, pattern=r"^[^\x00]*$")]
Count = Annotated[int, Field(ge=0, le=1_000_000_000)]
# Stored as rollout.id (100 characters; its roll-back deployment adds ".rollback"), used in deployment ids.
RolloutId = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]


class RolloutIn(BaseModel):
    """Start a rollout: a full ``plan`` (see docs/rollouts.md), or the CLI's short options (``gate_*``: the
    gate's timing and canary analysis settings, as ``edgefleet rollout start --gate-*``)."""

    model_config = ConfigDict(allow_inf_nan=False)
    plan: dict[str, Any] | None = None
    model_version: Short | None = Field(default=None, examples=["digits:1.2.0"])
    selector: Short = ""
    canary: Short = "5%"
    waves: Short = "10,50,100"
    max_failure_rate: float | None = 0.05
    max_failures: Count | None = None
    min_devices: Count = 10
    success_threshold: float = 0.95
    approval: Short = "none"
    gate: bool = True
    gate_after: Short = "every_wave"
    gate_soak_s: float = 0.0
    gate_retry_s: float = 300.0
    gate_max_wait_s: float = 3600.0
    gate_min_devices: Count | None = None
    gate_min_requests: Count | None = None
    gate_min_requests_per_device: Count | None = None
    gate_critical: Short | None = Field(default=None, examples=["latency,error_rate,confidence"])
    device_timeout_s: float = 1800.0
    rollout_id: RolloutId | None = None

    def to_plan(self) -> RolloutPlan:
        """The validated plan, or `InvalidRequestError` saying what is wrong."""
        try:
            if self.plan is not None:
                return RolloutPlan.model_validate(self.plan)
            if self.model_version is None:
                raise InvalidRequestError("give either plan or model_version")
            gate = (
                gate_from_cli(
                    after=self.gate_after,
                    soak_s=self.gate_soak_s,
                    retry_interval_s=self.gate_retry_s,
                    max_wait_s=self.gate_max_wait_s,
                    min_devices=self.gate_min_devices,
                    min_requests=self.gate_min_requests,
                    min_requests_per_device=self.gate_min_requests_per_device,
                    critical=self.gate_critical,
                )
                if self.gate
                else None
            )
            return plan_from_cli(
                self.model_version,
                selector=self.selector,
                canary=self.canary,
                waves=self.waves,
                max_failure_rate=self.max_failure_rate,
                max_failures=self.max_failures,
                min_devices=self.min_devices,
                success_threshold=self.success_threshold,
                approval=self.approval,
                gate=self.gate,
                device_timeout_s=self.device_timeout_s,
                gate_spec=gate,
            )
        except (FleetConfigError, ValidationError) as exc:
            raise InvalidRequestError(str(exc)) from exc


def create_rollouts_router(hub: Hub) -> APIRouter:
    """Routes under ``/rollouts`` bound to ``hub`` (its running `RolloutManager` when started)."""
    router = APIRouter(prefix="/rollouts", tags=["rollouts"])
    store = RolloutStore(hub.registry.db)

    @router.post("", status_code=201, dependencies=allow(Role.OPERATOR))
    def start(body: RolloutIn) -> dict[str, Any]:
        """Create a rollout; a running hub starts it at once."""
        plan = body.to_plan()
        if hub.rollouts is not None:
            snapshot = hub.rollouts.start_rollout(plan, rollout_id=body.rollout_id)
        else:
            snapshot = create_rollout(store, hub.registry, plan, rollout_id=body.rollout_id)
        return rollout_status(store, snapshot.rollout_id).model_dump(mode="json")

    @router.get("", dependencies=allow(Role.VIEWER))
    def list_rollouts() -> list[dict[str, Any]]:
        """All rollouts, newest first."""
        return [
            {
                "rollout_id": r.id,
                "model": r.model,
                "version": r.version,
                "state": r.state,
                "created_at": r.created_at,
                "updated_at": r.updated_at,
            }
            for r in store.all()
        ]

    @router.get("/{rollout_id}", dependencies=allow(Role.VIEWER))
    def status(rollout_id: str) -> dict[str, Any]:
        """Progress overall, per wave and per device class, the gate and the commands allowed now."""
        return rollout_status(store, rollout_id).model_dump(mode="json")

    @router.get("/{rollout_id}/events", dependencies=allow(Role.VIEWER))
    def events(rollout_id: str) -> list[dict[str, Any]]:
        """The timeline: every state change with its reason, the waves sent, gate requests, pauses, rollbacks."""
        return store.events(rollout_id)

    @router.post("/{rollout_id}/{command}", dependencies=allow(Role.OPERATOR))
    def command(rollout_id: str, command: Command) -> dict[str, Any]:
        """pause, resume, abort or promote; 409 when the rollout's state does not allow it."""
        if hub.rollouts is not None:
            return hub.rollouts.command(rollout_id, command).model_dump(mode="json")
        request_command(store, rollout_id, command)
        return rollout_status(store, rollout_id).model_dump(mode="json")

    return router
