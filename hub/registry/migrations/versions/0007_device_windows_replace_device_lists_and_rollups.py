"""telemetry_device_window (per device and aggregate window sums, what canary analysis reads; the devices of a
window) replaces the device id list in every telemetry_window_aggregate row, and telemetry_rollup is merged
into the window aggregates and dropped.

Existing data is carried over:
- device rows are summed from the raw batches still stored; a device named in an aggregate's or a rollup's
  device list whose batches were pruned gets a row that only records it contributed (``batches`` 0);
- raw batches stored before revision 0006 (``sketches`` NULL: never aggregated) are merged into their
  window aggregates, so every stored batch is aggregated;
- a rollup whose window has no aggregate row becomes one; a rollup whose window has one (the window spans the
  upgrade to 0006, whose aggregates also hold the batches pruned since) is left out: which of its batches the
  aggregate already holds is not recorded, and a batch must not count twice.

Aggregate windows keep the length the stored rows have (``window_s``; 3600 s when there are none). The
downgrade restores the device lists from the device rows and an empty telemetry_rollup.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 00:00:00.000000
"""

from __future__ import annotations

import base64
import math
import struct
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from datasketches import kll_floats_sketch
from pydantic import ValidationError

from fleet.errors import ProtocolError
from fleet.telemetry import TelemetryAggregate, validate_batch
from fleet.wire.messages import Histogram, TelemetryBatch
from fleet.wire.sketches import HistogramAccumulator, deserialize_sketch, new_sketch

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ENTRY = struct.Struct("<HI")  # the packed sketch format of revision 0006
Key = tuple[str, str, str, float]

aggregate_table = sa.table(
    "telemetry_window_aggregate",
    sa.column("id", sa.Integer),
    sa.column("model", sa.String),
    sa.column("version", sa.String),
    sa.column("target", sa.String),
    sa.column("window_start", sa.Float),
    sa.column("window_s", sa.Float),
    sa.column("window_end", sa.Float),
    sa.column("batches", sa.Integer),
    sa.column("requests", sa.Integer),
    sa.column("errors", sa.Integer),
    sa.column("offloaded", sa.Integer),
    sa.column("shadow_compared", sa.Integer),
    sa.column("shadow_agreed", sa.Integer),
    sa.column("latency_ms", sa.JSON),
    sa.column("confidence", sa.JSON),
    sa.column("shadow_latency_ms", sa.JSON),
    sa.column("predictions", sa.JSON),
    sa.column("sketches", sa.LargeBinary),
    sa.column("devices", sa.JSON),
    sa.column("updated_at", sa.Float),
)
rollup_table = sa.table(
    "telemetry_rollup",
    sa.column("model", sa.String),
    sa.column("version", sa.String),
    sa.column("target", sa.String),
    sa.column("window_start", sa.Float),
    sa.column("window_s", sa.Float),
    sa.column("batches", sa.Integer),
    sa.column("requests", sa.Integer),
    sa.column("errors", sa.Integer),
    sa.column("offloaded", sa.Integer),
    sa.column("shadow_compared", sa.Integer),
    sa.column("shadow_agreed", sa.Integer),
    sa.column("latency_ms", sa.JSON),
    sa.column("confidence", sa.JSON),
    sa.column("predictions", sa.JSON),
    sa.column("feature_sketches", sa.JSON),
    sa.column("devices", sa.JSON),
    sa.column("updated_at", sa.Float),
)
record_table = sa.table(
    "telemetryrecord",
    sa.column("window_end", sa.Float),
    sa.column("payload", sa.JSON),
    sa.column("sketches", sa.LargeBinary),
)
device_table = sa.table(
    "telemetry_device_window",
    *(sa.column(name, sa.String) for name in ("model", "version", "target", "device_id")),
    *(sa.column(name, sa.Float) for name in ("window_start", "first_start", "first_end", "last_end")),
    *(sa.column(name, sa.Integer) for name in ("batches", "requests", "errors")),
    sa.column("histograms", sa.JSON),
    sa.column("compacted", sa.Boolean),
)


def _unpack(packed: bytes) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    at = 0
    while at < len(packed):
        if at + _ENTRY.size > len(packed):
            raise ProtocolError("truncated packed sketches")
        name_len, raw_len = _ENTRY.unpack_from(packed, at)
        at += _ENTRY.size
        end = at + name_len + raw_len
        if end > len(packed):
            raise ProtocolError("truncated packed sketches")
        out[packed[at : at + name_len].decode()] = packed[at + name_len : end]
        at = end
    return out


def _pack(sketches: Mapping[str, bytes]) -> bytes:
    parts: list[bytes] = []
    for name, raw in sketches.items():
        encoded = name.encode()
        parts += [_ENTRY.pack(len(encoded), len(raw)), encoded, raw]
    return b"".join(parts)


def _histogram_dict(acc: HistogramAccumulator) -> dict[str, Any]:
    return acc.to_histogram().model_dump(mode="json") if acc.edges else {}


def _counts_and_total(acc: HistogramAccumulator) -> list[Any]:
    hist = acc.to_histogram() if acc.edges else None
    return [hist.counts, hist.total] if hist is not None else []


def _add_histogram(acc: HistogramAccumulator, stored: Mapping[str, Any] | None) -> None:
    if stored:
        acc.add(Histogram.model_validate(stored))


class _DeviceSums:
    """One device's batches in one window, summed as revision 0007's telemetry_device_window stores them."""

    def __init__(self) -> None:
        self.batches = self.requests = self.errors = 0
        self.latency, self.confidence = HistogramAccumulator(), HistogramAccumulator()
        self.predictions: Counter[str] = Counter()
        self.shadow: dict[str, list[int]] = {}
        self.first_start, self.first_end, self.last_end = math.inf, math.inf, -math.inf

    def add(self, batch: TelemetryBatch) -> None:
        self.batches += 1
        self.requests += batch.requests
        self.errors += batch.errors
        self.latency.add(batch.latency_ms)
        self.confidence.add(batch.confidence)
        self.predictions.update(batch.predictions)
        if batch.shadow is not None:
            counts = self.shadow.setdefault(batch.shadow.candidate_version, [0, 0])
            counts[0] += batch.shadow.compared
            counts[1] += batch.shadow.agreed
        self.first_start = min(self.first_start, batch.window_start)
        self.first_end = min(self.first_end, batch.window_end)
        self.last_end = max(self.last_end, batch.window_end)

    def row(self, key: Key, device_id: str) -> dict[str, Any]:
        model, version, target, start = key
        return {
            "model": model,
            "version": version,
            "target": target,
            "window_start": start,
            "device_id": device_id,
            "batches": self.batches,
            "requests": self.requests,
            "errors": self.errors,
            "first_start": self.first_start,
            "first_end": self.first_end,
            "last_end": self.last_end,
            "histograms": {  # on the standard edges (the batches passed validate_batch): [counts, total]
                "latency_ms": _counts_and_total(self.latency),
                "confidence": _counts_and_total(self.confidence),
                "predictions": dict(self.predictions),
                "shadow": self.shadow,
            },
            "compacted": True,
        }


def _stored_batches(bind: sa.Connection) -> Iterator[tuple[TelemetryBatch, bool]]:
    """Every stored raw batch analysis can use, and whether it was stored before revision 0006."""
    query = sa.select(record_table.c.payload, record_table.c.sketches).order_by(record_table.c.window_end)
    for payload, packed in bind.execute(query.execution_options(yield_per=1000)):
        try:
            if packed is not None:
                sketches = {n: base64.b64encode(raw).decode("ascii") for n, raw in _unpack(packed).items()}
                payload = {**payload, "feature_sketches": sketches}
            batch = TelemetryBatch.model_validate(payload)
            validate_batch(batch)
        except (ValidationError, ProtocolError):
            continue  # the readers skip it too
        yield batch, packed is None


def _aggregate_of_row(row: Any) -> TelemetryAggregate:
    agg = TelemetryAggregate(
        requests=row.requests,
        errors=row.errors,
        offloaded=row.offloaded,
        batches=row.batches,
        predictions=Counter(row.predictions or {}),
        shadow_compared=row.shadow_compared,
        shadow_agreed=row.shadow_agreed,
        window_start=row.window_start,
        window_end=row.window_end,
    )
    _add_histogram(agg.latency_ms, row.latency_ms)
    _add_histogram(agg.confidence, row.confidence)
    _add_histogram(agg.shadow_latency_ms, row.shadow_latency_ms)
    agg.sketches = {n: kll_floats_sketch.deserialize(raw) for n, raw in _unpack(row.sketches or b"").items()}
    return agg


def _aggregate_of_rollup(row: Any) -> TelemetryAggregate:
    agg = TelemetryAggregate(
        requests=row.requests,
        errors=row.errors,
        offloaded=row.offloaded,
        batches=row.batches,
        predictions=Counter(row.predictions or {}),
        shadow_compared=row.shadow_compared,
        shadow_agreed=row.shadow_agreed,
        window_start=row.window_start,
        window_end=row.window_start + row.window_s,  # the rollup kept no batch ends: its window's end
    )
    _add_histogram(agg.latency_ms, row.latency_ms)
    _add_histogram(agg.confidence, row.confidence)
    for name, text in (row.feature_sketches or {}).items():
        sketch = agg.sketches.get(name)
        if sketch is None:
            sketch = agg.sketches[name] = new_sketch(agg.k)
        sketch.merge(deserialize_sketch(text))
    return agg


def _columns(agg: TelemetryAggregate) -> dict[str, Any]:
    return {
        "window_end": agg.window_end,
        "batches": agg.batches,
        "requests": agg.requests,
        "errors": agg.errors,
        "offloaded": agg.offloaded,
        "shadow_compared": agg.shadow_compared,
        "shadow_agreed": agg.shadow_agreed,
        "latency_ms": _histogram_dict(agg.latency_ms),
        "confidence": _histogram_dict(agg.confidence),
        "shadow_latency_ms": _histogram_dict(agg.shadow_latency_ms),
        "predictions": dict(agg.predictions),
        "sketches": _pack({name: sk.serialize() for name, sk in sorted(agg.sketches.items())}),
    }


_STORED = (
    "window_start",
    "window_end",
    "batches",
    "requests",
    "errors",
    "offloaded",
    "shadow_compared",
    "shadow_agreed",
    "latency_ms",
    "confidence",
    "shadow_latency_ms",
    "predictions",
    "sketches",
)


def _key(row: Any) -> Key:
    return (row.model, row.version, row.target, row.window_start)


def upgrade() -> None:
    bind = op.get_bind()
    a = aggregate_table.c
    existing = {
        _key(row): (row.id, row.window_s, row.devices or [])
        for row in bind.execute(sa.select(a.id, a.model, a.version, a.target, a.window_start, a.window_s, a.devices))
    }
    rollups = list(bind.execute(sa.select(rollup_table)))
    lengths = Counter([w for _, w, _ in existing.values()] + [r.window_s for r in rollups])
    window_s = lengths.most_common(1)[0][0] if lengths else 3600.0

    sums: dict[tuple[Key, str], _DeviceSums] = {}
    partials: dict[Key, TelemetryAggregate] = {}  # what the aggregates lack: batches from before 0006, rollups
    for batch, unaggregated in _stored_batches(bind):
        key = (batch.model, batch.version, batch.target, (batch.window_start // window_s) * window_s)
        sums.setdefault((key, batch.device_id), _DeviceSums()).add(batch)
        if unaggregated:
            partials.setdefault(key, TelemetryAggregate()).add(batch)
    members: dict[Key, set[str]] = {key: set(devices) for key, (_, _, devices) in existing.items()}
    for rollup in rollups:
        key = _key(rollup)
        if key in existing:
            continue
        partials.setdefault(key, TelemetryAggregate()).merge(_aggregate_of_rollup(rollup))
        members.setdefault(key, set()).update(rollup.devices or [])
    for key, device_id in sums:
        members.setdefault(key, set()).add(device_id)

    op.create_table(
        "telemetry_device_window",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model", sa.String(length=128), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("target", sa.String(length=64), nullable=False),
        sa.Column("window_start", sa.Float(), nullable=False),
        sa.Column("device_id", sa.String(length=63), nullable=False),
        sa.Column("batches", sa.Integer(), nullable=False),
        sa.Column("requests", sa.Integer(), nullable=False),
        sa.Column("errors", sa.Integer(), nullable=False),
        sa.Column("first_start", sa.Float(), nullable=False),
        sa.Column("first_end", sa.Float(), nullable=False),
        sa.Column("last_end", sa.Float(), nullable=False),
        sa.Column("histograms", sa.JSON(), nullable=True),
        sa.Column("compacted", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_telemetry_device_window_model_window_start", "telemetry_device_window", ["model", "window_start"]
    )
    op.create_index("ix_telemetry_device_window_compacted", "telemetry_device_window", ["compacted"])
    with op.batch_alter_table("telemetry_window_aggregate") as batch_op:
        batch_op.drop_column("devices")
        batch_op.drop_index("ix_telemetry_window_aggregate_model")
        batch_op.create_index("ix_telemetry_window_aggregate_model_window_end", ["model", "window_end"])

    rows = []
    for key, devices in members.items():
        for device_id in sorted(devices):
            found = sums.get((key, device_id))
            if found is not None:
                rows.append(found.row(key, device_id))
                continue
            empty = _DeviceSums()  # contributed, batches since pruned: membership only
            empty.first_start = empty.first_end = key[3]
            empty.last_end = key[3] + window_s
            rows.append(empty.row(key, device_id))
    for first in range(0, len(rows), 1000):
        bind.execute(sa.insert(device_table), rows[first : first + 1000])

    for key, partial in partials.items():
        if key in existing:
            row_id = existing[key][0]
            stored = bind.execute(sa.select(*(a[name] for name in _STORED)).where(a.id == row_id)).one()
            merged = _aggregate_of_row(stored)
            merged.merge(partial)
            bind.execute(sa.update(aggregate_table).where(a.id == row_id).values(_columns(merged)))
        else:
            model, version, target, start = key
            values = {"model": model, "version": version, "target": target, "window_start": start}
            values |= {"window_s": window_s, "updated_at": time.time()} | _columns(partial)
            bind.execute(sa.insert(aggregate_table).values(values))

    op.drop_index("ix_telemetry_rollup_window_start", table_name="telemetry_rollup")
    op.drop_index("ix_telemetry_rollup_model", table_name="telemetry_rollup")
    op.drop_table("telemetry_rollup")


def downgrade() -> None:
    bind = op.get_bind()
    d = device_table.c
    members: dict[Key, set[str]] = {}
    for row in bind.execute(sa.select(d.model, d.version, d.target, d.window_start, d.device_id)):
        members.setdefault(_key(row), set()).add(row.device_id)
    op.create_table(
        "telemetry_rollup",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model", sa.String(length=128), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("target", sa.String(length=64), nullable=False),
        sa.Column("window_start", sa.Float(), nullable=False),
        sa.Column("window_s", sa.Float(), nullable=False),
        sa.Column("batches", sa.Integer(), nullable=False),
        sa.Column("requests", sa.Integer(), nullable=False),
        sa.Column("errors", sa.Integer(), nullable=False),
        sa.Column("offloaded", sa.Integer(), nullable=False),
        sa.Column("shadow_compared", sa.Integer(), nullable=False),
        sa.Column("shadow_agreed", sa.Integer(), nullable=False),
        sa.Column("latency_ms", sa.JSON(), nullable=True),
        sa.Column("confidence", sa.JSON(), nullable=True),
        sa.Column("predictions", sa.JSON(), nullable=True),
        sa.Column("feature_sketches", sa.JSON(), nullable=True),
        sa.Column("devices", sa.JSON(), nullable=True),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("model", "version", "target", "window_start"),
    )
    op.create_index("ix_telemetry_rollup_model", "telemetry_rollup", ["model"], unique=False)
    op.create_index("ix_telemetry_rollup_window_start", "telemetry_rollup", ["window_start"], unique=False)
    with op.batch_alter_table("telemetry_window_aggregate") as batch_op:
        batch_op.add_column(sa.Column("devices", sa.JSON(), nullable=True))
        batch_op.drop_index("ix_telemetry_window_aggregate_model_window_end")
        batch_op.create_index("ix_telemetry_window_aggregate_model", ["model"])
    a = aggregate_table.c
    for (model, version, target, start), devices in members.items():
        match = (a.model == model) & (a.version == version) & (a.target == target) & (a.window_start == start)
        bind.execute(sa.update(aggregate_table).where(match).values(devices=sorted(devices)))
    op.drop_index("ix_telemetry_device_window_compacted", table_name="telemetry_device_window")
    op.drop_index("ix_telemetry_device_window_model_window_start", table_name="telemetry_device_window")
    op.drop_table("telemetry_device_window")
