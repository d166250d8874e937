"""Drift and canary reports from stored telemetry: the seam between the hub's storage and `fleet` analysis.

The analysis functions take plain lists of `TelemetryBatch` (and a `ReferenceProfile`), so they are
testable without a database. Storage plugs in through the small `MonitoringSource` protocol:

- `hub.monitoring.registry_source.RegistrySource` reads telemetry and device labels from the hub registry;
  reference profiles and rollouts come from callables the hub passes in (the bundle store and the rollout
  engine own them);
- `FileSource` reads a JSON dump (``{"batches": [...], "reference": {...}, "labels": {...},
  "rollouts": {...}}``) for offline analysis and tests.

A source that keeps the ingestion-time window aggregates (`AggregateSource`: `RegistrySource`) answers from
them, taking whole windows for a time range (a window counts when one of its batches ended in the range):

- a drift report whose cohorts depend only on target, version and model (``all``, ``target=...``; no label
  dimension, no selector) reads the version's aggregate rows (tens of rows, not every device's batch);
- contract violation reports and policies count each device's requests and contract checks from its
  per-device window rows (`device_counts_for`), for any cohorts;
- `version_aggregate` (the console's feature distributions) merges the version's aggregate rows;
- a canary report reads the model's aggregate and per-device window rows in the rollout's time range
  (`hub.monitoring.canary_windows`: one narrow row per device and window, the groups' input sketches pooled
  per cohort window).

- a drift report by one label dimension (``label:KEY``, alone or with target, version or model) and selectors of
  one ``key=value`` each reads the same rows and the label rows of those windows (`LabelAggregateSource`: one
  row per device label, as labelled when the batch was stored).

Drift by any other selector, by several label dimensions, or by a label some devices of the windows lack (its
``(none)`` cohort has no row) reads the batches.

A source hands over only batches analysis can use (`fleet.telemetry.validate_batch`); the others are skipped
and counted in the report's ``skipped_batches``, so one device's bad data never fails a report (the
aggregates only ever merged batches that passed it).

Unknown rollouts or missing references raise `hub.errors.NotFoundError`.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fleet.canary import CanaryConfig, CanaryReport, analyse_canary, device_metrics
from fleet.drift import DriftConfig, DriftReport, analyse_drift, group_cohorts
from fleet.drift.cohorts import CohortNamer
from fleet.errors import ProtocolError
from fleet.selection import parse_selector
from fleet.telemetry import ReferenceProfile, TelemetryAggregate, validate_batch
from fleet.wire.messages import TelemetryBatch
from hub.errors import NotFoundError
from hub.monitoring.device_counts import DeviceCounts, counts_from_batches
from hub.monitoring.violations import ViolationReport, violation_report

if TYPE_CHECKING:
    from hub.monitoring.canary_windows import GroupFilter

__all__ = [
    "AggregateSource",
    "FileSource",
    "LabelAggregateSource",
    "LabelAggregates",
    "MonitoringSource",
    "RolloutView",
    "TelemetryRead",
    "batch_in_range",
    "canary_report",
    "canary_report_for",
    "device_counts_for",
    "drift_report",
    "drift_report_for",
    "rollout_groups",
    "split_rollout_batches",
    "version_aggregate",
    "violation_report_for",
]


class RolloutView(BaseModel):
    """What canary analysis needs to know about a rollout."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rollout_id: str
    model: str
    candidate_version: str
    baseline_version: str | None = None
    """None: any other version of the model counts as baseline."""
    canary_device_ids: list[str] = Field(default_factory=list)
    window_start: float | None = None
    window_end: float | None = None
    canary_config: CanaryConfig | None = None
    """The analysis settings of the rollout's own gate (None: the defaults)."""


class TelemetryRead(NamedTuple):
    """Batches a source can hand to analysis, and how many it skipped as unusable."""

    batches: list[TelemetryBatch]
    skipped: int = 0


class MonitoringSource(Protocol):
    """Where reports get their data from."""

    def telemetry(
        self, model: str, version: str | None = None, *, since: float | None = None, until: float | None = None
    ) -> TelemetryRead:
        """Usable batches of ``model`` (one version, or all) whose window ends in ``[since, until]``."""
        ...

    def reference(self, model: str, version: str) -> ReferenceProfile:
        """The drift reference of a model version; `NotFoundError` when there is none."""
        ...

    def device_labels(self) -> dict[str, dict[str, str]]:
        """Labels of every known device."""
        ...

    def rollout(self, rollout_id: str) -> RolloutView:
        """The rollout; `NotFoundError` when unknown."""
        ...


@runtime_checkable
class AggregateSource(Protocol):
    """A source that also keeps window aggregates of every batch it stored."""

    def target_aggregates(
        self, model: str, version: str, *, since: float | None = None, until: float | None = None
    ) -> list[tuple[str, TelemetryAggregate]]:
        """The version's aggregate rows as (target, aggregate with its devices), whole windows holding a batch
        that ended in ``[since, until]``; empty when there are none."""
        ...

    def device_counts(
        self, model: str, version: str, *, since: float | None = None, until: float | None = None
    ) -> list[DeviceCounts]:
        """Each device's requests and contract checks of the version in the same windows."""
        ...

    def canary_report(self, rollout: RolloutView, config: CanaryConfig) -> CanaryReport:
        """The rollout's canary report from the aggregates."""
        ...


class LabelAggregates(NamedTuple):
    """A version's window aggregates of every batch as (target, aggregate with its devices), and the label rows
    of the same windows as (target, label key, label value, aggregate with its devices)."""

    targets: list[tuple[str, TelemetryAggregate]]
    labels: list[tuple[str, str, str, TelemetryAggregate]]


@runtime_checkable
class LabelAggregateSource(Protocol):
    """A source whose window aggregates also keep one row per device label (as labelled at ingestion)."""

    def label_aggregates(
        self, model: str, version: str, keys: set[str], *, since: float | None = None, until: float | None = None
    ) -> LabelAggregates | None:
        """The version's window aggregates and the label rows of ``keys`` in the same windows; None when a window
        was stored before label rows were kept (its label rows miss batches)."""
        ...


class _TargetCohort(NamedTuple):
    """What names the cohorts of an aggregate row: its model, version and target (no device)."""

    device_id: str
    model: str
    version: str
    target: str


def batch_in_range(batch: TelemetryBatch, since: float | None, until: float | None) -> bool:
    """Whether ``batch``'s window ends in ``[since, until]`` (a None bound is open)."""
    return (since is None or batch.window_end >= since) and (until is None or batch.window_end <= until)


# ------------------------------------------------------------------------------------------ pure reports


def drift_report(
    reference: ReferenceProfile,
    batches: Iterable[TelemetryBatch],
    *,
    model: str,
    version: str,
    by: Sequence[str] = ("target",),
    selectors: Mapping[str, str] | None = None,
    device_labels: Mapping[str, Mapping[str, str]] | None = None,
    config: DriftConfig = DriftConfig(),
) -> DriftReport:
    """Drift of one model version's telemetry against its reference, per cohort: ``all``, one per value
    of the ``by`` dimensions, and one per named label selector. Other versions' batches are ignored."""
    mine = [b for b in batches if b.model == model and b.version == version]
    cohorts = group_cohorts(mine, by=by, selectors=selectors, device_labels=device_labels)
    return analyse_drift(reference, cohorts, config, model=model, version=version)


def rollout_groups(rollout: RolloutView) -> tuple[GroupFilter, GroupFilter]:
    """Who is canary (candidate version, canary devices: all when none are named) and who is baseline
    (baseline version, or any other version, from devices outside the canary)."""
    canary_ids = set(rollout.canary_device_ids)

    def in_canary(device_id: str, version: str) -> bool:
        return version == rollout.candidate_version and (not canary_ids or device_id in canary_ids)

    def in_baseline(device_id: str, version: str) -> bool:
        return (
            version != rollout.candidate_version
            and device_id not in canary_ids
            and (rollout.baseline_version is None or version == rollout.baseline_version)
        )

    return in_canary, in_baseline


def split_rollout_batches(
    rollout: RolloutView, batches: Iterable[TelemetryBatch]
) -> tuple[list[TelemetryBatch], list[TelemetryBatch]]:
    """Canary and baseline batches (`rollout_groups`), both inside the rollout's window."""
    in_canary, in_baseline = rollout_groups(rollout)
    canary: list[TelemetryBatch] = []
    baseline: list[TelemetryBatch] = []
    for b in batches:
        if b.model != rollout.model or not batch_in_range(b, rollout.window_start, rollout.window_end):
            continue
        if in_canary(b.device_id, b.version):
            canary.append(b)
        elif in_baseline(b.device_id, b.version):
            baseline.append(b)
    return canary, baseline


def canary_report(
    canary_batches: Iterable[TelemetryBatch],
    baseline_batches: Iterable[TelemetryBatch],
    *,
    candidate_version: str | None = None,
    config: CanaryConfig = CanaryConfig(),
) -> CanaryReport:
    """Canary analysis of two groups of batches (aggregated per device first). Shadow statistics count
    only for ``candidate_version`` when given."""
    return analyse_canary(
        device_metrics(canary_batches, shadow_candidate=candidate_version),
        device_metrics(baseline_batches, shadow_candidate=candidate_version),
        config,
    )


# ---------------------------------------------------------------------------------- reports from a source


def drift_report_for(
    source: MonitoringSource,
    model: str,
    version: str,
    *,
    by: Sequence[str] = ("target",),
    selectors: Mapping[str, str] | None = None,
    since: float | None = None,
    until: float | None = None,
    reference: ReferenceProfile | None = None,
    config: DriftConfig = DriftConfig(),
) -> DriftReport:
    """`drift_report` on what ``source`` holds (``reference`` overrides the source's)."""
    ref = reference if reference is not None else source.reference(model, version)
    namer = CohortNamer(by=by, selectors=selectors)
    if namer.needs_devices and isinstance(source, LabelAggregateSource):
        from_labels = _label_cohorts(source, model, version, by, selectors or {}, since, until)
        if from_labels is not None:
            return analyse_drift(ref, from_labels, config, model=model, version=version)
    if not namer.needs_devices and isinstance(source, AggregateSource):
        windows = source.target_aggregates(model, version, since=since, until=until)
        if windows:
            cohorts: dict[str, TelemetryAggregate] = {}
            for target, agg in windows:
                for name in namer.names(_TargetCohort("", model, version, target)):
                    cohorts.setdefault(name, TelemetryAggregate()).merge(agg)
            return analyse_drift(ref, cohorts, config, model=model, version=version)
    batches, skipped = source.telemetry(model, version, since=since, until=until)
    report = drift_report(
        ref,
        batches,
        model=model,
        version=version,
        by=by,
        selectors=selectors,
        device_labels=source.device_labels(),
        config=config,
    )
    return report.model_copy(update={"skipped_batches": skipped})


def _single_label(selector: str) -> tuple[str, str] | None:
    """(key, value) of a selector that is one ``key=value`` clause on a device label, else None."""
    requirements = parse_selector(selector).requirements
    if len(requirements) != 1 or requirements[0].op != "=" or requirements[0].key == "target":
        return None  # a device's target counts as a label ``target`` to selectors: not in the label rows
    return requirements[0].key, requirements[0].values[0]


def _label_cohorts(
    source: LabelAggregateSource,
    model: str,
    version: str,
    by: Sequence[str],
    selectors: Mapping[str, str],
    since: float | None,
    until: float | None,
) -> dict[str, TelemetryAggregate] | None:
    """The cohorts of a drift report by one label dimension (with target, version or model) and selectors of one
    ``key=value`` each, from the window aggregates' label rows; None when they cannot answer: other cohorts, no
    aggregates, windows stored before label rows were kept, or batches from devices without the ``by`` label in
    those windows (their ``(none)`` cohort has no row)."""
    label_dims = [d for d in by if d.startswith("label:")]
    wanted = {name: _single_label(s) for name, s in selectors.items()}
    if len(label_dims) > 1 or any(w is None for w in wanted.values()):
        return None
    by_key = label_dims[0][len("label:") :] if label_dims else None
    keys = {w[0] for w in wanted.values() if w is not None} | ({by_key} if by_key else set())
    read = source.label_aggregates(model, version, keys, since=since, until=until)
    if read is None or not read.targets:
        return None
    if by_key is not None:
        batches: Counter[tuple[str, float]] = Counter()
        for target, agg in read.targets:
            batches[(target, agg.window_start)] += agg.batches
        for target, key, _value, agg in read.labels:
            if key == by_key:
                batches[(target, agg.window_start)] -= agg.batches
        if any(batches.values()):
            return None
    cohorts: dict[str, TelemetryAggregate] = {}
    of_targets = CohortNamer(by=by if by_key is None else ())  # "all", and the ``by`` cohorts without a label
    for target, agg in read.targets:
        for name in of_targets.names(_TargetCohort("", model, version, target)):
            cohorts.setdefault(name, TelemetryAggregate()).merge(agg)
    namer = CohortNamer(by=by, device_labels={"": {}}, include_all=False)
    for target, key, value, agg in read.labels:
        if key == by_key:
            namer.labels = {"": {key: value}}
            for name in namer.names(_TargetCohort("", model, version, target)):
                cohorts.setdefault(name, TelemetryAggregate()).merge(agg)
        for name, label in wanted.items():
            if label == (key, value):
                cohorts.setdefault(name, TelemetryAggregate()).merge(agg)
    return cohorts


def version_aggregate(
    source: MonitoringSource, model: str, version: str, *, since: float | None = None, until: float | None = None
) -> TelemetryAggregate:
    """Every device's telemetry of ``model:version`` in ``[since, until]`` merged into one aggregate: from the
    window aggregates where the source keeps them (whole windows, tens of rows), else from the batches."""
    if isinstance(source, AggregateSource):
        windows = source.target_aggregates(model, version, since=since, until=until)
        if windows:
            merged = TelemetryAggregate()
            for _target, aggregate in windows:
                merged.merge(aggregate)
            return merged
    return TelemetryAggregate.from_batches(source.telemetry(model, version, since=since, until=until).batches)


def device_counts_for(
    source: MonitoringSource, model: str, version: str, *, since: float | None = None, until: float | None = None
) -> list[DeviceCounts]:
    """Each device's requests and contract checks of ``model:version`` in ``[since, until]`` (whole windows
    when the source keeps the window aggregates)."""
    if isinstance(source, AggregateSource):
        return source.device_counts(model, version, since=since, until=until)
    return counts_from_batches(source.telemetry(model, version, since=since, until=until).batches)


def violation_report_for(
    source: MonitoringSource,
    model: str,
    version: str,
    *,
    by: Sequence[str] = ("target",),
    selectors: Mapping[str, str] | None = None,
    since: float | None = None,
    until: float | None = None,
) -> ViolationReport:
    """`violation_report` on what ``source`` holds (`device_counts_for`)."""
    return violation_report(
        device_counts_for(source, model, version, since=since, until=until),
        model=model,
        version=version,
        by=by,
        selectors=selectors,
        device_labels=source.device_labels(),
    )


def canary_report_for(source: MonitoringSource, rollout_id: str, *, config: CanaryConfig | None = None) -> CanaryReport:
    """`canary_report` for a rollout known to ``source``, with ``config`` or else the rollout's own gate settings;
    from the window aggregates when the source keeps them."""
    rollout = source.rollout(rollout_id)
    config = config or rollout.canary_config or CanaryConfig()
    if isinstance(source, AggregateSource):
        return source.canary_report(rollout, config)
    batches, skipped = source.telemetry(rollout.model, since=rollout.window_start, until=rollout.window_end)
    canary, baseline = split_rollout_batches(rollout, batches)
    report = canary_report(canary, baseline, candidate_version=rollout.candidate_version, config=config)
    return report.model_copy(update={"skipped_batches": skipped})


# -------------------------------------------------------------------------------------------- sources


class FileSource:
    """A JSON dump of telemetry: ``{"batches": [...], "reference": {...} | {"MODEL:VERSION": {...}},
    "labels": {device: {k: v}}, "rollouts": {id: RolloutView}}``; a JSONL file holds batches only."""

    def __init__(self, path: Path) -> None:
        text = path.read_text()
        data: dict[str, Any]
        if path.suffix == ".jsonl":
            data = {"batches": [json.loads(line) for line in text.splitlines() if line.strip()]}
        else:
            data = json.loads(text)
        self._batches: list[TelemetryBatch] = []
        self._skipped = 0
        for raw in data.get("batches", []):
            try:
                batch = TelemetryBatch.model_validate(raw)
                validate_batch(batch)
            except (ValidationError, ProtocolError):
                self._skipped += 1
                continue
            self._batches.append(batch)
        raw_ref = data.get("reference") or {}
        if "feature_sketches" in raw_ref or "schema_version" in raw_ref:
            self._references = {"*": ReferenceProfile.model_validate(raw_ref)}
        else:
            self._references = {k: ReferenceProfile.model_validate(v) for k, v in raw_ref.items()}
        self._labels = {d: dict(v) for d, v in data.get("labels", {}).items()}
        self._rollouts = {k: RolloutView.model_validate(v) for k, v in data.get("rollouts", {}).items()}

    def telemetry(
        self, model: str, version: str | None = None, *, since: float | None = None, until: float | None = None
    ) -> TelemetryRead:
        batches = [
            b
            for b in self._batches
            if b.model == model and (version is None or b.version == version) and batch_in_range(b, since, until)
        ]
        return TelemetryRead(batches, self._skipped)

    def reference(self, model: str, version: str) -> ReferenceProfile:
        ref = self._references.get(f"{model}:{version}") or self._references.get("*")
        if ref is None:
            raise NotFoundError(f"no drift reference for {model}:{version} in the telemetry file")
        return ref

    def device_labels(self) -> dict[str, dict[str, str]]:
        return self._labels

    def rollout(self, rollout_id: str) -> RolloutView:
        try:
            return self._rollouts[rollout_id]
        except KeyError:
            raise NotFoundError(f"rollout {rollout_id} is not in the telemetry file") from None
