"""Telemetry summary tables, both written at ingestion in the transaction that stores the batches.

- `TelemetryWindowAggregate`: every stored batch merged into one row per model, version, device class
  (``target``) and time window; what drift reports and the canary's input drift read instead of every
  device's batch. Histograms add, sketches merge, counts add, so a row answers the same questions as the
  batches in it, at a bounded size: which devices contributed is in `TelemetryDeviceWindow`, not in the row.
  Sketches are stored as raw bytes (`pack_sketches`), not base64 JSON.
- `TelemetryDeviceWindow`: one narrow row per device in each of those windows (counts, latency and
  confidence histograms, predictions, shadow counts per candidate; no sketches), what canary analysis needs
  of each device (`hub.registry.device_windows`).

Both outlive the raw batches (`Registry.prune_telemetry`), so reports cover more than the raw retention."""

from __future__ import annotations

import struct
import time
from collections import Counter
from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any, TypeVar

from datasketches import kll_floats_sketch
from sqlalchemy import JSON, Column, Index, LargeBinary, UniqueConstraint
from sqlmodel import Field, SQLModel

from fleet.errors import ProtocolError
from fleet.telemetry import TelemetryAggregate
from fleet.wire.messages import Histogram
from fleet.wire.sketches import HistogramAccumulator

_ENTRY_HEADER = struct.Struct("<HI")


def _now() -> float:
    return time.time()


def rollup_window_start(window_start: float, window_s: float) -> float:
    """Start of the aggregate window a batch falls in (windows are aligned to the epoch)."""
    return (window_start // window_s) * window_s


UNLABELLED_WINDOW = "*"
"""The ``cohort`` of a marker row beside each window stored before label rows were kept (migration 0012): the
window's label rows, if any, miss the batches stored before."""


def label_cohort(key: str, value: str) -> str:
    """The ``cohort`` of the aggregate rows of devices labelled ``key=value``."""
    return f"{key}={value}"


def pack_sketches(sketches: Mapping[str, bytes]) -> bytes:
    """Named raw sketches as one byte string: per entry, name length (u16), bytes length (u32), name, bytes."""
    pack = _ENTRY_HEADER.pack
    return b"".join(
        [
            part
            for name, raw in sketches.items()
            for encoded in (name.encode(),)
            for part in (pack(len(encoded), len(raw)), encoded, raw)
        ]
    )


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
    """Stored batches of one model version and device class in one time window, merged at ingestion by one
    writer (``shard``: "" for a lone hub; each worker sharing telemetry has its own, so workers never wait
    on each other's rows). A window's rows add up to all its batches: readers (`TelemetryWindows`) merge every
    row they read.

    ``cohort`` is "" for the row of every batch; ``"key=value"`` for the row of the batches from devices that
    carried that label when the batch was stored (each labelled batch is in its target row and in one row per
    label of its device; `label_cohort`); `UNLABELLED_WINDOW` marks windows stored before label rows were kept.

    ``sketches`` holds the merged KLL sketches (`pack_sketches`); histograms are `Histogram` dicts (or empty).
    """

    __tablename__ = "telemetry_window_aggregate"
    __table_args__ = (
        UniqueConstraint(
            "model",
            "version",
            "target",
            "window_start",
            "shard",
            "cohort",
            name="uq_telemetry_window_aggregate_cohort",
        ),
        Index("ix_telemetry_window_aggregate_model_window_end", "model", "window_end"),
    )
    id: int | None = Field(default=None, primary_key=True)
    model: str = Field(max_length=128)
    version: str = Field(max_length=64)
    target: str = Field(max_length=64)
    window_start: float
    window_s: float
    shard: str = Field(default="", max_length=64)
    cohort: str = Field(default="", max_length=255)
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
    updated_at: float = Field(default_factory=_now)


class TelemetryDeviceWindow(SQLModel, table=True):
    """Batches of one device, model version and aggregate window, summed (no sketches).

    A device and window may have several rows (one per ingestion write, ``compacted`` False, until
    `hub.registry.device_windows.compact_device_windows` merges them): readers sum them. ``shadow`` maps each
    shadowed candidate version to ``[compared, agreed]``. A row with ``batches`` 0 only records that the
    device contributed (rows rebuilt by migration 0007 from windows whose batches were pruned).
    """

    __tablename__ = "telemetry_device_window"
    __table_args__ = (
        Index("ix_telemetry_device_window_model_window_start", "model", "window_start"),
        Index("ix_telemetry_device_window_compacted", "compacted"),
    )
    id: int | None = Field(default=None, primary_key=True)
    model: str = Field(max_length=128)
    version: str = Field(max_length=64)
    target: str = Field(max_length=64)
    window_start: float
    device_id: str = Field(max_length=63)
    batches: int = 0
    requests: int = 0
    errors: int = 0
    first_start: float = 0.0
    """Earliest start of a batch window summed in."""
    first_end: float = 0.0
    """Earliest end of a batch window summed in."""
    last_end: float = 0.0
    """Latest end of a batch window summed in."""
    histograms: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    """``latency_ms`` and ``confidence`` (``[counts, total]`` on the standard edges, or empty), ``predictions``,
    ``shadow`` and, when inputs were checked against a data contract, ``contract`` (``[rows, {rule: count}]``),
    in one JSON value: thousands of rows are written per second, and JSON is most of a row's cost."""
    compacted: bool = False


def _histogram_dict(acc: HistogramAccumulator) -> dict[str, Any]:
    return acc.to_histogram().model_dump(mode="json") if acc.edges else {}


_Row = TypeVar("_Row", TelemetryWindowAggregate, SimpleNamespace)


def window_aggregate(row: TelemetryWindowAggregate | SimpleNamespace) -> TelemetryAggregate:
    """The row as a `fleet.telemetry.TelemetryAggregate` (what drift analysis takes); ``devices`` is left
    empty, the ids are in the window's `TelemetryDeviceWindow` rows."""
    agg = TelemetryAggregate(
        requests=row.requests,
        errors=row.errors,
        offloaded=row.offloaded,
        batches=row.batches,
        predictions=Counter(row.predictions),
        shadow_compared=row.shadow_compared,
        shadow_agreed=row.shadow_agreed,
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


def store_merged(row: _Row, merged: TelemetryAggregate, partial: TelemetryAggregate) -> _Row:
    """Set ``row``'s columns to ``merged``: the row's aggregate (`window_aggregate`) with ``partial`` (batches of
    the row's model, version, target and window) merged in; ``row`` is a `TelemetryWindowAggregate`, or any
    object with its columns as attributes (the writer's plain namespace)."""
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
    row.updated_at = time.time()
    return row
