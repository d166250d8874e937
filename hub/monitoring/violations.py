"""Data contract violation rates per cohort, from the counts agents report in telemetry.

A rule's rate is the share of checked input rows that broke it; ``rate`` is the highest rule rate of the
cohort (rows breaking several rules count once per rule, so rates are not summed). The counts come per device
(`hub.monitoring.device_counts`: from the window aggregates or from batches; `violation_report_for` in
`hub.monitoring.queries` picks).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from pydantic import BaseModel, ConfigDict, Field

from fleet.drift.cohorts import CohortNamer
from hub.monitoring.device_counts import DeviceCounts

__all__ = ["CohortViolations", "ViolationReport", "violation_report"]


class CohortViolations(BaseModel):
    """Contract checks of one cohort."""

    model_config = ConfigDict(extra="forbid")
    cohort: str
    devices: list[str] = Field(default_factory=list)
    rows: int = 0
    violations: dict[str, int] = Field(default_factory=dict)
    rates: dict[str, float] = Field(default_factory=dict)
    rate: float = 0.0


class ViolationReport(BaseModel):
    """Contract violation rates of one model version, per cohort."""

    model_config = ConfigDict(extra="forbid")
    model: str
    version: str
    cohorts: list[CohortViolations]

    def cohort(self, name: str) -> CohortViolations | None:
        """The cohort called ``name``, if it had telemetry."""
        return next((c for c in self.cohorts if c.cohort == name), None)


def violation_report(
    counts: Iterable[DeviceCounts],
    *,
    model: str,
    version: str,
    by: Sequence[str] = ("target",),
    selectors: Mapping[str, str] | None = None,
    device_labels: Mapping[str, Mapping[str, str]] | None = None,
) -> ViolationReport:
    """Sum the contract counts of ``model:version``'s devices per cohort (cohorts as in drift reports)."""
    namer = CohortNamer(by=by, selectors=selectors, device_labels=device_labels)
    cohorts: dict[str, CohortViolations] = {}
    devices: dict[str, set[str]] = {}
    for device in counts:
        if device.model != model or device.version != version or not device.contract_rows:
            continue
        for name in namer.names(device):
            cohort = cohorts.setdefault(name, CohortViolations(cohort=name))
            devices.setdefault(name, set()).add(device.device_id)
            cohort.rows += device.contract_rows
            for rule, count in device.contract_violations.items():
                cohort.violations[rule] = cohort.violations.get(rule, 0) + count
    for name, cohort in cohorts.items():
        cohort.devices = sorted(devices[name])
        cohort.rates = {rule: count / cohort.rows for rule, count in sorted(cohort.violations.items())}
        cohort.rate = max(cohort.rates.values(), default=0.0)
    return ViolationReport(model=model, version=version, cohorts=list(cohorts.values()))
