"""Telemetry summary tables.

- `TelemetryWindowAggregate`: every stored batch merged, at ingestion, into one row per model, version,
  device class (``target``) and time window; what drift reports read instead of every device's batch.
- `TelemetryRollup`: raw batches folded, once they leave the retention window, into the same grain (the
  audit trail of what pruning removed).

Histograms add, sketches merge, counts add, so a row answers the same questions as the batches in it, at a
bounded size. Sketches are stored as raw bytes (`pack_sketches`), not base64 JSON."""

from __future__ import annotations

import contextlib
import struct
import time
from collections import Counter
from collections.abc import Mapping
from typing import Any

from datasketches import kll_floats_sketch
from sqlalchemy import JSON, Column, LargeBinary, UniqueConstraint
from sqlmodel import Field, SQLModel

from fleet.errors import ProtocolError
from fleet.telemetry import TelemetryAggregate
from fleet.wire.messages import Histogram, TelemetryBatch
from fleet.wire.sketches import HistogramAccumulator, deserialize_sketch, serialize_sketch

_ENTRY_HEADER = struct.Struct("<HI")


def _now() -> float:
    return time.time()


class TelemetryRollup(SQLModel, table=True):
    """Sum of the pruned telemetry batches of one model version and device class in one time window.

    ``latency_ms`` and ``confidence`` are `fleet.wire.messages.Histogram` dicts (or empty), ``feature_sketches``
    base64 KLL sketches as in a batch, ``devices`` the distinct device ids that contributed.
    """

    __tablename__ = "telemetry_rollup"
    __table_args__ = (UniqueConstraint("model", "version", "target", "window_start"),)
    id: int | None = Field(default=None, primary_key=True)
    model: str = Field(max_length=128, index=True)
    version: str = Field(max_length=64)
    target: str = Field(max_length=64)
    window_start: float = Field(index=True)
    window_s: float
    batches: int = 0
    requests: int = 0
    errors: int = 0
    offloaded: int = 0
    shadow_compared: int = 0
    shadow_agreed: int = 0
    latency_ms: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    confidence: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    predictions: dict[str, int] = Field(default_factory=dict, sa_column=Column(JSON))
    feature_sketches: dict[str, str] = Field(default_factory=dict, sa_column=Column(JSON))
    devices: list[str] = Field(default_factory=list, sa_column=Column(JSON))
    updated_at: float = Field(default_factory=_now)


def rollup_window_start(window_start: float, window_s: float) -> float:
    """Start of the rollup window a batch falls in (windows are aligned to the epoch)."""
    return (window_start // window_s) * window_s


def fold_batches(row: TelemetryRollup, batches: list[TelemetryBatch]) -> TelemetryRollup:
    """Add ``batches`` (all of the row's model, version, target and window) to ``row`` in place.

    A histogram whose edges differ from the row's is left out of the histogram (its counts still add):
    batches were validated at ingestion, so this happens only when a device changed its bucket edges.
    """
    latency, confidence = HistogramAccumulator(), HistogramAccumulator()
    for acc, stored in ((latency, row.latency_ms), (confidence, row.confidence)):
        if stored:
            acc.add(Histogram.model_validate(stored))
    sketches = {name: deserialize_sketch(text) for name, text in row.feature_sketches.items()}
    predictions = dict(row.predictions)
    devices = set(row.devices)
    for batch in batches:
        for acc, hist in ((latency, batch.latency_ms), (confidence, batch.confidence)):
            with contextlib.suppress(ProtocolError):
                acc.add(hist)
        for name, text in batch.feature_sketches.items():
            try:
                sketch = deserialize_sketch(text)
            except ProtocolError:
                continue
            if name in sketches:
                sketches[name].merge(sketch)
            else:
                sketches[name] = sketch
        for label, count in batch.predictions.items():
            predictions[label] = predictions.get(label, 0) + count
        row.batches += 1
        row.requests += batch.requests
        row.errors += batch.errors
        row.offloaded += batch.offloaded
        if batch.shadow is not None:
            row.shadow_compared += batch.shadow.compared
            row.shadow_agreed += batch.shadow.agreed
        devices.add(batch.device_id)
    row.latency_ms = latency.to_histogram().model_dump(mode="json") if latency.edges else {}
    row.confidence = confidence.to_histogram().model_dump(mode="json") if confidence.edges else {}
    row.feature_sketches = {name: serialize_sketch(sk) for name, sk in sorted(sketches.items())}
    row.predictions = predictions
    row.devices = sorted(devices)
    row.updated_at = time.time()
    return row


def pack_sketches(sketches: Mapping[str, bytes]) -> bytes:
    """Named raw sketches as one byte string: per entry, name length (u16), bytes length (u32), name, bytes."""
    parts: list[bytes] = []
    for name, raw in sketches.items():
        encoded = name.encode()
        parts += [_ENTRY_HEADER.pack(len(encoded), len(raw)), encoded, raw]
    return b"".join(parts)


def unpack_sketches(packed: bytes) -> dict[str, bytes]:
    """Inverse of `pack_sketches`; `ProtocolError` when the bytes are truncated."""
    out: dict[str, bytes] = {}
    at = 0
    while at < len(packed):
        if at + _ENTRY_HEADER.size > len(packed):
            raise ProtocolError("truncated packed sketches")
        name_len, raw_len = _ENTRY_HEADER.unpack_from(packed, at)
        at += _ENTRY_HEADER.size
        end = at + name_len + raw_len
        if end > len(packed):
            raise ProtocolError("truncated packed sketches")
        out[packed[at : at + name_len].decode()] = packed[at + name_len : end]
        at = end
    return out


class TelemetryWindowAggregate(SQLModel, table=True):
    """Every stored batch of one model version and device class in one time window, merged at ingestion.

    ``sketches`` holds the merged KLL sketches (`pack_sketches`); histograms are `Histogram` dicts (or empty).
    """

    __tablename__ = "telemetry_window_aggregate"
    __table_args__ = (UniqueConstraint("model", "version", "target", "window_start"),)
    id: int | None = Field(default=None, primary_key=True)
    model: str = Field(max_length=128, index=True)
    version: str = Field(max_length=64)
    target: str = Field(max_length=64)
    window_start: float
    window_s: float
    window_end: float = 0.0
    """Latest end of a batch window merged in."""
    batches: int = 0
    requests: int = 0
    errors: int = 0
    offloaded: int = 0
    shadow_compared: int = 0
    shadow_agreed: int = 0
    latency_ms: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    confidence: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    shadow_latency_ms: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    predictions: dict[str, int] = Field(default_factory=dict, sa_column=Column(JSON))
    sketches: bytes = Field(default=b"", sa_column=Column(LargeBinary, nullable=False))
    devices: list[str] = Field(default_factory=list, sa_column=Column(JSON))
    updated_at: float = Field(default_factory=_now)


def _histogram_dict(acc: HistogramAccumulator) -> dict[str, Any]:
    return acc.to_histogram().model_dump(mode="json") if acc.edges else {}


def window_aggregate(row: TelemetryWindowAggregate) -> TelemetryAggregate:
    """The row as a `fleet.telemetry.TelemetryAggregate` (what drift analysis takes)."""
    agg = TelemetryAggregate(
        requests=row.requests,
        errors=row.errors,
        offloaded=row.offloaded,
        batches=row.batches,
        predictions=Counter(row.predictions),
        shadow_compared=row.shadow_compared,
        shadow_agreed=row.shadow_agreed,
        devices=set(row.devices),
        targets={row.target},
        window_start=row.window_start,
        window_end=row.window_end,
    )
    for acc, stored in (
        (agg.latency_ms, row.latency_ms),
        (agg.confidence, row.confidence),
        (agg.shadow_latency_ms, row.shadow_latency_ms),
    ):
        if stored:
            acc.add(Histogram.model_validate(stored))
    agg.sketches = {name: kll_floats_sketch.deserialize(raw) for name, raw in unpack_sketches(row.sketches).items()}
    return agg


def fold_aggregate(row: TelemetryWindowAggregate, partial: TelemetryAggregate) -> TelemetryWindowAggregate:
    """Merge ``partial`` (batches of the row's model, version, target and window) into ``row`` in place."""
    merged = window_aggregate(row)
    merged.merge(partial)
    row.batches, row.requests, row.errors, row.offloaded = (
        merged.batches,
        merged.requests,
        merged.errors,
        merged.offloaded,
    )
    row.shadow_compared, row.shadow_agreed = merged.shadow_compared, merged.shadow_agreed
    row.window_end = max(row.window_end, partial.window_end)
    row.latency_ms = _histogram_dict(merged.latency_ms)
    row.confidence = _histogram_dict(merged.confidence)
    row.shadow_latency_ms = _histogram_dict(merged.shadow_latency_ms)
    row.predictions = dict(merged.predictions)
    row.sketches = pack_sketches({name: sk.serialize() for name, sk in sorted(merged.sketches.items())})
    row.devices = sorted(merged.devices)
    row.updated_at = time.time()
    return row
