"""Fleet-level telemetry the hub reads: batch validation, aggregates of many batches, reference profiles.

- `validate_batch` checks what the message schema cannot, so one corrupt batch never reaches a report.
- `TelemetryAggregate` merges many `TelemetryBatch` (one device, one cohort, one rollout group) into one.
- `ReferenceProfile` is the same telemetry computed on a model version's reference data (shipped with the
  bundle or stored by the hub): what drift is measured against.

The per-device building blocks (histograms, KLL sketches) live in `fleet.wire.sketches`.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from datasketches import kll_floats_sketch
from pydantic import BaseModel, ConfigDict, Field

from fleet.errors import ProtocolError
from fleet.wire.messages import Histogram, TelemetryBatch
from fleet.wire.sketches import (
    CONFIDENCE_BUCKETS,
    DEFAULT_SKETCH_K,
    LATENCY_BUCKETS_MS,
    HistogramAccumulator,
    check_standard_edges,
    deserialize_sketch,
    new_sketch,
    serialize_sketch,
    sketch_from_values,
)

__all__ = ["ReferenceProfile", "TelemetryAggregate", "validate_batch"]


# ----------------------------------------------------------------------------------------------- aggregate


def validate_batch(batch: TelemetryBatch) -> None:
    """Check what the schema cannot (it already refuses non-finite numbers and oversized fields): the standard
    histogram edges and shapes, consistent counts and time window, and every feature sketch's bytes. The hub
    calls this at ingestion and before analysis, so one corrupt batch never reaches (and breaks) a report."""
    where = f"batch {batch.batch_id}"
    try:
        check_standard_edges(batch.latency_ms, LATENCY_BUCKETS_MS, "latency")
        check_standard_edges(batch.confidence, CONFIDENCE_BUCKETS, "confidence")
        if batch.shadow is not None:
            check_standard_edges(batch.shadow.latency_ms, LATENCY_BUCKETS_MS, "shadow latency")
    except ProtocolError as exc:
        raise ProtocolError(f"{where}: {exc}") from exc
    if batch.errors > batch.requests or batch.offloaded > batch.requests:
        raise ProtocolError(f"{where} has more errors or offloaded requests than requests")
    if batch.shadow is not None and batch.shadow.agreed > batch.shadow.compared:
        raise ProtocolError(f"{where} has more shadow agreements than comparisons")
    if batch.window_end < batch.window_start:
        raise ProtocolError(f"{where} ends before it starts")
    for name, text in batch.feature_sketches.items():
        try:
            deserialize_sketch(text)
        except ProtocolError as exc:
            raise ProtocolError(f"{where}, feature {name!r}: {exc}") from exc


@dataclass
class TelemetryAggregate:
    """Sum of many telemetry batches: the unit drift and canary analysis work on.

    Histograms and counts add, sketches merge; ``devices`` remembers who contributed.
    """

    k: int = DEFAULT_SKETCH_K
    requests: int = 0
    errors: int = 0
    offloaded: int = 0
    batches: int = 0
    latency_ms: HistogramAccumulator = field(default_factory=HistogramAccumulator)
    confidence: HistogramAccumulator = field(default_factory=HistogramAccumulator)
    predictions: Counter[str] = field(default_factory=Counter)
    sketches: dict[str, kll_floats_sketch] = field(default_factory=dict)
    shadow_compared: int = 0
    shadow_agreed: int = 0
    shadow_latency_ms: HistogramAccumulator = field(default_factory=HistogramAccumulator)
    devices: set[str] = field(default_factory=set)
    targets: set[str] = field(default_factory=set)
    window_start: float = math.inf
    window_end: float = -math.inf

    def add(self, batch: TelemetryBatch) -> None:
        """Fold one batch in; a corrupt sketch or mismatched histogram raises `ProtocolError`."""
        parsed = {name: deserialize_sketch(text) for name, text in batch.feature_sketches.items()}
        self.latency_ms.add(batch.latency_ms)
        self.confidence.add(batch.confidence)
        self.requests += batch.requests
        self.errors += batch.errors
        self.offloaded += batch.offloaded
        self.batches += 1
        self.predictions.update(batch.predictions)
        for name, sk in parsed.items():
            self._merge_sketch(name, sk)
        if batch.shadow is not None:
            self.shadow_compared += batch.shadow.compared
            self.shadow_agreed += batch.shadow.agreed
            self.shadow_latency_ms.add(batch.shadow.latency_ms)
        self.devices.add(batch.device_id)
        self.targets.add(batch.target)
        self.window_start = min(self.window_start, batch.window_start)
        self.window_end = max(self.window_end, batch.window_end)

    def _merge_sketch(self, name: str, sk: kll_floats_sketch) -> None:
        mine = self.sketches.get(name)
        if mine is None:
            mine = self.sketches[name] = new_sketch(self.k)
        mine.merge(sk)

    def merge(self, other: TelemetryAggregate) -> None:
        """Fold another aggregate in."""
        self.latency_ms.merge(other.latency_ms)
        self.confidence.merge(other.confidence)
        self.shadow_latency_ms.merge(other.shadow_latency_ms)
        self.requests += other.requests
        self.errors += other.errors
        self.offloaded += other.offloaded
        self.batches += other.batches
        self.predictions.update(other.predictions)
        for name, sk in other.sketches.items():
            self._merge_sketch(name, sk)
        self.shadow_compared += other.shadow_compared
        self.shadow_agreed += other.shadow_agreed
        self.devices |= other.devices
        self.targets |= other.targets
        self.window_start = min(self.window_start, other.window_start)
        self.window_end = max(self.window_end, other.window_end)

    @classmethod
    def from_batches(cls, batches: Iterable[TelemetryBatch], k: int = DEFAULT_SKETCH_K) -> TelemetryAggregate:
        """Aggregate of ``batches``."""
        agg = cls(k=k)
        for b in batches:
            agg.add(b)
        return agg

    def latency_histogram(self) -> Histogram | None:
        """Merged latency histogram, or ``None`` when no batch carried one."""
        return self.latency_ms.to_histogram() if self.latency_ms.edges else None

    def confidence_histogram(self) -> Histogram | None:
        """Merged confidence histogram, or ``None`` when no batch carried one."""
        return self.confidence.to_histogram() if self.confidence.edges else None


class ReferenceProfile(BaseModel):
    """Telemetry of a model version's reference data, the baseline for drift.

    Built once from the reference (training or validation) data with `ReferenceProfile.from_arrays`, stored
    as JSON beside the bundle; ``feature_kinds`` declares categorical features (codes sketched as floats).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = 1
    feature_sketches: dict[str, str] = Field(default_factory=dict)
    feature_kinds: dict[str, Literal["numerical", "categorical"]] = Field(default_factory=dict)
    predictions: dict[str, int] = Field(default_factory=dict)
    confidence: Histogram | None = None

    @classmethod
    def from_arrays(
        cls,
        features: Mapping[str, Iterable[float] | np.ndarray],
        *,
        predictions: Iterable[str] | None = None,
        confidences: Iterable[float] | np.ndarray | None = None,
        categorical: Iterable[str] = (),
        k: int = DEFAULT_SKETCH_K,
    ) -> ReferenceProfile:
        """Profile of raw reference data: one sketch per feature, prediction counts, confidence histogram."""
        kinds: dict[str, Literal["numerical", "categorical"]] = {name: "categorical" for name in categorical}
        confidence = None
        if confidences is not None:
            acc = HistogramAccumulator(CONFIDENCE_BUCKETS)
            acc.observe_many(np.asarray(list(confidences) if not isinstance(confidences, np.ndarray) else confidences))
            confidence = acc.to_histogram()
        return cls(
            feature_sketches={name: serialize_sketch(sketch_from_values(v, k)) for name, v in features.items()},
            feature_kinds=kinds,
            predictions=dict(Counter(predictions or ())),
            confidence=confidence,
        )

    def to_aggregate(self, k: int = DEFAULT_SKETCH_K) -> TelemetryAggregate:
        """The profile as an aggregate, to compare against live telemetry."""
        agg = TelemetryAggregate(k=k)
        for name, text in self.feature_sketches.items():
            agg._merge_sketch(name, deserialize_sketch(text))
        agg.predictions.update(self.predictions)
        if self.confidence is not None:
            agg.confidence.add(self.confidence)
        return agg
