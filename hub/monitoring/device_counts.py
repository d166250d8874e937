"""What cohort counts need of a device's telemetry of one model version: requests and data contract checks,
summed over a time range.

Read from the window aggregates' device rows (`counts_from_rows`) or summed from batches
(`counts_from_batches`): the same sums either way, so contract violation reports and policies count cohorts
(named by `fleet.drift.cohorts.CohortNamer`) without reading every batch.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from fleet.wire.messages import TelemetryBatch
from hub.registry.device_windows import DeviceWindowSums
from hub.registry.telemetry_windows import DeviceWindowRow

__all__ = ["DeviceCounts", "counts_from_batches", "counts_from_rows"]

_Key = tuple[str, str, str, str]  # device id, model, version, target


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


def counts_from_batches(batches: Iterable[TelemetryBatch]) -> list[DeviceCounts]:
    """``batches`` (ones that passed `fleet.telemetry.validate_batch`) summed per device, model version and
    target."""
    sums: dict[_Key, DeviceWindowSums] = {}
    for batch in batches:
        key = (batch.device_id, batch.model, batch.version, batch.target)
        mine = sums.get(key)
        if mine is None:
            mine = sums[key] = DeviceWindowSums()
        mine.add(batch)
    return _counts(sums)


def counts_from_rows(rows: Iterable[DeviceWindowRow]) -> list[DeviceCounts]:
    """`TelemetryDeviceWindow` rows summed per device, model version and target; rows that only record that
    a device contributed (no batches counted) are left out."""
    sums: dict[_Key, DeviceWindowSums] = {}
    for row in rows:
        if row.batches <= 0:
            continue
        key = (row.device_id, row.model, row.version, row.target)
        mine = sums.get(key)
        if mine is None:
            mine = sums[key] = DeviceWindowSums()
        mine.add_row(row)
    return _counts(sums)


def _counts(sums: dict[_Key, DeviceWindowSums]) -> list[DeviceCounts]:
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
