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

from sqlalchemy import ColumnElement, Select, String, any_, bindparam, insert, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session

from fleet.errors import ProtocolError
from fleet.wire.messages import Histogram, TelemetryBatch
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
_KEYS_PER_QUERY = 1000  # SQLite: one parameter per device, well inside its limit


class _Counts:
    """A histogram's counts and total on fixed edges, summed as plain lists: thousands are summed per write,
    and every histogram here has the standard edges (batches passed `fleet.telemetry.validate_batch`)."""

    __slots__ = ("counts", "edges", "total")

    def __init__(self) -> None:
        self.edges: list[float] = []
        self.counts: list[int] = []
        self.total = 0.0

    def add(self, edges: list[float], counts: list[int], total: float) -> None:
        """Sum in a histogram; `ProtocolError` when its edges differ from the ones summed so far."""
        if not self.edges:
            self.edges, self.counts = list(edges), list(counts)
        elif edges == self.edges and len(counts) == len(self.counts):
            self.counts = [a + b for a, b in zip(self.counts, counts, strict=True)]
        else:
            raise ProtocolError("histogram edges differ from the ones summed so far; cannot merge")
        self.total += total

    def stored(self) -> dict[str, Any]:
        """The `Histogram` as JSON (empty when nothing was summed)."""
        if not self.edges:
            return {}
        return {"schema_version": 1, "edges": self.edges, "counts": self.counts, "total": self.total}

    def histogram(self) -> Histogram | None:
        """The `Histogram` (None when nothing was summed)."""
        return Histogram(edges=self.edges, counts=self.counts, total=self.total) if self.edges else None


@dataclass
class DeviceWindowSums:
    """One device's batches in one window, summed: what canary analysis needs of a device."""

    batches: int = 0
    requests: int = 0
    errors: int = 0
    latency_ms: _Counts = field(default_factory=_Counts)
    confidence: _Counts = field(default_factory=_Counts)
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
        for mine, hist in ((self.latency_ms, batch.latency_ms), (self.confidence, batch.confidence)):
            mine.add(hist.edges, hist.counts, hist.total)
        self.predictions.update(batch.predictions)
        if batch.shadow is not None:
            self._add_shadow(batch.shadow.candidate_version, batch.shadow.compared, batch.shadow.agreed)
        self.first_start = min(self.first_start, batch.window_start)
        self.first_end = min(self.first_end, batch.window_end)
        self.last_end = max(self.last_end, batch.window_end)

    def add_row(self, row: Any) -> None:
        """Sum in a `TelemetryDeviceWindow` row (or a result row with its columns), or another sums."""
        self.batches += row.batches
        self.requests += row.requests
        self.errors += row.errors
        for mine, stored in ((self.latency_ms, row.latency_ms), (self.confidence, row.confidence)):
            if isinstance(stored, _Counts):
                if stored.edges:
                    mine.add(stored.edges, stored.counts, stored.total)
            elif stored:
                mine.add(stored["edges"], stored["counts"], stored["total"])
        self.predictions.update(row.predictions or {})
        for candidate, (compared, agreed) in (row.shadow or {}).items():
            self._add_shadow(candidate, compared, agreed)
        self.first_start = min(self.first_start, row.first_start)
        self.first_end = min(self.first_end, row.first_end)
        self.last_end = max(self.last_end, row.last_end)

    def _add_shadow(self, candidate: str, compared: int, agreed: int) -> None:
        counts = self.shadow.setdefault(candidate, [0, 0])
        counts[0] += compared
        counts[1] += agreed

    def columns(self) -> dict[str, Any]:
        """The sums as `TelemetryDeviceWindow` column values."""
        return {
            "batches": self.batches,
            "requests": self.requests,
            "errors": self.errors,
            "first_start": self.first_start,
            "first_end": self.first_end,
            "last_end": self.last_end,
            "latency_ms": self.latency_ms.stored(),
            "confidence": self.confidence.stored(),
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


def _locking_read(keys: list[DeviceWindowKey], *, postgresql: bool) -> Select[Any]:
    """The rows of ``keys`` (and maybe a few more of the same devices), locked in id order. The device ids go as
    one array on PostgreSQL: a statement with thousands of parameters costs more to prepare than to run."""
    c = _TABLE.c
    devices = sorted({key[4] for key in keys})
    matches_device: ColumnElement[bool]
    if postgresql:
        matches_device = c.device_id == any_(bindparam("device_ids", devices, type_=ARRAY(String)))
    else:
        matches_device = c.device_id.in_(devices)
    return (
        select(_TABLE)
        .where(
            c.model.in_(sorted({key[0] for key in keys})),
            c.version.in_(sorted({key[1] for key in keys})),
            c.target.in_(sorted({key[2] for key in keys})),
            c.window_start.in_(sorted({key[3] for key in keys})),
            matches_device,
        )
        .order_by(c.id)
        .with_for_update()
    )


def fold_device_windows(session: Session, partials: Mapping[DeviceWindowKey, DeviceWindowSums]) -> Counter[WindowKey]:
    """Add ``partials`` to their rows and insert the rows that are new; return how many new devices each
    window got. Existing rows are locked in id order, so concurrent writers never deadlock on them; a row
    another writer inserted meanwhile fails the insert (`IntegrityError`: the caller retries)."""
    new: Counter[WindowKey] = Counter()
    if not partials:
        return new
    connection = session.connection()
    keys = sorted(partials)
    found: dict[DeviceWindowKey, Any] = {}
    for first in range(0, len(keys), _KEYS_PER_QUERY):
        chunk = keys[first : first + _KEYS_PER_QUERY]
        for stored in connection.execute(_locking_read(chunk, postgresql=connection.dialect.name == "postgresql")):
            key = (stored.model, stored.version, stored.target, stored.window_start, stored.device_id)
            if key in partials:  # the read may match a few more rows of these devices
                found[key] = stored
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
        sums.add_row(partials[key])
        updates.append(dict(zip(_KEY_COLUMNS, key, strict=True)) | sums.columns())
    if updates:  # the rows are locked and the values final: one statement writes them all
        dialect_insert = postgresql_insert if connection.dialect.name == "postgresql" else sqlite_insert
        upsert = dialect_insert(_TABLE)
        connection.execute(
            upsert.on_conflict_do_update(
                index_elements=list(_KEY_COLUMNS), set_={name: upsert.excluded[name] for name in _SUM_COLUMNS}
            ),
            updates,
        )
    if inserts:
        connection.execute(insert(_TABLE), inserts)
    return new
