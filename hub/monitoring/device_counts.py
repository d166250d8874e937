"""What cohort counts need of a device's telemetry of one model version: requests and data contract checks,
summed over a time range.

Summed from batches here (`counts_from_batches`), or read from the window aggregates' device rows
(`hub.monitoring.registry_source.counts_from_rows`): the same sums either way, so contract violation reports
and policies count cohorts (named by `fleet.drift.cohorts.CohortNamer`) without reading every batch.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from fleet.wire.messages import TelemetryBatch

__all__ = ["DeviceCounts", "counts_from_batches"]


@dataclass
class DeviceCounts:
    """One device's telemetry of one model version and target, summed."""

    device_id: str
    model: str
    version: str
    target: str
    requests: int = 0
    contract_rows: int = 0
    """Input rows checked against the data contract."""
    contract_violations: dict[str, int] = field(default_factory=dict)
    """Rows breaking each contract rule."""

    def add(self, batch: TelemetryBatch) -> None:
        """Sum in one batch of this device, version and target."""
        self.requests += batch.requests
        if batch.contract_rows:  # violations without checked rows count nowhere, as in the device rows
            self.contract_rows += batch.contract_rows
            for rule, count in batch.contract_violations.items():
                self.contract_violations[rule] = self.contract_violations.get(rule, 0) + count


def counts_from_batches(batches: Iterable[TelemetryBatch]) -> list[DeviceCounts]:
    """``batches`` summed per device, model version and target."""
    out: dict[tuple[str, str, str, str], DeviceCounts] = {}
    for batch in batches:
        key = (batch.device_id, batch.model, batch.version, batch.target)
        mine = out.get(key)
        if mine is None:
            mine = out[key] = DeviceCounts(*key)
        mine.add(batch)
    return [out[key] for key in sorted(out)]
