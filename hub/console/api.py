"""JSON routes under ``/console/api`` for what the console draws and no other route gives: fleet counts,
a device's telemetry series and update history, a rollout's timeline, the model catalogue with conversion
metrics, and drift distributions. Errors are `hub.errors` ones, answered by the app's handler."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Query

from hub.auth import Role, allow
from hub.console.views import feature_distributions, fleet_summary, telemetry_series
from hub.monitoring.queries import version_aggregate
from hub.registry.rollouts import RolloutStore

if TYPE_CHECKING:
    from hub.app import Hub


def create_console_router(hub: Hub) -> APIRouter:
    """The console's data routes bound to ``hub``."""
    router = APIRouter(prefix="/console/api", tags=["console"], dependencies=allow(Role.VIEWER))
    registry = hub.registry
    store = RolloutStore(registry.db)

    @router.get("/fleet")
    def fleet() -> dict[str, Any]:
        """Device counts overall, online, and by target, model version, update state and label."""
        return fleet_summary(registry.list_devices())

    @router.get("/devices/{device_id}/telemetry")
    def device_telemetry(
        device_id: str, hours: float = Query(default=6.0, gt=0, le=24 * 31, description="how far back")
    ) -> dict[str, Any]:
        """One point per telemetry window of the device: requests, errors, latency p50/p95/p99, confidence."""
        registry.get_device(device_id)  # 404 for an unknown device
        batches = registry.device_telemetry(device_id, since=time.time() - hours * 3600)
        return {"device_id": device_id, "hours": hours, "series": telemetry_series(batches)}

    @router.get("/devices/{device_id}/history")
    def device_history(device_id: str) -> list[dict[str, Any]]:
        """Every deployment (plain or a rollout's) that reached the device, newest first, with its outcome."""
        registry.get_device(device_id)
        history = []
        for deployment in registry.list_deployments():
            for row in registry.deployment_devices(deployment.id):
                if row.device_id == device_id:
                    history.append(
                        {
                            "deployment_id": deployment.id,
                            "model": deployment.model,
                            "version": deployment.version,
                            "state": row.state,
                            "ok": row.ok,
                            "detail": row.detail,
                            "updated_at": row.updated_at,
                        }
                    )
        return sorted(history, key=lambda h: h["updated_at"], reverse=True)

    @router.get("/rollouts/{rollout_id}/timeline")
    def rollout_timeline(rollout_id: str) -> dict[str, Any]:
        """The rollout's state transitions with their reasons, the gate's last reasons, and every action."""
        snapshot = store.load(rollout_id)
        return {
            "rollout_id": rollout_id,
            "transitions": [t.model_dump(mode="json") for t in snapshot.history],
            "gate": snapshot.gate.model_dump(mode="json") if snapshot.gate else None,
            "actions": [_action_line(a.model_dump(mode="json")) for a in store.history(rollout_id)],
        }

    @router.get("/models")
    def models() -> list[dict[str, Any]]:
        """Every model, its versions (highest first) and each version's variants with their conversion metrics."""
        return [
            {
                "name": model.name,
                "description": model.description,
                "versions": [
                    {
                        "version": version.version,
                        "notes": version.notes,
                        "created_at": version.created_at,
                        "variants": [
                            v.model_dump(include={"target", "runtime", "precision", "size_bytes", "metrics"})
                            for v in registry.list_variants(model.name, version.version)
                        ],
                    }
                    for version in registry.list_versions(model.name)
                ],
            }
            for model in registry.list_models()
        ]

    @router.get("/models/{name}/versions/{version}/distributions")
    def distributions(
        name: str,
        version: str,
        last_hours: float | None = Query(default=None, gt=0, description="only telemetry of the last N hours"),
    ) -> list[dict[str, Any]]:
        """Per feature, the reference and current distributions on common bins (shares per bin)."""
        registry.get_version(name, version)
        source = hub.monitoring.source()
        since = time.time() - last_hours * 3600 if last_hours else None
        current = version_aggregate(source, name, version, since=since)
        return feature_distributions(source.reference(name, version), current)

    return router


def _action_line(action: dict[str, Any]) -> dict[str, Any]:
    """An outbox action without its bulky fields (device lists, variants), with a one-line summary."""
    kind = action.get("kind", "")
    devices = action.get("device_ids") or action.get("candidates") or ()
    text = action.get("reason") or action.get("message") or ""
    if kind == "deploy":
        text = f"wave {action.get('wave', 0) + 1}: {action.get('model')}:{action.get('version')}"
    elif kind == "request_gate":
        text = f"gate of wave {action.get('wave', 0) + 1}, attempt {action.get('attempt')}"
    return {"kind": kind, "devices": len(devices), "summary": text}
