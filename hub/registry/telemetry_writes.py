"""Telemetry writes prepared outside their transaction.

`prepare_telemetry` does a write's CPU work (the `TelemetryRecord` rows, the window aggregates per cohort, the
per-device window sums) before the transaction starts, so that a writer can prepare its next write while the
database works on the current one (`hub.monitoring.ingest.TelemetryIngestor` does). The transaction itself is
`Registry.store_prepared`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from fleet.telemetry import TelemetryAggregate
from fleet.telemetry_blocks import CheckedBatch, aggregate_checked
from fleet.wire.fast_telemetry import FastTelemetryBatch, stored_json
from hub.registry.bulk import RecordRow
from hub.registry.device_windows import DeviceWindowKey, DeviceWindowSums, device_window_partials
from hub.registry.telemetry_tables import label_cohort, pack_sketches, rollup_window_start
from hub.registry.window_folds import WindowKey

__all__ = ["PreparedTelemetry", "prepare_telemetry", "window_partials"]

Labels = Mapping[str, Mapping[str, str]]


@dataclass(frozen=True)
class PreparedTelemetry:
    """A write's batches (the first of each id) with their rows and aggregates, ready for one transaction."""

    batches: dict[str, CheckedBatch]
    rows: dict[str, RecordRow]
    partials: dict[WindowKey, TelemetryAggregate]
    per_device: dict[DeviceWindowKey, DeviceWindowSums]
    labels: Labels
    window_s: float
    shard: str

    def without(self, stored: set[str]) -> PreparedTelemetry:
        """The same write less the batch ids in ``stored`` (another writer stored them first): its aggregates
        computed again from the rest."""
        fresh = {batch_id: c for batch_id, c in self.batches.items() if batch_id not in stored}
        rows = {batch_id: self.rows[batch_id] for batch_id in fresh}
        return _aggregated(fresh, rows, window_s=self.window_s, shard=self.shard, labels=self.labels)


def prepare_telemetry(
    batches: Sequence[CheckedBatch], *, window_s: float, shard: str, labels: Labels
) -> PreparedTelemetry:
    """``batches`` ready to store in windows of ``window_s`` (this writer's ``shard`` of the aggregates), devices
    labelled as ``labels`` says. A non-finite time window raises `ValueError`."""
    unique = {c.batch.batch_id: c for c in batches}
    rows = {batch_id: record_row(c.batch) for batch_id, c in unique.items()}
    return _aggregated(unique, rows, window_s=window_s, shard=shard, labels=labels)


def _aggregated(
    batches: dict[str, CheckedBatch], rows: dict[str, RecordRow], *, window_s: float, shard: str, labels: Labels
) -> PreparedTelemetry:
    """A write of ``batches`` and their ``rows`` with its window aggregates and per-device sums computed."""
    return PreparedTelemetry(
        batches=batches,
        rows=rows,
        partials=window_partials(list(batches.values()), window_s, labels),
        per_device=device_window_partials((c.batch for c in batches.values()), window_s),
        labels=labels,
        window_s=window_s,
        shard=shard,
    )


def window_partials(
    batches: Sequence[CheckedBatch], window_s: float, labels: Labels
) -> dict[WindowKey, TelemetryAggregate]:
    """``batches`` merged per model, version, target and aggregate window (cohort ""), and those of labelled
    devices also per label of their device (cohort ``key=value``).

    Sketches are built in bulk once per batch: per window and set of device labels (one set, no labels, for an
    unlabelled fleet: its partial is the window's), whose partials are merged into the window's and the labels'."""
    groups: dict[tuple[str, str, str, float, tuple[tuple[str, str], ...]], list[CheckedBatch]] = {}
    for checked in batches:
        b = checked.batch
        mine = labels.get(b.device_id)
        label_set = tuple(sorted(mine.items())) if mine else ()
        groups.setdefault(
            (b.model, b.version, b.target, rollup_window_start(b.window_start, window_s), label_set), []
        ).append(checked)
    out: dict[WindowKey, TelemetryAggregate] = {}
    shared: set[WindowKey] = set()  # keys whose partial is still one label set's (copied before a merge)
    for (model, version, target, start, label_set), members in groups.items():
        partial = aggregate_checked(members)
        keys = [(model, version, target, start, "")]
        keys += [(model, version, target, start, label_cohort(key, value)) for key, value in label_set]
        for key in keys:
            mine_now = out.get(key)
            if mine_now is None:  # partials are only read by the folds: one may serve several keys
                out[key] = partial
                shared.add(key)
                continue
            if key in shared:
                merged = out[key] = TelemetryAggregate(k=mine_now.k)
                merged.merge(mine_now)
                shared.discard(key)
            out[key].merge(partial)
    return out


def record_row(batch: FastTelemetryBatch) -> RecordRow:
    """The `TelemetryRecord` columns of a batch (`RECORD_COLUMNS`), its sketches as raw bytes beside the JSON of
    the rest.

    A non-finite time window raises `ValueError` (the decoder refuses them; PostgreSQL would store it)."""
    if not (math.isfinite(batch.window_start) and math.isfinite(batch.window_end)):
        raise ValueError(f"batch {batch.batch_id} has a non-finite time window")
    return (
        batch.batch_id,
        batch.device_id,
        batch.target,
        batch.model,
        batch.version,
        batch.window_start,
        batch.window_end,
        batch.requests,
        batch.errors,
        stored_json(batch),
        pack_sketches(batch.feature_sketches),
        time.time(),
    )
