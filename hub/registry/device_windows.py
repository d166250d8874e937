"""Per device and aggregate window sums of telemetry (`TelemetryDeviceWindow`), folded at ingestion.

`device_window_partials` sums a write's batches per model, version, target, window and device (outside the
transaction); `fold_device_windows` adds them to their rows in the transaction that stores the batches: one
locking read, one bulk update, one multi-row insert, whatever the number of devices. Canary analysis reads
these rows (`hub.registry.telemetry_windows`), one per device and window instead of every batch.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import bindparam, insert, select, tuple_, update
from sqlmodel import Session

from fleet.wire.messages import Histogram, TelemetryBatch
from fleet.wire.sketches import HistogramAccumulator
from hub.registry.telemetry_tables import TelemetryDeviceWindow, rollup_window_start

__all__ = ["DeviceWindowKey", "DeviceWindowSums", "WindowKey", "device_window_partials", "fold_device_windows"]

WindowKey = tuple[str, str, str, float]
"""Model, version, target and window start: the key of a `TelemetryWindowAggregate` row."""
DeviceWindowKey = tuple[str, str, str, float, str]
"""A `WindowKey` and a device id: the key of a `TelemetryDeviceWindow` row."""

_TABLE = TelemetryDeviceWindow.__table__  # type: ignore[attr-defined]
_KEY_COLUMNS = ("model", "version", "target", "window_start", "device_id")
_SUM_COLUMNS = (
    "batches",
    "requests",
    "errors",
    "first_start",
    "first_end",
    "last_end",
    "latency_ms",
    "confidence",
    "predictions",
    "shadow",
)
_KEYS_PER_QUERY = 1000  # 5 parameters each: well inside SQLite's and PostgreSQL's limits


def _histogram_dict(acc: HistogramAccumulator) -> dict[str, Any]:
    return acc.to_histogram().model_dump(mode="json") if acc.edges else {}


@dataclass
class DeviceWindowSums:
    """One device's batches in one window, summed: what canary analysis needs of a device."""

    batches: int = 0
    requests: int = 0
    errors: int = 0
    latency_ms: HistogramAccumulator = field(default_factory=HistogramAccumulator)
    confidence: HistogramAccumulator = field(default_factory=HistogramAccumulator)
    predictions: Counter[str] = field(default_factory=Counter)
    shadow: dict[str, list[int]] = field(default_factory=dict)
    """``[compared, agreed]`` per shadowed candidate version."""
    first_start: float = math.inf
    first_end: float = math.inf
    last_end: float = -math.inf

    def add(self, batch: TelemetryBatch) -> None:
        """Sum one batch in (it passed `fleet.telemetry.validate_batch`: its histograms have the standard edges)."""
        self.batches += 1
        self.requests += batch.requests
        self.errors += batch.errors
        self.latency_ms.add(batch.latency_ms)
        self.confidence.add(batch.confidence)
        self.predictions.update(batch.predictions)
        if batch.shadow is not None:
            counts = self.shadow.setdefault(batch.shadow.candidate_version, [0, 0])
            counts[0] += batch.shadow.compared
            counts[1] += batch.shadow.agreed
        self.first_start = min(self.first_start, batch.window_start)
        self.first_end = min(self.first_end, batch.window_end)
        self.last_end = max(self.last_end, batch.window_end)

    def merge(self, other: DeviceWindowSums) -> None:
        """Sum another device window in."""
        self.batches += other.batches
        self.requests += other.requests
        self.errors += other.errors
        self.latency_ms.merge(other.latency_ms)
        self.confidence.merge(other.confidence)
        self.predictions.update(other.predictions)
        for candidate, (compared, agreed) in other.shadow.items():
            counts = self.shadow.setdefault(candidate, [0, 0])
            counts[0] += compared
            counts[1] += agreed
        self.first_start = min(self.first_start, other.first_start)
        self.first_end = min(self.first_end, other.first_end)
        self.last_end = max(self.last_end, other.last_end)

    def add_row(self, row: Any) -> None:
        """Sum in a `TelemetryDeviceWindow` row (or a result row with its columns)."""
        self.batches += row.batches
        self.requests += row.requests
        self.errors += row.errors
        for acc, stored in ((self.latency_ms, row.latency_ms), (self.confidence, row.confidence)):
            if stored:  # written by `columns`: a valid histogram, so not validated again
                acc.add(Histogram.model_construct(**stored))
        self.predictions.update(row.predictions or {})
        for candidate, (compared, agreed) in (row.shadow or {}).items():
            counts = self.shadow.setdefault(candidate, [0, 0])
            counts[0] += compared
            counts[1] += agreed
        self.first_start = min(self.first_start, row.first_start)
        self.first_end = min(self.first_end, row.first_end)
        self.last_end = max(self.last_end, row.last_end)

    def columns(self) -> dict[str, Any]:
        """The sums as `TelemetryDeviceWindow` column values."""
        return {
            "batches": self.batches,
            "requests": self.requests,
            "errors": self.errors,
            "first_start": self.first_start,
            "first_end": self.first_end,
            "last_end": self.last_end,
            "latency_ms": _histogram_dict(self.latency_ms),
            "confidence": _histogram_dict(self.confidence),
            "predictions": dict(self.predictions),
            "shadow": self.shadow,
        }


def device_window_partials(
    batches: Iterable[TelemetryBatch], window_s: float
) -> dict[DeviceWindowKey, DeviceWindowSums]:
    """``batches`` summed per model, version, target, aggregate window of ``window_s`` and device."""
    out: dict[DeviceWindowKey, DeviceWindowSums] = {}
    for batch in batches:
        start = rollup_window_start(batch.window_start, window_s)
        key = (batch.model, batch.version, batch.target, start, batch.device_id)
        sums = out.get(key)
        if sums is None:
            sums = out[key] = DeviceWindowSums()
        sums.add(batch)
    return out


def fold_device_windows(session: Session, partials: Mapping[DeviceWindowKey, DeviceWindowSums]) -> Counter[WindowKey]:
    """Add ``partials`` to their rows and insert the rows that are new; return how many new devices each
    window got. Existing rows are locked in id order, so concurrent writers never deadlock on them; a row
    another writer inserted meanwhile fails the insert (`IntegrityError`: the caller retries)."""
    new: Counter[WindowKey] = Counter()
    if not partials:
        return new
    connection = session.connection()
    keys = sorted(partials)
    key_columns = tuple_(*(_TABLE.c[name] for name in _KEY_COLUMNS))
    found: dict[DeviceWindowKey, Any] = {}
    for first in range(0, len(keys), _KEYS_PER_QUERY):
        query = (
            select(_TABLE)
            .where(key_columns.in_(keys[first : first + _KEYS_PER_QUERY]))
            .order_by(_TABLE.c.id)
            .with_for_update()
        )
        for stored in connection.execute(query):
            found[(stored.model, stored.version, stored.target, stored.window_start, stored.device_id)] = stored
    updates: list[dict[str, Any]] = []
    inserts: list[dict[str, Any]] = []
    for key in keys:
        row = found.get(key)
        if row is None:
            inserts.append(dict(zip(_KEY_COLUMNS, key, strict=True)) | partials[key].columns())
            new[key[:4]] += 1
            continue
        sums = DeviceWindowSums()
        sums.add_row(row)
        sums.merge(partials[key])
        updates.append({"row_id": row.id} | {f"new_{name}": value for name, value in sums.columns().items()})
    if updates:
        statement = (
            update(_TABLE)
            .where(_TABLE.c.id == bindparam("row_id"))
            .values({name: bindparam(f"new_{name}") for name in _SUM_COLUMNS})
        )
        connection.execute(statement, updates)
    if inserts:
        connection.execute(insert(_TABLE), inserts)
    return new
