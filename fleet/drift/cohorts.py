"""Cohorts: telemetry batches grouped by target, version, model, device label or named label selector."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

from fleet.errors import FleetConfigError
from fleet.selection import LabelSelector, parse_selector, selector_labels
from fleet.telemetry import TelemetryAggregate
from fleet.wire.messages import TelemetryBatch


class CohortMember(Protocol):
    """What names a cohort: a batch, or a device's telemetry summed over a time range."""

    @property
    def device_id(self) -> str: ...
    @property
    def target(self) -> str: ...
    @property
    def model(self) -> str: ...
    @property
    def version(self) -> str: ...


def _dimension_value(member: CohortMember, dim: str, labels: Mapping[str, Mapping[str, str]]) -> str:
    if dim == "target":
        return member.target
    if dim == "version":
        return member.version
    if dim == "model":
        return member.model
    if dim.startswith("label:") and len(dim) > 6:
        return labels.get(member.device_id, {}).get(dim[6:], "(none)")
    raise FleetConfigError(f"unknown cohort dimension {dim!r}: use target, version, model or label:<key>")


def group_cohorts(
    batches: Iterable[TelemetryBatch],
    *,
    by: Sequence[str] = ("target",),
    selectors: Mapping[str, str | LabelSelector] | None = None,
    device_labels: Mapping[str, Mapping[str, str]] | None = None,
    include_all: bool = True,
) -> dict[str, TelemetryAggregate]:
    """Aggregate batches into cohorts: one per combination of the ``by`` dimensions (``target``,
    ``version``, ``model``, ``label:<key>``), one per named label selector (devices' labels plus
    ``target``), and ``all`` when ``include_all``."""
    out: dict[str, TelemetryAggregate] = {}
    namer = CohortNamer(by=by, selectors=selectors, device_labels=device_labels, include_all=include_all)
    for batch in batches:
        single = TelemetryAggregate.from_batches([batch])  # parse the sketches once per batch
        for name in namer.names(batch):
            agg = out.get(name)
            if agg is None:
                agg = out[name] = TelemetryAggregate()
            agg.merge(single)
    return out


class CohortNamer:
    """The cohorts one batch (or any `CohortMember`) belongs to, by the rules of `group_cohorts` (for analyses
    that aggregate something other than `TelemetryAggregate`, such as data contract violations)."""

    def __init__(
        self,
        *,
        by: Sequence[str] = ("target",),
        selectors: Mapping[str, str | LabelSelector] | None = None,
        device_labels: Mapping[str, Mapping[str, str]] | None = None,
        include_all: bool = True,
    ) -> None:
        for dim in by:
            if dim not in ("target", "version", "model") and not (dim.startswith("label:") and len(dim) > 6):
                raise FleetConfigError(f"unknown cohort dimension {dim!r}: use target, version, model or label:<key>")
        self.by = list(by)
        self.labels = device_labels or {}
        self.include_all = include_all
        self.selectors = {name: parse_selector(s) if isinstance(s, str) else s for name, s in (selectors or {}).items()}

    @property
    def needs_devices(self) -> bool:
        """Whether names depend on the device (a label dimension or a selector), not only on model, version
        and target."""
        return bool(self.selectors) or any(dim.startswith("label:") for dim in self.by)

    def names(self, member: CohortMember) -> list[str]:
        """Cohort names of ``member``: ``all``, its ``by`` combination, then the selectors it matches."""
        names = ["all"] if self.include_all else []
        if self.by:
            names.append(",".join(f"{d}={_dimension_value(member, d, self.labels)}" for d in self.by))
        device_view = selector_labels(self.labels.get(member.device_id, {}), member.target)
        names.extend(name for name, sel in self.selectors.items() if sel.matches(device_view))
        return names
