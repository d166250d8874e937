"""The hub's monitoring source: telemetry, device labels and the window aggregates from the registry.

Kept apart from `hub.monitoring.queries` (the reports and the `MonitoringSource` seam) so that the queries,
and the commands that analyse telemetry files with them, never import the registry or SQL.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from fleet.canary import CanaryConfig, CanaryReport
from fleet.telemetry import ReferenceProfile, TelemetryAggregate
from hub.errors import NotFoundError
from hub.monitoring.canary_windows import canary_from_windows
from hub.monitoring.device_counts import DeviceCounts
from hub.monitoring.queries import LabelAggregates, RolloutView, TelemetryRead, batch_in_range, rollout_groups
from hub.registry import Registry
from hub.registry.device_windows import DeviceWindowSums
from hub.registry.telemetry_windows import DeviceWindowRow

__all__ = ["RegistrySource", "counts_from_rows"]


class RegistrySource:
    """Telemetry and labels from the hub registry. References and rollouts come from the callables given
    (the bundle store and the rollout engine own them); without them, a deployment id is read as a rollout
    whose canary is the deployment's devices, over the time since it was created."""

    def __init__(
        self,
        registry: Registry,
        *,
        reference: Callable[[str, str], ReferenceProfile | None] | None = None,
        rollout: Callable[[str], RolloutView | None] | None = None,
    ) -> None:
        self._registry = registry
        self._reference = reference
        self._rollout = rollout

    def telemetry(
        self, model: str, version: str | None = None, *, since: float | None = None, until: float | None = None
    ) -> TelemetryRead:
        batches, skipped = self._registry.read_telemetry(model, version)
        return TelemetryRead([b for b in batches if batch_in_range(b, since, until)], skipped)

    def target_aggregates(
        self, model: str, version: str, *, since: float | None = None, until: float | None = None
    ) -> list[tuple[str, TelemetryAggregate]]:
        return self._registry.windows.by_target(model, version, since, until)

    def label_aggregates(
        self, model: str, version: str, keys: set[str], *, since: float | None = None, until: float | None = None
    ) -> LabelAggregates | None:
        """The label rows' ``devices`` are those of their window whose current labels put them in the cohort
        (the rows keep no device ids): they differ from the batches' only for devices relabelled since."""
        read = self._registry.windows.by_label(model, version, keys, since, until)
        if not read.complete:
            return None
        members: dict[tuple[str, float], set[str]] = {}
        for target, agg in read.targets:
            members.setdefault((target, agg.window_start), set()).update(agg.devices)
        labels = self.device_labels() if read.labels else {}
        for target, key, value, agg in read.labels:
            window = members.get((target, agg.window_start), set())
            agg.devices = {d for d in window if labels.get(d, {}).get(key) == value}
        return LabelAggregates(read.targets, read.labels)

    def device_counts(
        self, model: str, version: str, *, since: float | None = None, until: float | None = None
    ) -> list[DeviceCounts]:
        return counts_from_rows(self._registry.windows.device_rows(model, version, since, until))

    def canary_report(self, rollout: RolloutView, config: CanaryConfig) -> CanaryReport:
        in_canary, in_baseline = rollout_groups(rollout)
        return canary_from_windows(
            self._registry.windows.in_range(rollout.model, rollout.window_start, rollout.window_end),
            in_canary=in_canary,
            in_baseline=in_baseline,
            since=rollout.window_start,
            until=rollout.window_end,
            shadow_candidate=rollout.candidate_version,
            config=config,
        )

    def reference(self, model: str, version: str) -> ReferenceProfile:
        found = self._reference(model, version) if self._reference is not None else None
        if found is None:
            raise NotFoundError(f"no drift reference stored for {model}:{version} (pass one with --reference)")
        return found

    def device_labels(self) -> dict[str, dict[str, str]]:
        return {d.id: dict(d.labels) for d in self._registry.list_devices()}

    def rollout(self, rollout_id: str) -> RolloutView:
        if self._rollout is not None:
            found = self._rollout(rollout_id)
            if found is not None:
                return found
        deployment = self._registry.get_deployment(rollout_id)  # NotFoundError when unknown
        return RolloutView(
            rollout_id=deployment.id,
            model=deployment.model,
            candidate_version=deployment.version,
            canary_device_ids=list(deployment.device_ids),
            window_start=deployment.created_at,
            window_end=time.time(),
        )


def counts_from_rows(rows: Iterable[DeviceWindowRow]) -> list[DeviceCounts]:
    """`TelemetryDeviceWindow` rows summed per device, model version and target (the sums
    `hub.monitoring.device_counts.counts_from_batches` makes of the batches); rows that only record that a
    device contributed (no batches counted) are left out."""
    sums: dict[tuple[str, str, str, str], DeviceWindowSums] = {}
    for row in rows:
        if row.batches <= 0:
            continue
        key = (row.device_id, row.model, row.version, row.target)
        mine = sums.get(key)
        if mine is None:
            mine = sums[key] = DeviceWindowSums()
        mine.add_row(row)
    return [
        DeviceCounts(
            device_id=device_id,
            model=model,
            version=version,
            target=target,
            requests=s.requests,
            contract_rows=s.contract_rows,
            contract_violations=dict(s.contract_violations),
        )
        for (device_id, model, version, target), s in sorted(sums.items())
    ]
