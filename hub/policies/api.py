"""REST routes for policies: set and read a model version's policy, list policy events, and the contract
violation rates per cohort the policies judge.

Reading needs a viewer token, setting a policy an operator's. Errors are `hub.errors` ones: unknown version or
policy is `NotFoundError` (404), an invalid policy or cohort dimension `InvalidRequestError` (422).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends, Query
from pydantic import ValidationError

from fleet.errors import FleetError
from hub.auth import Role, allow
from hub.errors import InvalidRequestError
from hub.monitoring.cohort_query import CohortQuery, cohort_query
from hub.monitoring.queries import violation_report_for
from hub.policies.config import Policy
from hub.registry.policies import PolicyStore

if TYPE_CHECKING:
    from hub.app import Hub


def create_policies_router(hub: Hub) -> APIRouter:
    """Policy and contract-violation routes bound to ``hub``'s registry and telemetry."""
    router = APIRouter(tags=["policies"])
    store = PolicyStore(hub.registry.db)

    @router.put("/models/{name}/versions/{version}/policy", dependencies=allow(Role.OPERATOR))
    def put_policy(name: str, version: str, body: dict[str, Any]) -> dict[str, Any]:
        """Set the version's policy (replacing any); the hub evaluates it on its next pass."""
        hub.registry.get_version(name, version)
        try:
            policy = Policy.model_validate(body)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "policy"
            raise InvalidRequestError(f"invalid policy: {where}: {first['msg']}") from exc
        store.put(name, version, policy.model_dump(mode="json"), now=time.time())
        return {"model": name, "version": version, "policy": policy.model_dump(mode="json")}

    @router.get("/models/{name}/versions/{version}/policy", dependencies=allow(Role.VIEWER))
    def get_policy(name: str, version: str) -> dict[str, Any]:
        """The version's policy."""
        row = store.get(name, version)
        return {"model": name, "version": version, "policy": row.policy, "updated_at": row.updated_at}

    @router.get("/policy-events", dependencies=allow(Role.VIEWER))
    def policy_events(
        model: str | None = Query(default=None, max_length=128),
        limit: int = Query(default=100, ge=1, le=1000),
    ) -> list[dict[str, Any]]:
        """What policies did (alert, pause, rollback, rollback_failed) with their evidence, newest first."""
        return [row.model_dump() for row in store.events(model, limit=limit)]

    @router.get("/models/{name}/versions/{version}/contract-violations", dependencies=allow(Role.VIEWER))
    def contract_violations(name: str, version: str, query: CohortQuery = Depends(cohort_query)) -> dict[str, Any]:
        """Share of input rows breaking each data contract rule, per cohort (cohorts as in drift reports)."""
        hub.registry.get_version(name, version)
        try:
            report = violation_report_for(
                hub.monitoring.source(), name, version, by=query.by, selectors=query.selectors, since=query.since
            )
        except FleetError as exc:
            raise InvalidRequestError(str(exc)) from exc
        return report.model_dump(mode="json")

    return router
