"""The input of the analysis: one device's telemetry summed over the window, built from its batches."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from fleet.telemetry import TelemetryAggregate
from fleet.wire.messages import Histogram, TelemetryBatch
from fleet.wire.sketches import serialize_sketch


class DeviceMetrics(BaseModel):
    """One device's telemetry summed over the analysis window: the input of `analyse_canary`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    device_id: str
    device_class: str
    requests: Annotated[int, Field(ge=0)] = 0
    errors: Annotated[int, Field(ge=0)] = 0
    latency_ms: Histogram | None = None
    confidence: Histogram | None = None
    predictions: dict[str, Annotated[int, Field(ge=0)]] = Field(default_factory=dict)
    shadow_compared: Annotated[int, Field(ge=0)] = 0
    shadow_agreed: Annotated[int, Field(ge=0)] = 0
    feature_sketches: dict[str, str] = Field(default_factory=dict)
    window_start: float | None = None
    window_end: float | None = None

    @model_validator(mode="after")
    def _check(self) -> DeviceMetrics:
        if self.errors > self.requests:
            raise ValueError("errors exceed requests")
        if self.shadow_agreed > self.shadow_compared:
            raise ValueError("shadow_agreed exceeds shadow_compared")
        return self

    @classmethod
    def from_aggregate(
        cls, device_id: str, aggregate: TelemetryAggregate, device_class: str | None = None
    ) -> DeviceMetrics:
        """Metrics of one device from its aggregated batches."""
        return cls(
            device_id=device_id,
            device_class=device_class or ",".join(sorted(aggregate.targets)) or "unknown",
            requests=aggregate.requests,
            errors=aggregate.errors,
            latency_ms=aggregate.latency_histogram(),
            confidence=aggregate.confidence_histogram(),
            predictions=dict(aggregate.predictions),
            shadow_compared=aggregate.shadow_compared,
            shadow_agreed=aggregate.shadow_agreed,
            feature_sketches={name: serialize_sketch(sk) for name, sk in aggregate.sketches.items()},
            window_start=aggregate.window_start if math.isfinite(aggregate.window_start) else None,
            window_end=aggregate.window_end if math.isfinite(aggregate.window_end) else None,
        )


SketchPool = Callable[[Sequence["DeviceMetrics"]], TelemetryAggregate]
"""One group's feature sketches pooled over the given devices, with the ids of the devices pooled: for
telemetry kept as sketches merged per cohort and window rather than per device (the hub's window aggregates)."""


def device_metrics(batches: Iterable[TelemetryBatch], *, shadow_candidate: str | None = None) -> list[DeviceMetrics]:
    """Per-device metrics from telemetry batches (one entry per device id, sorted). With
    ``shadow_candidate``, only shadow statistics of that candidate version count."""
    per_device: dict[str, TelemetryAggregate] = {}
    for batch in batches:
        shadow = batch.shadow
        if shadow_candidate is not None and shadow is not None and shadow.candidate_version != shadow_candidate:
            batch = batch.model_copy(update={"shadow": None})
        agg = per_device.get(batch.device_id)
        if agg is None:
            agg = per_device[batch.device_id] = TelemetryAggregate()
        agg.add(batch)
    return [DeviceMetrics.from_aggregate(d, per_device[d]) for d in sorted(per_device)]
