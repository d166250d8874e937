"""Operations on stored rollouts that need no running hub (the CLI and REST use them): create, command, status."""

from __future__ import annotations

import time
import uuid

from fleet.rollout import Command, RolloutSnapshot, RolloutStatus, allowed_commands, new_rollout, summarize
from fleet.rollout_plan import RolloutPlan
from fleet.selection import Variant as PlanVariant
from hub.errors import ConflictError, InvalidRequestError
from hub.registry import Registry, Variant
from hub.registry.rollouts import RolloutStore

__all__ = ["create_rollout", "plan_variants", "request_command", "rollout_status"]


def plan_variants(registry: Registry, model: str, version: str) -> list[PlanVariant]:
    """The registry's variants of ``model:version`` as the selection engine sees them."""
    rows = registry.list_variants(model, version)
    if not rows:
        raise InvalidRequestError(f"{model}:{version} has no published variants")
    return [_plan_variant(row) for row in rows]


def _plan_variant(row: Variant) -> PlanVariant:
    metrics = row.metrics or {}

    def positive(*keys: str) -> float | None:
        for key in keys:
            value = metrics.get(key)
            if isinstance(value, int | float) and value > 0:
                return float(value)
        return None

    params = metrics.get("param_count")
    return PlanVariant(
        variant_id=str(row.id),
        target=row.target,
        precision=row.precision,
        size_bytes=max(1, row.size_bytes),
        param_count=params if isinstance(params, int) else None,
        latency_ms=positive("latency_ms", "p95_ms", "latency_p95_ms"),
        peak_memory_mb=positive("peak_memory_mb"),
        sha256=row.bundle_sha256,
    )


def create_rollout(
    store: RolloutStore,
    registry: Registry,
    plan: RolloutPlan,
    *,
    rollout_id: str | None = None,
    now: float | None = None,
) -> RolloutSnapshot:
    """Store a new rollout of ``plan`` in state pending; the hub's next tick starts it."""
    rollout_id = rollout_id or f"ro-{uuid.uuid4().hex[:10]}"
    registry.get_version(plan.model, plan.version)
    snapshot = new_rollout(
        rollout_id, plan, plan_variants(registry, plan.model, plan.version), now=time.time() if now is None else now
    )
    store.create(snapshot)
    return snapshot


def request_command(store: RolloutStore, rollout_id: str, command: Command | str) -> Command:
    """Check ``command`` against the rollout's state now and queue it for the hub; return it parsed."""
    try:
        parsed = Command(command)
    except ValueError:
        raise InvalidRequestError(
            f"unknown command {command!r}; use one of {', '.join(c.value for c in Command)}"
        ) from None
    snapshot = store.load(rollout_id)
    if parsed not in allowed_commands(snapshot):
        allowed = ", ".join(c.value for c in allowed_commands(snapshot)) or "none"
        raise ConflictError(
            f"rollout {rollout_id} is {snapshot.state.value}: {parsed.value} is not allowed (allowed: {allowed})"
        )
    store.queue_command(rollout_id, parsed)
    return parsed


def rollout_status(store: RolloutStore, rollout_id: str) -> RolloutStatus:
    """`fleet.rollout.summarize` of the stored snapshot."""
    return summarize(store.load(rollout_id))
