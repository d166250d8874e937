"""REST routes for monitoring: Prometheus ``/metrics``, drift of a model version, canary analysis of a rollout
(or a plain deployment), and the window aggregates of a version's telemetry.

Reports are the JSON of `fleet.drift.DriftReport` and `fleet.canary.CanaryReport`; computing one also
publishes its scores on ``/metrics``. Errors are `hub.errors` ones: unknown version, reference or rollout is
`NotFoundError` (404), a bad cohort selector or dimension `InvalidRequestError` (422).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends, Response
from prometheus_client import CONTENT_TYPE_LATEST

from fleet.errors import FleetError
from hub.auth import Role, allow
from hub.errors import InvalidRequestError, NotFoundError
from hub.monitoring.cohort_query import CohortQuery, cohort_query
from hub.monitoring.queries import canary_report_for, drift_report_for
from hub.registry.rollouts import RolloutStore

if TYPE_CHECKING:
    from hub.app import Hub


def create_monitoring_router(hub: Hub) -> APIRouter:
    """Monitoring routes bound to ``hub`` (its registry, bundles, rollouts and metrics)."""
    router = APIRouter(tags=["monitoring"])
    monitoring = hub.monitoring

    @router.get("/metrics", response_class=Response, dependencies=allow(Role.VIEWER))
    def metrics() -> Response:
        """Prometheus text exposition of the fleet metrics (no per-device labels) and the hub process."""
        return Response(content=monitoring.exposition(), media_type=CONTENT_TYPE_LATEST)

    @router.get("/models/{name}/versions/{version}/drift", dependencies=allow(Role.VIEWER))
    def drift(name: str, version: str, query: CohortQuery = Depends(cohort_query)) -> dict[str, Any]:
        """Drift of the version's telemetry against the reference shipped in its bundle, per cohort."""
        hub.registry.get_version(name, version)  # 404 for an unknown version
        try:
            report = drift_report_for(
                monitoring.source(), name, version, by=query.by, selectors=query.selectors, since=query.since
            )
        except FleetError as exc:
            raise InvalidRequestError(str(exc)) from exc
        monitoring.record_drift(report)
        return report.model_dump(mode="json")

    def canary(rollout_id: str) -> dict[str, Any]:
        try:
            report = canary_report_for(monitoring.source(), rollout_id)
        except FleetError as exc:
            raise InvalidRequestError(str(exc)) from exc
        monitoring.record_canary(rollout_id, report)
        return {"rollout_id": rollout_id, **report.model_dump(mode="json"), "gate_verdicts": gate_verdicts(rollout_id)}

    def gate_verdicts(rollout_id: str) -> list[dict[str, Any]]:
        """The verdicts the rollout's own gate reached (none for a plain deployment)."""
        try:
            snapshot = RolloutStore(hub.registry.db).load(rollout_id)
        except NotFoundError:
            return []
        return [v.model_dump(mode="json") for v in snapshot.gate_verdicts]

    @router.get("/rollouts/{rollout_id}/canary", dependencies=allow(Role.VIEWER))
    def rollout_canary(rollout_id: str) -> dict[str, Any]:
        """Canary verdict (pass, fail, inconclusive) of a rollout: canary devices against the others."""
        return canary(rollout_id)

    @router.get("/deployments/{deployment_id}/canary", dependencies=allow(Role.VIEWER))
    def deployment_canary(deployment_id: str) -> dict[str, Any]:
        """Canary verdict of a deployment: its devices against the model's other versions since it began."""
        return canary(deployment_id)

    @router.get("/models/{name}/versions/{version}/telemetry/rollups", dependencies=allow(Role.VIEWER))
    def rollups(name: str, version: str) -> list[dict[str, Any]]:
        """The version's telemetry per device class and (hourly, by default) window, oldest first: counts,
        histograms and predictions of every batch stored, raw batches since pruned included."""
        devices = hub.registry.windows.device_counts(name, version)
        return [
            r.model_dump(exclude={"id", "sketches"}) | {"devices": devices.get((r.target, r.window_start), 0)}
            for r in hub.registry.windows.rows(name, version)
        ]

    return router
