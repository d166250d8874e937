"""Cohorts: telemetry batches grouped by target, version, model, device label or named label selector."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from fleet.errors import FleetConfigError
from fleet.selection import LabelSelector, parse_selector, selector_labels
from fleet.telemetry import TelemetryAggregate
from fleet.wire.messages import TelemetryBatch


def _dimension_value(batch: TelemetryBatch, dim: str, labels: Mapping[str, Mapping[str, str]]) -> str:
    if dim == "target":
        return batch.target
    if dim == "version":
        return batch.version
    if dim == "model":
        return batch.model
    if dim.startswith("label:") and len(dim) > 6:
        return labels.get(batch.device_id, {}).get(dim[6:], "(none)")
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
    """The cohorts one batch belongs to, by the rules of `group_cohorts` (for analyses that aggregate
    something other than `TelemetryAggregate`, such as data contract violations)."""

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

    def names(self, batch: TelemetryBatch) -> list[str]:
        """Cohort names of ``batch``: ``all``, its ``by`` combination, then the selectors it matches."""
        names = ["all"] if self.include_all else []
        if self.by:
            names.append(",".join(f"{d}={_dimension_value(batch, d, self.labels)}" for d in self.by))
        device_view = selector_labels(self.labels.get(batch.device_id, {}), batch.target)
        names.extend(name for name, sel in self.selectors.items() if sel.matches(device_view))
        return names
