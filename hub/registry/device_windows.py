"""Per device and aggregate window sums of telemetry (`TelemetryDeviceWindow`): written at ingestion, compacted later.

`device_window_partials` sums a write's batches per model, version, target, window and device (outside the
transaction); `insert_device_windows` adds them as new rows in the transaction that stores the batches, one
multi-row insert: no read, no lock, so writers (hub workers too) never wait on each other. Readers sum every
row of a device and window; `compact_device_windows` (with retention) merges the rows written since into one,
so there is about one row per device and window. Canary analysis, contract violation reports and policies read
these rows (`hub.registry.telemetry_windows`) instead of every batch.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from typing import Any, Final

import msgspec
from sqlalchemy import ColumnElement, String, any_, bindparam, delete, func, insert, select
from sqlalchemy.dialects.postgresql import ARRAY

from fleet.errors import ProtocolError
from fleet.wire.fast_telemetry import FastHistogram, FastTelemetryBatch
from fleet.wire.messages import Histogram, TelemetryBatch
from fleet.wire.sketches import CONFIDENCE_BUCKETS, LATENCY_BUCKETS_MS
from hub.registry.db import Database
from hub.registry.telemetry_tables import TelemetryDeviceWindow, rollup_window_start

__all__ = [
    "DeviceWindowKey",
    "DeviceWindowSums",
    "compact_device_windows",
    "device_window_partials",
    "insert_device_windows",
]

DeviceWindowKey = tuple[str, str, str, float, str]
"""Model, version, target, window start and device id: what a `TelemetryDeviceWindow` row sums."""

_TABLE = TelemetryDeviceWindow.__table__  # type: ignore[attr-defined]
_KEY_COLUMNS = ("model", "version", "target", "window_start", "device_id")


_LATENCY_EDGES = list(LATENCY_BUCKETS_MS)
_CONFIDENCE_EDGES = list(CONFIDENCE_BUCKETS)


class _Counts:
    """A histogram on the standard edges, summed as plain lists (thousands are summed per write). Stored as
    ``[counts, total]``: `fleet.telemetry.validate_batch` holds every batch to the standard edges, so they
    need not be stored with each row (a change of standard edges is a schema change, with a migration)."""

    __slots__ = ("counts", "edges", "total")

    def __init__(self, edges: list[float]) -> None:
        self.edges = edges
        self.counts: list[int] = []
        self.total = 0.0

    def add(self, counts: list[int], total: float) -> None:
        """Sum in the counts and total of a histogram on these edges."""
        if not self.counts:
            self.counts = list(counts)
        else:
            self.counts = [a + b for a, b in zip(self.counts, counts, strict=True)]
        self.total += total

    def add_histogram(self, hist: Histogram | FastHistogram) -> None:
        """Sum in a histogram; `ProtocolError` when it is not on these edges."""
        if hist.edges != self.edges or len(hist.counts) != len(self.edges) + 1:
            raise ProtocolError("histogram is not on the standard edges; cannot sum it")
        self.add(hist.counts, hist.total)

    def stored(self) -> list[Any]:
        """``[counts, total]`` (empty when nothing was summed)."""
        return [self.counts, self.total] if self.counts else []

    def histogram(self) -> Histogram | None:
        """The `Histogram` (None when nothing was summed)."""
        return Histogram(edges=self.edges, counts=self.counts, total=self.total) if self.counts else None


class DeviceWindowSums:
    """One device's batches in one window, summed: what canary analysis needs of a device."""

    __slots__ = (
        "batches",
        "confidence",
        "contract_rows",
        "contract_violations",
        "errors",
        "first_end",
        "first_start",
        "last_end",
        "latency_ms",
        "predictions",
        "requests",
        "shadow",
    )

    def __init__(self) -> None:
        self.batches = self.requests = self.errors = 0
        self.latency_ms = _Counts(_LATENCY_EDGES)
        self.confidence = _Counts(_CONFIDENCE_EDGES)
        self.predictions: dict[str, int] = {}
        self.shadow: dict[str, list[int]] = {}
        """``[compared, agreed]`` per shadowed candidate version."""
        self.contract_rows = 0
        self.contract_violations: dict[str, int] = {}
        """Input rows checked against the data contract, and rows breaking each rule."""
        self.first_start = self.first_end = math.inf
        self.last_end = -math.inf

    def add(self, batch: TelemetryBatch | FastTelemetryBatch) -> None:
        """Sum one batch in (one that passed `fleet.telemetry.validate_batch`)."""
        self.batches += 1
        self.requests += batch.requests
        self.errors += batch.errors
        self.latency_ms.add_histogram(batch.latency_ms)
        self.confidence.add_histogram(batch.confidence)
        self._add_predictions(batch.predictions)
        if batch.shadow is not None:
            self._add_shadow(batch.shadow.candidate_version, batch.shadow.compared, batch.shadow.agreed)
        if batch.contract_rows:  # violations without checked rows count nowhere (as in violation reports)
            self._add_contract(batch.contract_rows, batch.contract_violations)
        self.first_start = min(self.first_start, batch.window_start)
        self.first_end = min(self.first_end, batch.window_end)
        self.last_end = max(self.last_end, batch.window_end)

    def add_row(self, row: Any) -> None:
        """Sum in a `TelemetryDeviceWindow` row (or a result row with its columns)."""
        self.batches += row.batches
        self.requests += row.requests
        self.errors += row.errors
        histograms = row.histograms
        for mine, stored in ((self.latency_ms, histograms["latency_ms"]), (self.confidence, histograms["confidence"])):
            if stored:
                mine.add(*stored)
        self._add_predictions(histograms["predictions"])
        for candidate, (compared, agreed) in histograms["shadow"].items():
            self._add_shadow(candidate, compared, agreed)
        contract = histograms.get("contract")  # absent: nothing checked, or a row from before contract counts
        if contract:
            self._add_contract(*contract)
        self.first_start = min(self.first_start, row.first_start)
        self.first_end = min(self.first_end, row.first_end)
        self.last_end = max(self.last_end, row.last_end)

    def _add_predictions(self, predictions: Mapping[str, int]) -> None:
        mine = self.predictions
        if not mine:  # the first batch of most rows: a copy
            mine.update(predictions)
            return
        for label, count in predictions.items():
            mine[label] = mine.get(label, 0) + count

    def _add_shadow(self, candidate: str, compared: int, agreed: int) -> None:
        counts = self.shadow.setdefault(candidate, [0, 0])
        counts[0] += compared
        counts[1] += agreed

    def _add_contract(self, rows: int, violations: Mapping[str, int]) -> None:
        self.contract_rows += rows
        mine = self.contract_violations
        for rule, count in violations.items():
            mine[rule] = mine.get(rule, 0) + count

    def columns(self) -> dict[str, Any]:
        """The sums as `TelemetryDeviceWindow` column values."""
        return {
            "batches": self.batches,
            "requests": self.requests,
            "errors": self.errors,
            "first_start": self.first_start,
            "first_end": self.first_end,
            "last_end": self.last_end,
            "histograms": self.histograms(),
        }

    def histograms(self) -> dict[str, Any]:
        """The ``histograms`` column's value."""
        histograms: dict[str, Any] = {
            "latency_ms": self.latency_ms.stored(),
            "confidence": self.confidence.stored(),
            "predictions": self.predictions,
            "shadow": self.shadow,
        }
        if self.contract_rows:  # most models have no contract: no bytes for it in their rows
            histograms["contract"] = [self.contract_rows, self.contract_violations]
        return histograms


def device_window_partials(
    batches: Iterable[TelemetryBatch | FastTelemetryBatch], window_s: float
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


def _row(key: DeviceWindowKey, sums: DeviceWindowSums, *, compacted: bool) -> dict[str, Any]:
    return dict(zip(_KEY_COLUMNS, key, strict=True)) | sums.columns() | {"compacted": compacted}


_JSON: Final = msgspec.json.Encoder()
_INSERT_COLUMNS: Final = (
    *_KEY_COLUMNS, "batches", "requests", "errors", "first_start", "first_end", "last_end", "histograms", "compacted",
)  # fmt: skip


def _values(key: DeviceWindowKey, sums: DeviceWindowSums) -> tuple[Any, ...]:
    """A new (not compacted) row in `_INSERT_COLUMNS` order, its histograms already JSON: msgspec's, several
    times faster than the column type's ``json.dumps``, which only the two totals could tell apart (msgspec
    writes infinity as null, so a non-finite total takes ``json.dumps``)."""
    histograms = sums.histograms()
    finite = math.isfinite(sums.latency_ms.total) and math.isfinite(sums.confidence.total)
    return (
        *key,
        sums.batches,
        sums.requests,
        sums.errors,
        sums.first_start,
        sums.first_end,
        sums.last_end,
        _JSON.encode(histograms).decode() if finite else json.dumps(histograms),
        False,
    )


def insert_device_windows(session: Any, partials: Mapping[DeviceWindowKey, DeviceWindowSums]) -> None:
    """Add ``partials`` as new rows in the session's transaction: one ``COPY`` on PostgreSQL (a row there costs
    a fraction of an ``INSERT``'s), one executemany of a plain ``INSERT`` elsewhere; rows go to the driver as
    tuples (thousands a second: SQLAlchemy's per-row parameter processing cost more than the database)."""
    if not partials:
        return
    rows = [_values(key, partials[key]) for key in sorted(partials)]
    connection = session.connection()
    names = ", ".join(_INSERT_COLUMNS)
    if connection.dialect.name != "postgresql":
        marks = ", ".join("?" for _ in _INSERT_COLUMNS)
        connection.exec_driver_sql(f"INSERT INTO {_TABLE.name} ({names}) VALUES ({marks})", rows)
        return
    cursor = connection.connection.driver_connection.cursor()
    with cursor.copy(f"COPY {_TABLE.name} ({names}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)


def _keys_match(keys: list[DeviceWindowKey], *, postgresql: bool) -> ColumnElement[bool]:
    """Rows of ``keys``, and maybe a few more of the same devices (the caller keeps only its keys). The
    device ids go as one array on PostgreSQL: thousands of parameters cost more to prepare than to run."""
    c = _TABLE.c
    devices = sorted({key[4] for key in keys})
    device: ColumnElement[bool]
    if postgresql:
        device = c.device_id == any_(bindparam("device_ids", devices, type_=ARRAY(String)))
    else:
        device = c.device_id.in_(devices)
    return (
        c.model.in_(sorted({key[0] for key in keys}))
        & c.version.in_(sorted({key[1] for key in keys}))
        & c.target.in_(sorted({key[2] for key in keys}))
        & c.window_start.in_(sorted({key[3] for key in keys}))
        & device
    )


class _CompactionConflict(Exception):
    """Another worker merged some of the rows this transaction read (it is rolled back and read again)."""


def compact_device_windows(database: Database, *, chunk: int = 1000, attempts: int = 5) -> int:
    """Merge the rows of each device and window that has rows written since the last compaction into one;
    return how many rows went. A chunk of devices and windows per transaction, which deletes the rows it
    merges and is rolled back when another worker deleted some first (SQLite reads without locking; on
    PostgreSQL rows another worker holds are skipped), so no row is merged twice; after ``attempts`` such
    conflicts in a row the rest is left to the next compaction."""
    c = _TABLE.c
    removed = conflicts = 0
    with database.session() as session:  # rows written from now on wait for the next compaction
        top = session.connection().execute(select(func.max(c.id))).scalar()
    while top is not None:
        try:
            with database.session() as session:
                count = _compact_chunk(session.connection(), top, chunk)
        except _CompactionConflict:
            conflicts += 1
            if conflicts >= attempts:
                return removed
            continue
        if count is None:
            return removed
        removed, conflicts = removed + count, 0
    return removed


def _compact_chunk(connection: Any, top: int, chunk: int) -> int | None:
    """Merge the rows of up to ``chunk`` devices and windows with rows up to id ``top`` not yet merged; return
    how many rows went, None when there is nothing (left) to merge."""
    c = _TABLE.c
    pending = select(*(c[name] for name in _KEY_COLUMNS)).where(c.compacted.is_(False), c.id <= top).distinct()
    keys = sorted({tuple(row) for row in connection.execute(pending.limit(chunk))})
    if not keys:
        return None
    wanted = set(keys)
    query = (
        select(_TABLE)
        .where(_keys_match(keys, postgresql=connection.dialect.name == "postgresql"))
        .order_by(c.id)
        .with_for_update(skip_locked=True)
    )
    merged: dict[DeviceWindowKey, DeviceWindowSums] = {}
    ids = []
    for row in connection.execute(query):
        key = (row.model, row.version, row.target, row.window_start, row.device_id)
        if key in wanted:
            merged.setdefault(key, DeviceWindowSums()).add_row(row)
            ids.append(row.id)
    if not ids:  # all held by another worker's compaction
        return None
    if connection.execute(delete(_TABLE).where(c.id.in_(ids))).rowcount != len(ids):
        raise _CompactionConflict
    connection.execute(insert(_TABLE), [_row(key, merged[key], compacted=True) for key in sorted(merged)])
    return len(ids) - len(merged)
