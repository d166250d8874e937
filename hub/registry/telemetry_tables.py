"""Telemetry rollup table: raw batches folded, once they leave the retention window, into one row per
model, version, device class (``target``) and time window. Histograms add, sketches merge, counts add,
so the rollup answers the same questions as the raw batches it replaced, at a bounded size."""

from __future__ import annotations

import contextlib
import time
from typing import Any

from sqlalchemy import JSON, Column, UniqueConstraint
from sqlmodel import Field, SQLModel

from fleet.errors import ProtocolError
from fleet.wire.messages import Histogram, TelemetryBatch
from fleet.wire.sketches import HistogramAccumulator, deserialize_sketch, serialize_sketch


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
